"""ferlib: facial emotion recognition on FER+.

    from ferlib import EmotionRecognizer
    faces = EmotionRecognizer().detect_emotions("photo.jpg")

Modules: recognizer (``EmotionRecognizer``, the one-call API), data (FER+ splits, label modes, Dataset), transforms,
generate (the FER+ folders from the CSVs), synthetic (made-up CSVs for smoke runs), models, train, tune, evaluate,
export (ONNX twins of a model), engine (ONNX Runtime or PyTorch inference), plots, faces (detection and alignment;
face_search is its background search's worker process), aligned_data (the face-aligned training set), pack (the
FER+ folders packed for another machine), video (frame sources, the live pipeline and the frame loop behind
video_application.py), distributed (devices and torchrun process groups), experiments (the enhancement runs), measure
(detector and video measurements shared by benchmarks and notebooks), notebook (the notebooks' setup), files
(writing results whole or not at all).
"""

__all__ = ["CLASS_NAMES", "LABEL_MODES", "EmotionRecognizer", "FaceEmotion", "FerPlusDataset", "FerPlusSplit",
           "load_dataset", "load_split"]


def __getattr__(name: str):
    # imported when asked for, so that a module which needs neither PyTorch nor the detectors (the background face
    # search's worker, ferlib.face_search) starts without them
    if name in ("EmotionRecognizer", "FaceEmotion"):
        from ferlib import recognizer
        return getattr(recognizer, name)
    if name in __all__:
        from ferlib import data
        return getattr(data, name)
    raise AttributeError(f"module 'ferlib' has no attribute {name!r}")
