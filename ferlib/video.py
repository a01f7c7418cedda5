"""Emotions of the faces in a stream of frames: frame sources (camera, video file, image, folder of images), the
detect -> align -> classify pipeline with faces followed from frame to frame and their probabilities smoothed, the
drawing of the results, the per-face CSV log, and ``process_frames``: the one frame loop (read -> detect -> align ->
classify -> track -> draw -> write), which times every stage of every frame (``StageTimes``, summed up by
``summarize_times``). ``video_application.py``, ``EmotionRecognizer.analyze_video``, ``analyze_frames`` and
benchmarks/video_pipeline.py all run it; every video is read through ``open_source``.

    from ferlib.video import analyze_frames, read_frames
    for result in analyze_frames(read_frames("clip.mp4")):
        for face in result.faces:
            print(result.index, face.face_id, face.label, face.top(3))

    pipeline = EmotionPipeline()
    results = list(process_frames(open_source("clip.mp4"), pipeline, draw=True))
    print(summarize_times(result.times for result in results))  # ms per frame by stage, fps

Most users want ``ferlib.EmotionRecognizer`` (``ferlib.recognizer``), the one-call API over this module.
"""
from __future__ import annotations

import contextlib
import csv
import itertools
import os
import queue
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import cv2
import numpy as np

from ferlib.data import CLASS_NAMES
from ferlib.faces import (DETECTOR_NAMES, Face, align_face, as_bgr, box_iou, build_detector, captured_native_stderr,
                          quiet_native_stderr)
from ferlib.files import (MissingFileError, atomic_path, check_writable, names_camera, path_exists, publish,
                          temporary_beside)

# FFmpeg's decoders print their complaints about a damaged video ("[h264 @ 0x...] Invalid NAL unit size") on the
# terminal, frame after frame; the frame loop says it once and better (cut_short). Read by OpenCV when it first
# opens a video; a user's own setting wins.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
MAX_CAMERA_INDEX = 9999  # OpenCV's indices go past 99: 200 + n is camera n through V4L2, 700 + n DirectShow
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".tif", ".tiff", ".webp", ".avif"}
# iPhones' photos: OpenCV and PIL cannot decode them here, so a folder names them rather than passing them over
UNREADABLE_IMAGE_SUFFIXES = {".heic", ".heif"}
# a .gif alone may be animated and is read as a video; in a folder of photos it is one more still
FOLDER_IMAGE_SUFFIXES = IMAGE_SUFFIXES | {".gif"}
VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"}  # for picking videos out of a folder
LOG_COLUMNS = ("source", "frame", "time_s", "face_id", "x", "y", "w", "h", *CLASS_NAMES, "label")


class SourceError(ValueError):
    """A camera, file or folder that cannot be read."""


# ----------------------------------------------------------------------------------------------------------- sources

@dataclass
class Frame:
    image: np.ndarray  # uint8, BGR or grayscale
    index: int
    time_s: float
    source: str  # the file (or camera) it came from


@dataclass
class FrameSource:
    """What ``open_source`` opened: ``kind`` is "camera", "video" or "images"; ``frames`` yields ``Frame``s."""
    kind: str
    name: str
    fps: float | None
    length: int | None  # frames, when known
    frames: Iterator[Frame]
    skipped: list[str] = field(default_factory=list)  # unreadable images in a folder, with the reason
    release: Callable[[], None] | None = None  # a camera's or video's capture.release

    def __iter__(self):
        return self.frames

    def close(self) -> None:
        """Release the camera or file now (its reading thread stopped) rather than when the frames are collected;
        the capture is released even if no frame was read (a generator never started runs no ``finally``)."""
        _close_frames(self.frames)  # first: it joins the reading thread, which may be inside capture.read()
        if self.release is not None:
            self.release()


def read_image(path: Path | str) -> np.ndarray:
    """An image file as a uint8 array (grayscale or BGR, as stored), turned upright as its EXIF orientation says
    (phone photos are often stored sideways); SourceError if it is not one, or if it is cut short (a JPEG whose end
    is missing decodes to a picture grey below some line). ``~`` is the user's home folder."""
    if not str(path).strip():
        raise SourceError("an empty path; expected an image file")
    path = Path(path).expanduser()
    if path.is_dir():
        raise SourceError(f"{path}: a folder; expected an image file (EmotionRecognizer.analyze_video and the app "
                          "read folders of photos)")
    if not path.is_file():
        raise SourceError(f"{path}: no such image file")
    # not IMREAD_UNCHANGED: that also ignores the EXIF orientation; any depth and colour are kept, alpha is not needed
    with _quiet_opencv(), captured_native_stderr() as decoder:
        image = cv2.imread(str(path), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if "Premature end of JPEG file" in decoder.text:  # libjpeg's own warning: OpenCV returns what it decoded
        raise SourceError(f"{path}: the image is cut short (its end is missing: a download or copy that did not "
                          "finish?)")
    if image is None:
        image = _read_with_pil(path)  # OpenCV fails on some files PIL reads (a TIFF stored turned, for one)
    if image is None:
        video = path.suffix.lower() in VIDEO_SUFFIXES
        hint = " (a video? EmotionRecognizer.analyze_video reads videos)" if video else ""
        raise SourceError(f"{path}: cannot be read as an image{hint}")
    if image.dtype != np.uint8:  # 16-bit PNGs and the like
        image = cv2.convertScaleAbs(image, alpha=255.0 / max(1, int(image.max())))
    return image


def _read_with_pil(path: Path) -> np.ndarray | None:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return pil_to_bgr(image)
    except Exception:  # noqa: BLE001 - whatever PIL cannot read, the caller says cannot be read
        return None


def pil_to_bgr(image) -> np.ndarray:
    """A PIL image in OpenCV's channel order, upright as its EXIF orientation says: gray stays gray, colour becomes
    BGR (BGRA with transparency); ValueError if PIL cannot read it (a file cut short, a closed file)."""
    from PIL import ImageOps

    try:
        image = ImageOps.exif_transpose(image)
        if image.mode == "L":
            return np.asarray(image, np.uint8)
        if image.mode in ("RGBA", "LA", "La", "PA") or (image.mode == "P" and "transparency" in image.info):
            return cv2.cvtColor(np.asarray(image.convert("RGBA"), np.uint8), cv2.COLOR_RGBA2BGRA)
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit and float grays: scale to 0-255
            array = np.asarray(image, np.float64)
            return cv2.convertScaleAbs(array, alpha=255.0 / max(1.0, float(array.max())))
        return cv2.cvtColor(np.asarray(image.convert("RGB"), np.uint8), cv2.COLOR_RGB2BGR)
    except (OSError, ValueError, AssertionError, SyntaxError) as error:  # PIL's ways of failing to load pixels
        reason = str(error) or ("the file was closed" if isinstance(error, AssertionError) else type(error).__name__)
        raise ValueError(f"the PIL image cannot be read ({reason}); expected an image PIL can load") from None


def _capture_frames(capture: cv2.VideoCapture, name: str, fps: float | None, live: bool) -> Iterator[Frame]:
    started = time.perf_counter()
    index = 0
    try:
        while True:
            ok, image = capture.read()
            if not ok:
                return
            if live:
                time_s = time.perf_counter() - started
            else:
                # the frame's own timestamp: a phone's or a screen recorder's video has no constant frame rate
                msec = capture.get(cv2.CAP_PROP_POS_MSEC)
                time_s = msec / 1000.0 if msec > 0 or index == 0 or not fps else index / fps
            yield Frame(image, index, round(time_s, 4), name)
            index += 1
    finally:
        capture.release()


def _close_frames(frames: Iterator) -> None:
    """Close a generator of frames (its capture released, its reading thread stopped); other iterators have nothing
    to close."""
    if hasattr(frames, "close"):
        frames.close()


_READ_AHEAD_END = object()  # what the reading thread queues after a source's last frame
DECODE_THREAD, DETECT_THREAD = "ferlib-decode", "ferlib-detect"  # the names of the frame loop's threads
LIVE_IDLE_S = 2.0  # a camera nobody has asked a frame of for this long is not read until the next is asked for


def read_ahead(frames: Iterator, depth: int = 2, live: bool = False, name: str = "ferlib-read-ahead") -> Iterator:
    """``frames`` (an iterator) read by a thread of their own (called ``name``), up to ``depth`` items ahead: the
    next video frame decodes while the caller works on this one (OpenCV lets go of the GIL while it decodes), so on
    a machine with a core to spare the frame loop no longer waits for decoding. A ``live`` source (a camera's
    ``Frame``s) keeps only its newest frame: a frame the caller has not taken by the time the next arrives is
    dropped rather than shown late, and the frames handed on are numbered 0, 1, 2, ... without gaps; when no frame
    has been asked for in LIVE_IDLE_S seconds (a notebook that took one and moved on), the camera is not read until
    the next is. The thread starts at the first frame asked for, and stops, closing ``frames`` (which releases a
    capture), when they end or the caller stops; an error reading them is raised in the caller. ``frames`` then runs
    on that thread, ahead of the caller: an iterator that reuses one image buffer for every frame does not suit."""
    if depth < 1:
        raise ValueError(f"depth {depth}: expected 1 or more items")
    waiting: queue.Queue = queue.Queue(maxsize=1 if live else depth)
    stop = threading.Event()
    asked_at = [time.monotonic()]  # when the caller last asked for a frame

    def hand_over(item) -> bool:
        while not stop.is_set():
            try:
                waiting.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        end = _READ_AHEAD_END
        try:
            for frame in frames:
                if live:
                    with contextlib.suppress(queue.Empty):
                        waiting.get_nowait()  # not taken yet: the newer frame replaces it
                if not hand_over(frame):
                    return
                while live and time.monotonic() - asked_at[0] > LIVE_IDLE_S:
                    if stop.wait(0.1):
                        return
        except BaseException as error:  # noqa: BLE001 - handed to the caller, who raises it
            end = error
        finally:
            _close_frames(frames)
        hand_over(end)

    thread = threading.Thread(target=read, name=name, daemon=True)
    thread.start()
    try:
        for index in itertools.count():
            asked_at[0] = time.monotonic()
            item = waiting.get()
            if item is _READ_AHEAD_END:
                return
            if isinstance(item, BaseException):
                raise item
            yield replace(item, index=index) if live else item
    finally:
        stop.set()
        thread.join()


def _image_frames(paths: list[Path], skipped: list[str]) -> Iterator[Frame]:
    for index, path in enumerate(paths):
        try:
            image = read_image(path)
        except SourceError as error:  # one bad photo in a folder should not stop the other thousand
            skipped.append(str(error))
            continue
        yield Frame(image, index, 0.0, str(path))


@contextlib.contextmanager
def _quiet_opencv():
    """OpenCV logs its own warnings when a camera or a file fails to open; the SourceError says it better."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


ROTATIONS = (0, 90, 180, 270)  # the quarter turns a picture may lie in, degrees clockwise


def check_rotation(degrees, what: str = "rotation") -> int:
    """``degrees`` if it is one of ``ROTATIONS``; ValueError naming ``what`` otherwise."""
    if isinstance(degrees, bool) or degrees not in ROTATIONS:
        raise ValueError(f"{what} {degrees!r}: expected 0, 90, 180 or 270 degrees clockwise")
    return degrees


def turned_clockwise(image: np.ndarray, degrees: int) -> np.ndarray:
    """``image`` turned ``degrees`` clockwise (one of ``ROTATIONS``), contiguous."""
    return np.ascontiguousarray(np.rot90(image, -check_rotation(degrees) // 90))


def rotated_source(source: FrameSource, degrees: int) -> FrameSource:
    """``source`` with every frame turned ``degrees`` clockwise (0, 90, 180 or 270) before anything reads it: a
    camera mounted on its side, or a video stored turned without the metadata to say so, read the right way up."""
    if check_rotation(degrees) == 0:
        return source
    return replace(source, frames=_turned_frames(source.frames, degrees))


def _turned_frames(frames: Iterator[Frame], degrees: int) -> Iterator[Frame]:
    try:
        for frame in frames:
            yield replace(frame, image=turned_clockwise(frame.image, degrees))
    finally:  # a loop that stops early stops the source's reading too (a camera's thread, a capture)
        _close_frames(frames)


def open_source(source: str | int | Path, read_ahead: bool = True) -> FrameSource:
    """Open a camera index (0, "1"), a video file, an image file or a folder of images; SourceError if it can't.
    A camera's or a video's frames are decoded by a thread of their own (``read_ahead``; ``False`` decodes each
    frame when it is asked for)."""
    # FFmpeg prints its own line ("moov atom not found") about a file it cannot read; the SourceError says it better
    with _quiet_opencv(), quiet_native_stderr():
        return _open_source(source, read_ahead)


def _open_source(source: str | int | Path, ahead: bool = True) -> FrameSource:
    if not isinstance(source, (str, Path, int)) or isinstance(source, bool):
        raise SourceError(f"source: expected a video or image file, a folder of images or a camera index, got "
                          f"{type(source).__name__} (for an image in memory: EmotionRecognizer.detect_emotions)")
    text = str(source)
    if not text.strip():
        raise SourceError("source: an empty path; expected a video or image file, a folder of images or a camera index")
    if names_camera(source):
        if not 0 <= int(text) <= MAX_CAMERA_INDEX:  # OpenCV crashes the process on a negative index
            raise SourceError(f"camera {text}: expected a camera index from 0 to {MAX_CAMERA_INDEX}")
        capture = cv2.VideoCapture(int(text))
        if not capture.isOpened():
            raise SourceError(f"camera {text}: cannot be opened (no camera with that index, or it is in use)")
        return FrameSource("camera", f"camera {text}", None, None,
                           _maybe_read_ahead(_capture_frames(capture, f"camera {text}", None, True), ahead, True),
                           release=capture.release)
    path = Path(text).expanduser()
    if not path_exists(path):
        raise SourceError(f"{path}: no such file, folder or camera")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())
        images = [p for p in files if p.suffix.lower() in FOLDER_IMAGE_SUFFIXES]
        heic = [p for p in files if p.suffix.lower() in UNREADABLE_IMAGE_SUFFIXES]
        videos = [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES]
        skipped = ([f"{p}: a HEIC photo, which cannot be read here (convert it to JPEG)" for p in heic]
                   + [f"{p}: a video; a folder is read as photos (give each video as the source)" for p in videos])
        if not images:
            only = f" (only {len(heic)} HEIC photo(s), which cannot be read here: convert them to JPEG)" if heic else ""
            if videos:
                only += f" ({len(videos)} video(s): give each video as the source, one at a time)"
            raise SourceError(f"{path}: folder has no images{only} ({', '.join(sorted(FOLDER_IMAGE_SUFFIXES))}; "
                              "sub-folders are not searched)")
        return FrameSource("images", str(path), None, len(images), _image_frames(images, skipped), skipped)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        read_image(path)  # fail now, not halfway through
        return FrameSource("images", str(path), None, 1, _image_frames([path], []))
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise SourceError(f"{path}: cannot be read as a video or an image")
    fps = capture.get(cv2.CAP_PROP_FPS) or None
    length = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    length = length if length > 0 else None  # unknown: a browser's WebM recording gives a negative count
    ok, first = capture.read()
    capture.release()
    if not ok:
        raise SourceError(f"{path}: cannot be read as a video or an image (no frame could be decoded)")
    # opened again rather than rewound: a one-frame source (a still saved as GIF) cannot seek back to its frame
    capture = cv2.VideoCapture(str(path))
    frames = _capture_frames(capture, str(path), fps, False)
    return FrameSource("video", str(path), fps, length, _maybe_read_ahead(frames, ahead, False),
                       release=capture.release)


def cut_short(source: FrameSource, frames_read: int, last_time_s: float | None) -> str | None:
    """Why a video read to its end seems to have ended early (a damaged or cut-short file), or None. For a video of
    variable frame rate the header's frame count is only its duration times the mean rate, so a video whose last
    frame reaches its duration is whole, however many frames it has."""
    if source.kind != "video" or not source.length or frames_read >= 0.98 * source.length - 1:
        return None
    if source.fps and last_time_s is not None and last_time_s + 1 / source.fps >= 0.95 * source.length / source.fps:
        return None
    return (f"{source.name} ended after {frames_read} of the {source.length} frames its header announces (a damaged "
            "or cut-short file?)")


def _maybe_read_ahead(frames: Iterator[Frame], ahead: bool, live: bool) -> Iterator[Frame]:
    return read_ahead(frames, live=live, name=DECODE_THREAD) if ahead else frames


def read_frames(source: str | int | Path) -> Iterator[np.ndarray]:
    """Just the images of a source, for ``analyze_frames``."""
    for frame in open_source(source):
        yield frame.image


def read_frame(source: str | Path, index: int) -> np.ndarray:
    """Frame ``index`` (from 0) of a video file or folder of images; SourceError if the source is shorter. The
    frames before it are decoded rather than sought past: not every backend and container seeks to the exact frame."""
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError(f"index {index!r}: expected a frame number, 0 or more")
    frames = open_source(source)
    try:
        for frame in frames:
            if frame.index == index:
                return frame.image
    finally:
        frames.close()
    raise SourceError(f"{source}: has no frame {index}")


# ---------------------------------------------------------------------------------------------------------- tracking

@dataclass
class FaceResult:
    face_id: int
    box: tuple[int, int, int, int]
    probabilities: np.ndarray  # smoothed over the face's track (the raw ones when smoothing is off)
    raw_probabilities: np.ndarray
    score: float
    landmarks: np.ndarray

    @property
    def label(self) -> str:
        return CLASS_NAMES[int(np.argmax(self.probabilities))]

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        order = np.argsort(self.probabilities)[::-1][:k]
        return [(CLASS_NAMES[i], float(self.probabilities[i])) for i in order]


@dataclass
class _Track:
    face_id: int
    box: tuple[int, int, int, int]
    probabilities: np.ndarray
    missed: int = 0


class FaceTracker:
    """Follows faces from frame to frame by box overlap and keeps an exponential moving average of each face's
    probabilities. ``smoothing`` is the weight of the past (0 turns smoothing off; 0.6 means a new frame moves the
    average 40% of the way). A face unseen for more than ``max_missed`` frames is forgotten; a face that comes back
    later gets a new id."""

    def __init__(self, smoothing: float = 0.6, min_iou: float = 0.3, max_missed: int = 5):
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing {smoothing}: expected a number in [0, 1)")
        self.smoothing, self.min_iou, self.max_missed = smoothing, min_iou, max_missed
        self.tracks: list[_Track] = []
        self.next_id = 0

    def reset(self) -> None:
        self.tracks = []

    def update(self, faces: list[Face], probabilities: np.ndarray) -> list[FaceResult]:
        pairs = sorted(((box_iou(track.box, face.box), t, f) for t, track in enumerate(self.tracks)
                        for f, face in enumerate(faces)), reverse=True)
        track_of_face: dict[int, int] = {}
        used_tracks: set[int] = set()
        for iou, t, f in pairs:
            if iou < self.min_iou:
                break
            if t not in used_tracks and f not in track_of_face:
                track_of_face[f] = t
                used_tracks.add(t)
        results = []
        for f, face in enumerate(faces):
            raw = probabilities[f]
            if f in track_of_face:
                track = self.tracks[track_of_face[f]]
                track.probabilities = self.smoothing * track.probabilities + (1 - self.smoothing) * raw
                track.box, track.missed = face.box, 0
            else:
                track = _Track(self.next_id, face.box, raw.copy())
                self.next_id += 1
                self.tracks.append(track)
                used_tracks.add(len(self.tracks) - 1)
            results.append(FaceResult(track.face_id, face.box, track.probabilities.copy(), raw, face.score,
                                      face.landmarks))
        for t, track in enumerate(self.tracks):
            if t not in used_tracks:
                track.missed += 1
        self.tracks = [track for track in self.tracks if track.missed <= self.max_missed]
        return results


# ---------------------------------------------------------------------------------------------------------- pipeline

DEFAULT_MODEL_NAME = "ferplus_cnn_robust"  # trained on FER's crops and this pipeline's, damaged as real inputs are
# (README, "Which model reads the faces")


# The least detector score a face needs, by the detector that found it. On video, MediaPipe's default 0.5 lets through
# a few faces scored 0.51-0.61 in the sample clips' animated title (real faces there score 0.95+); a photo has no such
# flicker to hide, and MediaPipe's faces in group photos score 0.56-0.58, so stills keep the detectors' own 0.5.
# Haar's scores are cascade level weights, not probabilities: its false faces there score 2.9-4.9, its real ones 5.8+,
# too close to threshold, so none is applied.
LIVE_MIN_SCORE = {"mediapipe": 0.7, "mediapipe_full": 0.7, "yunet": 0.5, "haar": 0.0}
STILL_MIN_SCORE = {"mediapipe": 0.5, "mediapipe_full": 0.5, "yunet": 0.5, "haar": 0.0}


def check_detector(detector) -> None:
    """A detector setting: "auto", a name from ``ferlib.faces.DETECTOR_NAMES``, or a detector object."""
    names = ("auto",) + DETECTOR_NAMES
    if isinstance(detector, str):
        if detector not in names:
            raise ValueError(f"detector {detector!r}: expected one of {', '.join(names)}")
    elif not (callable(detector) and callable(getattr(detector, "reset", None))):
        raise ValueError(f"detector {detector!r}: expected one of {', '.join(names)}, or a detector object (called "
                         "with a frame, it returns ferlib.faces.Face objects; reset() forgets past frames)")


def as_engine(model=None, engine: str = "auto", threads: int | None = 1):
    """An inference engine (``ferlib.engine``) for ``model``: None (the default shipped model,
    ``DEFAULT_MODEL_NAME``), the name of a shipped model (``ferlib.models.SHIPPED_MODELS``, e.g. "ferplus_cnn_fast"),
    a model file, a torch model, an engine already made, or a list or tuple of these: an ensemble that answers the
    mean of their probabilities (``ferlib.engine.EnsembleEngine``)."""
    from ferlib.engine import EnsembleEngine, TorchEngine, load_engine
    from ferlib.models import SHIPPED_MODELS, shipped_model

    if hasattr(model, "predict"):
        return model
    if isinstance(model, (list, tuple)):
        if not model or any(member is None or isinstance(member, (list, tuple)) for member in model):
            raise ValueError(f"model {model!r}: an ensemble is a non-empty list of models (names, files, torch "
                             "models or engines), none of them None or a list")
        return EnsembleEngine([as_engine(member, engine, threads) for member in model])
    if model is not None and not isinstance(model, (str, Path)) and not callable(getattr(model, "state_dict", None)):
        raise ValueError(f"model {model!r}: expected None (the default), a shipped model's name, a .safetensors or "
                         ".onnx file, a torch model, an engine (with predict) or a list of these")
    if model is None or (isinstance(model, str) and model in SHIPPED_MODELS):
        model = shipped_model(model or DEFAULT_MODEL_NAME)
    if isinstance(model, (str, Path)):
        if not Path(model).suffix and not Path(model).exists():  # a bare word: most likely a misspelt model name
            raise MissingFileError(f"{model}: neither a shipped model ({', '.join(SHIPPED_MODELS)}) nor a model "
                                   "file (.safetensors or .onnx)")
        return load_engine(model, engine, threads)
    return TorchEngine(model, threads)


@dataclass
class StageTimes:
    """Seconds one frame spent in each stage of ``process_frames``; None for a stage that did not run (nothing
    drawn, no output written). ``total`` is the whole loop body, from asking for the frame to the last write; where
    a thread decodes and searches frames ahead of the loop (``detect_ahead``), that includes waiting for it, and
    decode and detect are the thread's times. Where the source decodes its frames on a thread of its own
    (``open_source``'s ``read_ahead``), decode is the wait for the decoded frame, not the decoding."""
    decode: float = 0.0
    detect: float = 0.0
    align: float = 0.0
    classify: float = 0.0
    track: float = 0.0
    draw: float | None = None
    write: float | None = None
    total: float = 0.0

    @contextlib.contextmanager
    def measure(self, stage: str) -> Iterator[None]:
        """Add the time the ``with`` block takes to ``stage``."""
        tick = time.perf_counter()
        try:
            yield
        finally:
            setattr(self, stage, (getattr(self, stage) or 0.0) + time.perf_counter() - tick)


STAGES = tuple(stage.name for stage in fields(StageTimes))


class EmotionPipeline:
    """detect -> align -> classify -> track for one frame at a time; each call adds the seconds of each stage to the
    ``StageTimes`` it is given.

    ``video=True`` follows faces from frame to frame and smooths their probabilities, with the detector's video
    settings and thresholds; ``video=False`` treats every frame as an unrelated photo.
    """

    def __init__(self, model=None, detector="auto", smoothing: float = 0.6, largest_face: bool = False,
                 min_face: int = 0, min_score: float | None = None, engine: str = "auto", threads: int | None = 1,
                 video: bool = True, detector_threads: int | str | None = None):
        check_detector(detector)
        self.engine = as_engine(model, engine, threads)
        self.owns_detector = isinstance(detector, str)  # a detector handed in is the caller's to close
        if isinstance(detector, str):
            options = {}
            if video and detector == "auto":
                options = {"video": True}
            elif not video and detector in ("auto", "yunet"):  # a photo's search: video keeps FaceFinder's threads
                options = {"threads": detector_threads}
            detector = build_detector(detector, **options)
        self.detector = detector
        self.video = video
        self.tracker = FaceTracker(smoothing=smoothing if video else 0.0)
        self.largest_face, self.min_face = largest_face, min_face
        self.min_scores = LIVE_MIN_SCORE if video else STILL_MIN_SCORE
        self.min_score = min_score
        self.searching_ahead = False  # a frame loop's thread is using the detector (process_frames' detect_ahead)

    def classify(self, crops: np.ndarray) -> np.ndarray:
        """Probabilities (N, 8) for N aligned 48x48 uint8 crops."""
        return self.engine.predict(crops)

    def keep(self, face: Face) -> bool:
        least = self.min_scores.get(face.detector, 0.0) if self.min_score is None else self.min_score
        return min(face.box[2:]) >= self.min_face and face.score >= least

    def find_faces(self, image: np.ndarray, times: StageTimes | None = None) -> list[Face]:
        """The detect stage: the faces of ``image`` that the pipeline keeps. A photo pipeline (``video=False``) first
        forgets the frames before."""
        times = StageTimes() if times is None else times
        if not self.video:
            self.reset()
        with times.measure("detect"):
            faces = [face for face in self.detector(image) if self.keep(face)]
            if self.largest_face and faces:
                faces = [max(faces, key=lambda face: face.box[2] * face.box[3])]
        return faces

    def read_faces(self, image: np.ndarray, faces: list[Face], times: StageTimes | None = None) -> list[FaceResult]:
        """align -> classify -> track for the ``faces`` ``find_faces`` found in ``image``."""
        times = StageTimes() if times is None else times
        with times.measure("align"):
            crops = np.stack([align_face(image, face) for face in faces]) if faces else np.zeros((0, 48, 48), np.uint8)
        with times.measure("classify"):
            probabilities = self.classify(crops)
        with times.measure("track"):
            results = self.tracker.update(faces, probabilities)
        return results

    def __call__(self, image: np.ndarray, times: StageTimes | None = None) -> list[FaceResult]:
        self._check_not_searching_ahead("called")
        times = StageTimes() if times is None else times
        return self.read_faces(image, self.find_faces(image, times), times)

    def _check_not_searching_ahead(self, what: str) -> None:
        if self.searching_ahead:
            raise RuntimeError(f"the pipeline cannot be {what} while a frame loop searches frames ahead with its "
                               "detector (process_frames' detect_ahead): after the loop, or with detect_ahead=False")

    def reset(self) -> None:
        """Forget the faces followed so far (between unrelated images or videos)."""
        self._check_not_searching_ahead("reset")
        self.tracker.reset()
        self.detector.reset()

    def close(self) -> None:
        if self.owns_detector:
            self.detector.close()


@dataclass
class FrameResult:
    """One frame's faces; from ``process_frames`` also what each stage cost and the frame drawn, when it was."""
    index: int
    time_s: float
    source: str
    faces: list[FaceResult]
    times: StageTimes = field(default_factory=StageTimes)
    annotated: np.ndarray | None = None  # BGR, the frame with its faces drawn (``draw_results``)


def process_frames(frames: Iterable[Frame | np.ndarray], pipeline: EmotionPipeline, outputs: Iterable = (),
                   draw: bool = False, max_frames: int | None = None,
                   detect_ahead: bool | None = None) -> Iterator[FrameResult]:
    """The frame loop: read each frame of ``frames`` (a ``FrameSource``, or any sequence of ``Frame``s or numpy
    images), run ``pipeline`` on it, draw it (``draw``, or when an output asks for the drawing of that frame), hand
    it to every output, and yield its ``FrameResult`` with every stage timed. An output has ``needs_drawing(index)``
    and ``write(result)`` (``EmotionLog``, ``VideoOutput``, ``Snapshot``); committing them is the caller's call.
    The frame rate drawn on a frame is a moving average over the frames so far, the caller's time included.

    ``detect_ahead`` (by default, when the pipeline follows faces through a video file): a thread reads and
    searches the next frames (up to three) while the loop reads, follows and draws the faces of this one, so that
    two cores share the work; a frame's decode and detect times are then that thread's, and ``total``, the loop's
    own time for the frame, is less than the sum of the stages. Meanwhile the pipeline's detector is that thread's:
    ``pipeline.reset()`` or a call of the pipeline in the loop body raises RuntimeError. A camera is searched in the
    loop, so that what is drawn is what the camera sees now, not frames searched ahead; so is a photo pipeline,
    which forgets each photo's faces before the next photo is searched (``detect_ahead=True`` is refused for it)."""
    camera = getattr(frames, "kind", None) == "camera"
    ahead = pipeline.video and not camera if detect_ahead is None else detect_ahead
    if ahead and not pipeline.video:
        raise ValueError("detect_ahead=True needs a video pipeline (video=True): a photo pipeline forgets each photo's "
                         "faces before the next is searched, which the loop cannot do ahead of itself")
    outputs = list(outputs)
    found = _found_faces(frames, pipeline, max_frames)
    if ahead:
        found = read_ahead(found, name=DETECT_THREAD)
        pipeline.searching_ahead = True
    fps, last = None, None
    try:
        started = time.perf_counter()
        for frame, faces, times in found:
            faces = pipeline.read_faces(frame.image, faces, times)
            result = FrameResult(frame.index, frame.time_s, frame.source, faces, times)
            if last is not None:
                rate = 1.0 / max(started - last, 1e-6)
                fps = rate if fps is None else 0.9 * fps + 0.1 * rate
            last = started
            if draw or any(output.needs_drawing(frame.index) for output in outputs):
                with times.measure("draw"):
                    result.annotated = draw_results(frame.image, result.faces, fps)
            if outputs:
                with times.measure("write"):
                    for output in outputs:
                        output.write(result)
            times.total = time.perf_counter() - started
            yield result
            started = time.perf_counter()
    finally:
        found.close()  # a thread reading ahead stops with the loop
        if ahead:
            pipeline.searching_ahead = False


def _found_faces(frames: Iterable[Frame | np.ndarray], pipeline: EmotionPipeline,
                 max_frames: int | None) -> Iterator[tuple[Frame, list[Face], StageTimes]]:
    """Each frame, read and searched: the first half of the frame loop, which may run on a thread of its own. The
    frames are closed when it stops (a source's capture released, its own reading thread stopped)."""
    frames = iter(frames)
    try:
        for count in itertools.count():
            if max_frames is not None and count >= max_frames:
                return
            times = StageTimes()
            with times.measure("decode"):
                frame = next(frames, None)
            if frame is None:
                return
            if not isinstance(frame, Frame):
                frame = Frame(frame, count, 0.0, "")
            yield frame, pipeline.find_faces(frame.image, times), times
    finally:
        _close_frames(frames)


@dataclass
class TimingSummary:
    """Milliseconds per frame by stage, for the stages that ran (a frame a stage skipped counts 0 ms), and the loop's
    frame rate. With everything in the loop the means add up to the total's; where frames are searched ahead of
    the loop (``process_frames``' ``detect_ahead``), decode and detect run beside it and the total is less."""
    frames: int
    median_ms: dict[str, float]
    mean_ms: dict[str, float]
    fps: float  # frames per second of loop time: 1000 / mean total ms

    def __str__(self) -> str:
        return ", ".join(f"{stage} {ms:.1f}" for stage, ms in self.mean_ms.items()) or "no frames"


def summarize_times(times: Iterable[StageTimes]) -> TimingSummary:
    """Median and mean milliseconds per frame of each stage that ran in ``times`` (one ``StageTimes`` per frame)."""
    times = list(times)
    per_stage = {stage: [getattr(t, stage) for t in times] for stage in STAGES}
    per_stage = {stage: [1000 * (seconds or 0.0) for seconds in values] for stage, values in per_stage.items()
                 if any(seconds is not None for seconds in values)}
    mean_total = statistics.fmean(per_stage["total"]) if times else 0.0
    return TimingSummary(len(times), {stage: statistics.median(values) for stage, values in per_stage.items()},
                         {stage: statistics.fmean(values) for stage, values in per_stage.items()},
                         1000 / mean_total if mean_total > 0 else 0.0)


def analyze_frames(frames: Iterable[np.ndarray | Frame], model=None, detector="auto", smoothing: float = 0.6,
                   largest_face: bool = False, video: bool = True) -> Iterator[FrameResult]:
    """The faces and emotions in each frame of a sequence (numpy images or ``Frame``s), in order. ``video=False``
    for unrelated photos (nothing is followed or smoothed across them)."""
    pipeline = EmotionPipeline(model, detector, smoothing=smoothing, largest_face=largest_face, video=video)
    try:
        yield from process_frames(frames, pipeline)
    finally:
        pipeline.close()


# ----------------------------------------------------------------------------------------------------------- drawing

# BGR colours, one per class, in CLASS_NAMES order
CLASS_COLOURS = ((200, 200, 200), (0, 215, 255), (255, 160, 0), (200, 90, 40), (40, 40, 230), (40, 160, 60),
                 (180, 60, 180), (120, 120, 0))


def overlap_area(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> int:
    """Pixels two (x, y, w, h) rectangles share."""
    width = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    height = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return max(0, width) * max(0, height)


def bounding_box(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """The smallest (x, y, w, h) rectangle holding both."""
    left, top = min(a[0], b[0]), min(a[1], b[1])
    return left, top, max(a[0] + a[2], b[0] + b[2]) - left, max(a[1] + a[3], b[1] + b[3]) - top


def title_position(size: tuple[int, int], box: tuple[int, int, int, int], others: list,
                   frame_height: int) -> tuple[int, int, int, int]:
    """The (x, y, w, h) of a face's (width, height) title: on top of its box, or under it where that covers less
    of the ``others`` (the neighbours' faces and titles) or the frame's top would cut it."""
    (title_w, title_h), (x, y, w, h) = size, box
    above, below = (x, y - title_h, title_w, title_h), (x, y + h + 2, title_w, title_h)
    covered = {place: sum(overlap_area(place, other) for other in others) for place in (above, below)}
    fits_below = y + h + 2 + title_h <= frame_height
    return below if above[1] < 0 or (fits_below and covered[below] < covered[above]) else above


def panel_position(size: tuple[int, int], box: tuple[int, int, int, int], taken: list, frame: tuple[int, int],
                   gap: int = 6) -> tuple[int, int]:
    """Where a (width, height) label panel for the face in ``box`` goes: beside the box (right, then left), below
    it or above it, inside the (width, height) ``frame``, at the first place that covers none of the ``taken``
    rectangles (other faces, their titles and panels: a group photo's faces sit close together), else where it
    covers least."""
    (panel_w, panel_h), (x, y, w, h), (frame_w, frame_h) = size, box, frame
    sides = [(x + w + gap, y), (x - panel_w - gap, y), (x, y + h + gap), (x, y - panel_h - gap),
             (x + w + gap, y + h - panel_h), (x - panel_w - gap, y + h - panel_h), (x + w - panel_w, y + h + gap)]
    best, best_cost = None, None
    for left, top in sides:
        left = min(max(0, left), max(0, frame_w - panel_w))
        top = min(max(0, top), max(0, frame_h - panel_h))
        rectangle = (left, top, panel_w, panel_h)
        cost = sum(overlap_area(rectangle, other) for other in taken) + overlap_area(rectangle, box)
        if best_cost is None or cost < best_cost:
            best, best_cost = (left, top), cost
        if cost == 0:
            break
    return best


def draw_results(image: np.ndarray, faces: list, fps: float | None = None) -> np.ndarray:
    """A copy of the frame (BGR) with each face's box, emotion and top-3 probabilities, and the frame rate. ``faces``
    are a video frame's ``FaceResult``s or a photo's ``FaceEmotion``s (``EmotionRecognizer.detect_emotions``)."""
    canvas = as_bgr(image).copy()
    height, width = canvas.shape[:2]
    # text grows with the frame, so labels keep their share of a 4K phone video as of a 1000-px photo
    scale = max(0.5, min(4.0, width / 800))
    thickness = max(1, int(round(2 * scale)))
    font = cv2.FONT_HERSHEY_SIMPLEX
    titles = []
    for face in faces:
        x, y, w, h = face.box
        face_id = getattr(face, "face_id", None)  # photos' faces (FaceEmotion) have no track to number
        title = face.label if face_id is None else f"#{face_id} {face.label}"
        (text_w, text_h), base = cv2.getTextSize(title, font, 0.7 * scale, thickness)
        others = [tuple(other.box) for other in faces if other is not face] + [box for _, box, _ in titles]
        title_box = title_position((text_w + 6, text_h + base + 4), tuple(face.box), others, height)
        titles.append((title, title_box, text_h))
    # top-3 as bars beside each box, where they hide no other face or title; drawn first, so that boxes and titles,
    # what matters most, stay on top wherever a crowd leaves no free place
    taken = [tuple(face.box) for face in faces] + [rectangle for _, rectangle, _ in titles]
    for face, (_, title_box, _) in zip(faces, titles):
        top = face.top(3)
        texts = [f"{name} {p:.0%}" for name, p in top]
        small = 0.6 * scale
        text_w = max(cv2.getTextSize(text, font, small, 1)[0][0] for text in texts)
        bar_w, row_h = max(int(120 * scale), text_w + 8), int(26 * scale)
        panel_h = len(top) * (row_h + 3) - 3
        labelled = bounding_box(tuple(face.box), title_box)  # the face with its title: the panel goes around both
        left, panel_top = panel_position((bar_w, panel_h), labelled, taken, (width, height))
        taken.append((left, panel_top, bar_w, panel_h))
        for rank, ((name, p), text) in enumerate(zip(top, texts)):
            row_y = panel_top + rank * (row_h + 3)
            if row_y + row_h > height:
                break
            cv2.rectangle(canvas, (left, row_y), (left + bar_w, row_y + row_h), (40, 40, 40), -1)
            cv2.rectangle(canvas, (left, row_y), (left + int(bar_w * p), row_y + row_h),
                          CLASS_COLOURS[CLASS_NAMES.index(name)], -1)
            origin = (left + 4, row_y + row_h - int(8 * scale))
            cv2.putText(canvas, text, origin, font, small, (0, 0, 0), 3, cv2.LINE_8)  # outline: legible on any bar
            cv2.putText(canvas, text, origin, font, small, (255, 255, 255), 1, cv2.LINE_AA)
    for face, (title, (title_x, title_y, title_w, title_h), text_h) in zip(faces, titles):
        x, y, w, h = face.box
        colour = CLASS_COLOURS[CLASS_NAMES.index(face.label)]
        cv2.rectangle(canvas, (x, y), (x + w, y + h), colour, thickness)
        cv2.rectangle(canvas, (title_x, title_y), (title_x + title_w, title_y + title_h), colour, -1)
        cv2.putText(canvas, title, (x + 3, title_y + text_h + 2), font, 0.7 * scale, (0, 0, 0), thickness,
                    cv2.LINE_AA)
    if fps is not None:
        cv2.putText(canvas, f"{fps:.0f} fps", (8, int(28 * scale) + 4), font, 0.8 * scale, (0, 255, 0), thickness,
                    cv2.LINE_AA)
    return canvas


# -------------------------------------------------------------------------------------------------------------- log

def log_records(result: FrameResult) -> list[list]:
    """The values of the log's rows (LOG_COLUMNS) for one frame, one row per face: numbers as numbers."""
    return [[result.source, result.index, result.time_s, face.face_id, *face.box,
             *(float(p) for p in face.probabilities), face.label] for face in result.faces]


def log_rows(result: FrameResult) -> list[list]:
    """The CSV rows (LOG_COLUMNS) for one frame: one per face, probabilities to 4 decimals."""
    return [[source, index, f"{time_s:.3f}", face_id, x, y, w, h, *(f"{p:.4f}" for p in probabilities), label]
            for source, index, time_s, face_id, x, y, w, h, *probabilities, label in log_records(result)]


class AtomicWriter:
    """An output of ``process_frames`` written frame by frame into a hidden temporary file beside ``path``; ``commit``
    renames it into place, ``discard`` removes it, so a run that fails never leaves a half-written file under the
    requested name."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.temporary = temporary_beside(self.path)

    def needs_drawing(self, index: int) -> bool:
        """Whether ``write`` needs frame ``index`` drawn (``FrameResult.annotated``)."""
        return False

    def commit(self) -> None:
        publish(self.temporary, self.path)

    def discard(self) -> None:
        self.temporary.unlink(missing_ok=True)


class EmotionLog(AtomicWriter):
    """The per-face CSV log, written to a temporary file and renamed when complete."""

    def __init__(self, path: Path | str):
        super().__init__(path)
        self.handle = open(self.temporary, "w", newline="")
        self.writer = csv.writer(self.handle)
        self.writer.writerow(LOG_COLUMNS)

    def write(self, result: FrameResult) -> None:
        self.writer.writerows(log_rows(result))

    def commit(self) -> None:
        self.handle.close()
        super().commit()

    def discard(self) -> None:
        self.handle.close()
        super().discard()


MAX_HOLD_S = 10.0  # the longest a timed VideoOutput holds one frame


class VideoOutput(AtomicWriter):
    """An annotated .mp4 / .avi of the drawn frames, opened on the first frame (its size fixes the video's; later
    frames of another size, from a folder of photos, are letterboxed into it). With ``timed=True`` (a video file's
    frames) each frame is held as long as its own timestamp says, repeated where the source's frame rate varies
    (a phone's or a screen recorder's video) and left out where frames come faster than ``fps``, so the output
    keeps the source's duration (a pause longer than ``MAX_HOLD_S`` is shortened to it)."""

    def __init__(self, path: Path | str, fps: float, timed: bool = False):
        suffix = Path(path).suffix.lower()
        if suffix not in (".mp4", ".avi", ".mov", ".mkv"):  # checked before the temporary file is made
            raise SourceError(f"{path}: output video must end in .mp4, .avi, .mov or .mkv")
        super().__init__(path)
        self.fourcc = cv2.VideoWriter_fourcc(*("MJPG" if suffix == ".avi" else "mp4v"))
        self.fps, self.writer, self.size = fps, None, None
        self.timed, self.written, self.cut = timed, 0, 0  # cut: frames of long pauses left out

    def needs_drawing(self, index: int) -> bool:
        return True

    def write(self, result: FrameResult) -> None:
        image = result.annotated
        if self.writer is None:
            self.size = (image.shape[1], image.shape[0])
            self.writer = cv2.VideoWriter(str(self.temporary), self.fourcc, self.fps, self.size)
            if not self.writer.isOpened():
                raise OSError(f"{self.path}: the {self.size[0]}x{self.size[1]} video cannot be encoded "
                              f"(too large for the {Path(self.path).suffix} encoder?)")
        if (image.shape[1], image.shape[0]) != self.size:
            image = letterbox(image, self.size)
        for _ in range(self.timed_copies(result.time_s) if self.timed else 1):
            self.writer.write(image)

    def timed_copies(self, time_s: float) -> int:
        """How many times a frame of time ``time_s`` is written (and counts them as written): as many as bring the
        output to that time plus one frame, none for a frame that falls within the last one written (frames faster
        than the output's rate), one at least for the first. A pause longer than MAX_HOLD_S is shortened to it, and
        the output's clock with it."""
        behind = round(time_s * self.fps) + 1 - self.cut - self.written
        longest = max(1, round(MAX_HOLD_S * self.fps))
        if behind > longest:
            self.cut += behind - longest
        copies = max(1 if self.written == 0 else 0, min(behind, longest))
        self.written += copies
        return copies

    def commit(self) -> None:
        if self.writer is None:
            raise OSError(f"{self.path}: no frames to write")
        self.writer.release()
        super().commit()

    def discard(self) -> None:
        if self.writer is not None:
            self.writer.release()
        super().discard()


class Snapshot:
    """One drawn frame (``index``) saved as an image under ``path``; kept in memory until ``commit``, so that, like
    the other outputs, it is written only when the run ends well. ``taken`` says whether the frame came."""

    def __init__(self, path: Path | str, index: int):
        if not cv2.haveImageWriter(str(path)):  # found now, not after the whole video has been read
            raise SourceError(f"{path}: cannot write an image of type {Path(path).suffix!r} (expected .png, .jpg, "
                              ".webp, .bmp or .tif)")
        check_writable(path)
        self.path, self.index, self.image = Path(path), index, None

    @property
    def taken(self) -> bool:
        return self.image is not None

    def needs_drawing(self, index: int) -> bool:
        return index == self.index

    def write(self, result: FrameResult) -> None:
        if result.index == self.index:
            self.image = result.annotated

    def commit(self) -> None:
        if self.image is not None:
            write_image(self.path, self.image)

    def discard(self) -> None:
        self.image = None


def write_image(path: Path | str, image: np.ndarray) -> None:
    """Save one image (a snapshot) under ``path``, whole or not at all; the suffix picks the format."""
    with atomic_path(path) as temporary:
        try:
            written = cv2.imwrite(str(temporary), image)
        except cv2.error:  # an extension OpenCV has no encoder for
            written = False
        if not written:
            raise OSError(f"{path}: cannot write an image of type {Path(path).suffix!r} there")


def letterbox(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Fit an image inside (width, height), keeping its aspect ratio, on black."""
    width, height = size
    scale = min(width / image.shape[1], height / image.shape[0])
    resized = cv2.resize(image, (max(1, int(image.shape[1] * scale)), max(1, int(image.shape[0] * scale))))
    canvas = np.zeros((height, width, 3), np.uint8)
    top, left = (height - resized.shape[0]) // 2, (width - resized.shape[1]) // 2
    canvas[top:top + resized.shape[0], left:left + resized.shape[1]] = resized
    return canvas
