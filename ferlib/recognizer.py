"""One call from a photo, a face or a video to emotions: ``EmotionRecognizer``, the public API over ``ferlib.faces``
(detection and alignment), ``ferlib.engine`` (the network in ONNX Runtime or PyTorch) and ``ferlib.video`` (frame
sources, tracking, smoothing).

    from ferlib import EmotionRecognizer
    recognizer = EmotionRecognizer()                      # default shipped model, fastest engine, default detector
    for face in recognizer.detect_emotions("group.jpg"):  # a path, a numpy image (gray, BGR, BGRA) or a PIL image
        print(face.box, face.label, face.top(3))
    probabilities = recognizer.classify_faces(crops)      # faces already cropped: (N, 8), in CLASS_NAMES order
    table = recognizer.analyze_video("clip.mp4")          # pandas DataFrame, one row per face per frame

Wrong input (type, shape, dtype, channels, an unreadable file) raises ``ValueError`` saying what was expected.
"""
from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ferlib.data import CLASS_NAMES
from ferlib.faces import THREADS_AUTO, as_bgr, as_gray, check_threads
from ferlib.video import (LOG_COLUMNS, ROTATIONS, EmotionPipeline, SourceError, as_engine, check_detector,
                          check_rotation, cut_short, log_records, open_source, pil_to_bgr, process_frames, read_image,
                          rotated_source, turned_clockwise)

MIN_FACE_SIDE = 8  # pixels: below this a crop holds no expression to read


@dataclass(frozen=True)
class FaceEmotion:
    """One face in a photo: ``box`` (x, y, w, h) in the image's pixels, the detector's ``score``, the most probable
    emotion and the probability of each of the 8 FER+ classes (summing to 1). ``rotation``: the degrees (0, 90, 180
    or 270, clockwise) the image was turned for the face to be read upright (``detect_emotions(try_rotations=True)``;
    otherwise 0)."""
    box: tuple[int, int, int, int]
    label: str
    probabilities: dict[str, float]
    score: float
    rotation: int = 0

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        """The k most probable emotions, most probable first."""
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"k {k!r}: expected a whole number, 1 or more")
        return sorted(self.probabilities.items(), key=lambda item: -item[1])[:k]


def as_image(image, what: str = "image") -> np.ndarray:
    """A path, PIL image or numpy array as a uint8 numpy image (gray, BGR or BGRA); ValueError if it is none."""
    if isinstance(image, (str, Path)):
        try:
            return read_image(image)
        except SourceError as error:  # a ValueError; named as the caller names the image
            raise SourceError(f"{what}: {error}" if what != "image" else str(error)) from None
    if type(image).__module__.startswith("PIL."):
        return pil_to_bgr(image)
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{what}: expected a file path, a numpy array or a PIL image, got {type(image).__name__}")
    if image.dtype != np.uint8:
        hint = (" (floats in [0, 1]: (image * 255).round().astype(np.uint8); floats in 0-255: "
                "image.round().clip(0, 255).astype(np.uint8))") if image.dtype.kind == "f" else ""
        if image.dtype == np.uint16:  # 16-bit PNGs and TIFFs read by OpenCV or imageio
            hint = " (16-bit: (image // 257).astype(np.uint8))"
        raise ValueError(f"{what}: expected a uint8 array with values 0-255, got dtype {image.dtype}{hint}")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4))):
        raise ValueError(f"{what}: expected shape (H, W) gray, (H, W, 3) BGR or (H, W, 4) BGRA, got {image.shape}")
    if min(image.shape[:2]) < 1:
        raise ValueError(f"{what}: the image is empty ({image.shape})")
    return image


def box_before_rotation(box: tuple[int, int, int, int], rotation: int, width: int,
                        height: int) -> tuple[int, int, int, int]:
    """A box (x, y, w, h) found in an image turned ``rotation`` degrees clockwise (0, 90, 180 or 270), in the
    pixels of the ``width`` x ``height`` image before it was turned."""
    x, y, w, h = box
    if rotation == 90:  # the turned image's columns are the original's rows, from the bottom up
        return y, height - x - w, h, w
    if rotation == 180:
        return width - x - w, height - y - h, w, h
    if rotation == 270:
        return width - y - h, x, h, w
    return box


def face_crops(faces) -> np.ndarray:
    """Already-cropped faces as the network's input, uint8 (N, 48, 48) gray. ``faces`` is one face ((H, W),
    (H, W, 3) or (H, W, 4) uint8, or a PIL image), a list of them (any sizes), or a stacked array (N, H, W) /
    (N, H, W, C)."""
    if isinstance(faces, np.ndarray):
        if faces.ndim == 2 or (faces.ndim == 3 and faces.shape[2] in (1, 3, 4)):
            faces = [faces]
        elif faces.ndim in (3, 4):
            faces = list(faces)
        else:
            raise ValueError(f"faces: expected one face (H, W) / (H, W, C) or a stack (N, H, W) / (N, H, W, C), "
                             f"got shape {faces.shape}")
    elif isinstance(faces, (str, Path)) or type(faces).__module__.startswith("PIL."):
        faces = [faces]
    elif not isinstance(faces, (list, tuple)):
        raise ValueError(f"faces: expected a face image, a list of them or a stacked numpy array, "
                         f"got {type(faces).__name__}")
    crops = np.zeros((len(faces), 48, 48), np.uint8)
    for i, face in enumerate(faces):
        image = as_image(face, f"face {i}")
        if min(image.shape[:2]) < MIN_FACE_SIDE:
            raise ValueError(f"face {i}: {image.shape[1]}x{image.shape[0]} pixels; expected at least "
                             f"{MIN_FACE_SIDE}x{MIN_FACE_SIDE}")
        gray = as_gray(as_bgr(image))
        shrinking = gray.shape[0] > 48 or gray.shape[1] > 48
        crops[i] = cv2.resize(gray, (48, 48), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)
    return crops


class EmotionRecognizer:
    """Faces and their emotions in photos, face crops and videos.

    ``model``: None for the default shipped model (``ferplus_cnn_robust``), a shipped model's name
    (``"ferplus_cnn_fast"``: a quarter of the work per face, 0.9 points less accurate; see README), a
    ``.safetensors`` / ``.onnx`` file, or a list of these: an ensemble that answers the mean of its members'
    probabilities (each member's work per face added up; see README's ensembles). ``engine``: "auto"
    (ONNX Runtime's int8 twin when onnxruntime is installed, PyTorch otherwise), "onnx" or "torch". ``threads``: CPU
    threads for the network (1 keeps a live pipeline fast when other programs share the CPU; 2 or more speed up
    large batches). ``detector_threads``: YuNet's threads for a photo's search ("auto", the default: every core
    on an idle machine, the fastest there, and one where other programs keep a core busy, where several threads wait
    on each other; a number; None: the process's setting). ``detector``: "auto" (faces of every size; see
    ``ferlib.faces.FaceFinder``) or a name from ``ferlib.faces.DETECTOR_NAMES``. ``min_face`` drops faces narrower
    than that many pixels, ``min_score`` overrides the detector's score threshold, ``smoothing`` is the weight of the
    past in a video face's moving average.
    ``tta=True`` averages each face's answer with its mirror image's (flip test-time augmentation: a little more
    accurate, twice the network's work).
    """

    def __init__(self, model=None, engine: str = "auto", detector: str = "auto", threads: int | None = 1,
                 min_face: int = 0, min_score: float | None = None, smoothing: float = 0.6, tta: bool = False,
                 detector_threads: int | str | None = THREADS_AUTO):
        if isinstance(min_face, bool) or not isinstance(min_face, int) or min_face < 0:
            raise ValueError(f"min_face {min_face!r}: expected a whole number of pixels, 0 or more")
        if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) or not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing {smoothing!r}: expected a number in [0, 1) (0: no smoothing)")
        if not isinstance(tta, bool):
            raise ValueError(f"tta {tta!r}: expected True or False")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads {threads!r}: expected a whole number, 1 or more (or None: the process's "
                             "setting)")
        check_threads(detector_threads, "detector_threads")
        if min_score is not None and (isinstance(min_score, bool) or not isinstance(min_score, (int, float))
                                      or not 0.0 <= min_score <= 1.0):
            raise ValueError(f"min_score {min_score!r}: expected a detector score in [0, 1], or None for the "
                             "detector's own threshold")
        check_detector(detector)
        self.engine = as_engine(model, engine, threads)
        if tta:
            from ferlib.engine import FlipAveragedEngine

            self.engine = FlipAveragedEngine(self.engine)
        self.detector_name, self.detector_threads = detector, detector_threads
        self.min_face, self.min_score, self.smoothing = min_face, min_score, smoothing
        self._photos = None  # the photo pipeline, made on first use (loading a detector takes a moment)

    def __repr__(self) -> str:
        return f"EmotionRecognizer(engine={self.engine.name!r}, detector={self.detector_name!r})"

    def pipeline(self, video: bool, largest_face: bool = False) -> EmotionPipeline:
        """A detect -> align -> classify pipeline over this recognizer's network, one frame per call: for video
        (faces followed and smoothed) or for photos (every image on its own); ``largest_face`` keeps one face."""
        return EmotionPipeline(self.engine, self.detector_name, smoothing=self.smoothing, min_face=self.min_face,
                               min_score=self.min_score, video=video, largest_face=largest_face,
                               detector_threads=self.detector_threads)

    def detect_emotions(self, image, try_rotations: bool = False) -> list[FaceEmotion]:
        """The faces in one photo (a path, a numpy image: gray, BGR or BGRA uint8, or a PIL image) with their
        emotions, largest face first.

        ``try_rotations=True`` is for pictures that may lie sideways or upside down with no EXIF orientation to say
        so (scans, screenshots, frames from a camera mounted on its side): the image is searched in each of its four
        quarter turns and read in the one whose best face the detector is surest of (the image as given wins a
        tie). The boxes are in the image as given; each face's ``rotation`` says how it was turned. It costs four
        searches instead of one."""
        if not isinstance(try_rotations, bool):
            raise ValueError(f"try_rotations {try_rotations!r}: expected True or False")
        frame = as_image(image)
        if self._photos is None:
            self._photos = self.pipeline(video=False)
        best_rotation, results = 0, self._photos(frame)
        if try_rotations:
            best_score = max((r.score for r in results), default=-1.0)
            for rotation in ROTATIONS[1:]:
                turned = self._photos(turned_clockwise(frame, rotation))
                score = max((r.score for r in turned), default=-1.0)
                if score > best_score:
                    best_rotation, best_score, results = rotation, score, turned
        height, width = frame.shape[:2]
        faces = [FaceEmotion(box_before_rotation(tuple(int(v) for v in r.box), best_rotation, width, height),
                             r.label, {name: float(p) for name, p in zip(CLASS_NAMES, r.probabilities)},
                             float(r.score), best_rotation)
                 for r in results]
        return sorted(faces, key=lambda face: -face.box[2] * face.box[3])

    def classify_faces(self, faces) -> np.ndarray:
        """Probabilities (N, 8) in CLASS_NAMES order for faces already cropped (tight, as FER2013's: the face
        filling the image): one face, a list of them (any size, gray or colour uint8) or a stacked array."""
        return self.engine.predict(face_crops(faces))

    def analyze_video(self, source, max_frames: int | None = None, progress: bool = False, rotate: int = 0):
        """A pandas DataFrame with one row per face per frame (the live app's log columns: source, frame, time_s,
        face_id, x, y, w, h, the 8 probabilities, label) for a video file, a camera index, an image or a folder of
        images (each on its own). A camera runs until ``max_frames`` or Ctrl-C (in a notebook: interrupt the
        kernel); an interrupted call returns the rows so far, with ``table.attrs["interrupted"]`` True. ``rotate``
        (90, 180 or 270) turns every frame that many degrees clockwise first, for a camera mounted on its side; the
        boxes are then in the turned frames."""
        import pandas as pd
        from tqdm.auto import tqdm

        if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, int)
                                       or max_frames < 0):
            raise ValueError(f"max_frames {max_frames!r}: expected a whole number, 0 or more")
        check_rotation(rotate, "rotate")  # before a camera is opened
        frames = rotated_source(open_source(source), rotate)  # SourceError (a ValueError) when it cannot be read
        pipeline = self.pipeline(video=frames.kind != "images")
        records, interrupted, frames_read, last_time_s = [], False, 0, None
        total = frames.length if max_frames is None or frames.length is None else min(frames.length, max_frames)
        if frames.kind == "camera" and max_frames is None:
            warnings.warn(f"camera {source}: no max_frames, so it runs until interrupted (Ctrl-C); the rows so far "
                          "are returned then", stacklevel=2)
        try:
            for result in tqdm(process_frames(frames, pipeline, max_frames=max_frames), total=total, unit="frame",
                               disable=not progress):
                records += log_records(result)
                frames_read, last_time_s = frames_read + 1, result.time_s
        except KeyboardInterrupt:
            # a camera has no end: stopping it is how a user finishes, so the frames read are the answer
            interrupted = True
            warnings.warn(f"{source}: interrupted after {frames_read} frame(s); returning the rows so far",
                          stacklevel=2)
        finally:
            pipeline.close()
        if frames.skipped:
            warnings.warn(f"{source}: skipped {len(frames.skipped)} file(s) (table.attrs['skipped'] "
                          "lists them all): " + "; ".join(frames.skipped[:3])
                          + (" ..." if len(frames.skipped) > 3 else ""), stacklevel=2)
        # a video that stopped at max_frames was cut by the caller; one that ended before it may be cut short itself
        stopped_by_caller = max_frames is not None and frames_read >= max_frames
        early = None if interrupted or stopped_by_caller else cut_short(frames, frames_read, last_time_s)
        if early:
            warnings.warn(early, stacklevel=2)
        table = pd.DataFrame(records, columns=list(LOG_COLUMNS))
        table.attrs["skipped"] = list(frames.skipped)
        table.attrs["interrupted"] = interrupted
        return table.astype({"source": str, "label": str, "frame": int, "face_id": int, "x": int, "y": int,
                             "w": int, "h": int, **dict.fromkeys(CLASS_NAMES, float), "time_s": float})

    def close(self) -> None:
        if self._photos is not None:
            self._photos.close()
            self._photos = None


__all__ = ["EmotionRecognizer", "FaceEmotion", "SourceError", "box_before_rotation", "face_crops", "as_image"]
