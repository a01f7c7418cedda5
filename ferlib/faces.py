"""Face detection and alignment: one small interface over offline detectors, and the crop that turns a detected face
into the 48x48 grayscale image the models were trained on.

A detector is a callable: ``detector(frame) -> list[Face]`` for a BGR, BGRA or grayscale uint8 frame. These ship, all
offline (their models are inside the pip wheels):

- ``mediapipe``: MediaPipe 0.10.21's bundled BlazeFace short-range detector (eyes, nose, mouth, ears): 2 ms a frame,
  but only for faces that fill a good part of the frame (a webcam close-up).
- ``mediapipe_full``: the same wheel's full-range BlazeFace (faces farther away; 3x the time, still misses small faces).
- ``yunet``: libfacedetection's YuNet, compiled into the ``yuface`` wheel (eyes, nose, mouth corners): finds faces
  from about 20 px wide upwards, at 10-300 ms a frame depending on its size.
- ``haar``: OpenCV's Haar cascades, the seed's choice: a frontal-face cascade, then an eye cascade inside the box.
- ``auto`` (the default, ``FaceFinder``): YuNet for faces of every size, with MediaPipe short-range for speed on
  video: see ``FaceFinder``. Without MediaPipe installed it is YuNet alone.

``align_face`` rotates the eyes level and crops with the framing the FER2013 images have (``FER_FRAMING``, measured on
the real FER+ test faces by ``measure_framing``: see benchmarks/face_detectors.py), so that a face from a webcam looks
to the model like a face from the training set. The same function builds the face-aligned training set
(``align_fer_images``), so training and the live app crop alike.
"""
from __future__ import annotations

import contextlib
import io
import math
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

DETECTOR_NAMES = ("mediapipe", "mediapipe_full", "yunet", "haar")
MIN_FACE = 10  # pixels: YuNet's enlarged pass finds specks smaller than this, none of them faces


@dataclass(frozen=True)
class Face:
    """One detected face. ``box`` is (x, y, w, h) in pixels, clipped to the frame; ``eyes`` is [[x, y], [x, y]] with
    the eye on the image's left first (the person's right eye), or None when the detector found no eyes;
    ``landmarks`` holds every point the detector gives (K x 2, pixels), for drawing."""
    box: tuple[int, int, int, int]
    score: float
    eyes: np.ndarray | None = None
    landmarks: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    detector: str = ""  # the detector that found it: its FER_FRAMINGS entry crops it


def as_bgr(frame: np.ndarray) -> np.ndarray:
    """A uint8 BGR view of a grayscale, BGR or BGRA frame."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {frame.dtype}")
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
        return cv2.cvtColor(frame.reshape(frame.shape[:2]), cv2.COLOR_GRAY2BGR)
    if frame.ndim == 3 and frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    if frame.ndim == 3 and frame.shape[2] == 3:
        return frame
    raise ValueError(f"expected an image of shape (H, W), (H, W, 3) or (H, W, 4), got {frame.shape}")


def as_gray(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim == 2:
        return frame
    if frame.shape[2] == 1:
        return frame[:, :, 0]
    return cv2.cvtColor(frame, cv2.COLOR_BGRA2GRAY if frame.shape[2] == 4 else cv2.COLOR_BGR2GRAY)


def clip_box(x: float, y: float, w: float, h: float, width: int, height: int) -> tuple[int, int, int, int] | None:
    """The part of a box inside a width x height frame, in whole pixels; None when nothing of it is inside."""
    x0, y0 = max(0, int(round(x))), max(0, int(round(y)))
    x1, y1 = min(width, int(round(x + w))), min(height, int(round(y + h)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    return x0, y0, x1 - x0, y1 - y0


def _make_face(box, score, eyes, landmarks, width: int, height: int, detector: str) -> Face | None:
    clipped = clip_box(*box, width, height)
    if clipped is None:
        return None
    landmarks = np.asarray(landmarks, np.float32).reshape(-1, 2)
    return Face(clipped, float(score), None if eyes is None else np.asarray(eyes, np.float32).reshape(2, 2), landmarks,
                detector)


class NativeOutput:
    """What ``captured_native_stderr`` caught; ``text`` is filled when its ``with`` block ends."""
    text: str = ""


@contextlib.contextmanager
def captured_native_stderr():
    """Keep what native code (libjpeg, libtiff) writes to file descriptor 2 for a while, rather than show it: the
    ``NativeOutput`` yielded holds the text once the block ends."""
    sys.stderr.flush()
    caught = NativeOutput()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        try:
            os.dup2(sink.fileno(), 2)
            yield caught
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            caught.text = sink.read().decode("utf-8", "replace")


@contextlib.contextmanager
def quiet_native_stderr():
    """Hide what native code (TensorFlow Lite, FFmpeg) writes to file descriptor 2 for a while."""
    with captured_native_stderr():
        yield


# mediapipe's metadata pins numpy<2 and protobuf<5, which its face detector does not need: it is installed apart from
# the package's dependencies (requirements-no-deps.txt), so a plain `pip install` of ferlib lacks it
MEDIAPIPE_INSTALL = "`pip install --no-deps mediapipe==0.10.21` (or ./run.sh --setup-only)"


class MediaPipeDetector:
    """MediaPipe's BlazeFace. ``model_selection`` 0 is the short-range model (faces within about 2 m, the webcam case),
    1 the full-range one."""
    name = "mediapipe"

    def __init__(self, min_confidence: float = 0.5, model_selection: int = 0):
        if model_selection not in (0, 1):
            raise ValueError(f"model_selection {model_selection}: expected 0 (short range) or 1 (full range)")
        self.name = "mediapipe" if model_selection == 0 else "mediapipe_full"
        # Importing mediapipe prints a harmless complaint about the protobuf version (through sys.excepthook, which a
        # notebook shows as an error), and its first frame logs TensorFlow Lite start-up lines from native code.
        hook = sys.excepthook
        sys.excepthook = lambda *args: None
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                from mediapipe.python.solutions import face_detection
        finally:
            sys.excepthook = hook
        with quiet_native_stderr():
            self._detector = face_detection.FaceDetection(model_selection=model_selection,
                                                          min_detection_confidence=min_confidence)
            for _ in range(2):  # the graph starts its TensorFlow Lite interpreter on a thread of its own
                self._detector.process(np.full((128, 128, 3), 128, np.uint8))

    def __call__(self, frame: np.ndarray) -> list[Face]:
        bgr = as_bgr(frame)
        height, width = bgr.shape[:2]
        result = self._detector.process(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        faces = []
        for detection in result.detections or []:
            location = detection.location_data
            rel = location.relative_bounding_box
            box = (rel.xmin * width, rel.ymin * height, rel.width * width, rel.height * height)
            points = np.array([[p.x * width, p.y * height] for p in location.relative_keypoints], np.float32)
            # keypoints: the person's right eye (image left), left eye, nose tip, mouth centre, right ear, left ear
            face = _make_face(box, detection.score[0], points[:2] if len(points) >= 2 else None, points, width, height,
                              self.name)
            if face is not None:
                faces.append(face)
        return faces

    def reset(self) -> None:
        pass

    def close(self) -> None:
        self._detector.close()


class YuNetDetector:
    """libfacedetection's YuNet through the ``yuface`` wheel.

    YuNet was trained on frames of a few hundred pixels: on a 2560x1912 photo it misses a 200 px face it finds when
    the photo is shrunk, and it takes 0.3-1 s. So a frame larger than ``tile`` pixels on a side is searched twice:
    whole, shrunk to ``tile`` on its long side (large faces), and in overlapping ``tile`` x ``tile`` windows at full
    resolution (faces from about 40 px wide); the passes' faces are merged. ``upscale`` (2.5 for photos) adds a
    third pass over the frame enlarged that many times, for faces of 20-40 px: 6 times the work of the second pass,
    so the enlarged frame's long side is kept to ``max_upscaled`` pixels, and the pass is skipped where that leaves
    less than 1.5x (photos over 3,200 px, whose faces that small are a tiny part of the picture). ``tile=None``
    searches the whole frame once, as it is.
    """
    name = "yunet"

    def __init__(self, min_confidence: float = 0.5, tile: int | None = 640, upscale: float = 1.0,
                 max_upscaled: int = 4800, threads: int | str | None = None):
        import yuface
        check_threads(threads, "threads")
        if tile is not None and tile < 64:
            raise ValueError(f"tile {tile}: expected at least 64 pixels, or None")
        if upscale < 1.0:
            raise ValueError(f"upscale {upscale}: expected 1 (none) or more")
        self._detect = yuface.detect
        self.min_confidence, self.tile, self.upscale, self.max_upscaled = min_confidence, tile, upscale, max_upscaled
        self.threads = threads
        self._openmp = _yuface_openmp() if threads is not None else ()

    def __call__(self, frame: np.ndarray) -> list[Face]:
        threads = self.threads
        if threads == THREADS_AUTO:  # one on a busy machine; elsewhere the process's setting, every core
            threads = 1 if other_programs_busy() else None
        # set for this call only: the runtime may be torch's too, whose thread count must not change under it
        before = [(runtime, runtime.omp_get_max_threads()) for runtime in self._openmp] if threads else []
        for runtime, _ in before:
            runtime.omp_set_num_threads(threads)
        try:
            return self._detect_faces(frame)
        finally:
            for runtime, threads in before:
                runtime.omp_set_num_threads(threads)

    def _detect_faces(self, frame: np.ndarray) -> list[Face]:
        bgr = as_bgr(frame)
        height, width = bgr.shape[:2]
        longest = max(height, width)
        if self.tile is None:
            return self._search(bgr, width, height)
        faces = self._search_windows(bgr, 1.0, width, height)
        if longest > self.tile:
            # a window sees a large thing without what surrounds it, and a hand or a shoulder filling most of it can
            # pass for a face; large faces are the shrunk pass's, where they are still 48 px or more
            largest = max(self.tile / 2, 48 * longest / self.tile)
            faces = [face for face in faces if face.box[2] <= largest]
            scale = self.tile / longest
            shrunk = cv2.resize(bgr, (max(1, round(width * scale)), max(1, round(height * scale))),
                                interpolation=cv2.INTER_AREA)
            faces += self._search(shrunk, width, height, scale=scale)
        factor = min(self.upscale, self.max_upscaled / longest)
        if factor >= 1.5:  # less would cost as much and find little that the full-resolution pass does not
            enlarged = cv2.resize(bgr, (round(width * factor), round(height * factor)), interpolation=cv2.INTER_LINEAR)
            # this pass is for the faces too small for the others; enlarged, YuNet boxes a larger face less well
            small = self.tile / 4 / factor
            faces += [face for face in self._search_windows(enlarged, factor, width, height) if face.box[2] <= small]
        return merge_faces(faces)

    def _search_windows(self, image: np.ndarray, scale: float, width: int, height: int) -> list[Face]:
        """YuNet in overlapping tile x tile windows of ``image`` (the frame scaled by ``scale``). A face touching a
        window's edge inside the image may be cut there and found whole in a neighbouring window or another pass, so
        it is dropped: a half face scores as high as a whole one."""
        stride = self.tile * 3 // 4  # windows overlap by a quarter, so a face up to tile / 4 wide is whole in one
        image_height, image_width = image.shape[:2]
        faces = []
        for top in _window_starts(image_height, self.tile, stride):
            for left in _window_starts(image_width, self.tile, stride):
                window = image[top:top + self.tile, left:left + self.tile]
                inner = (left > 0, top > 0, left + window.shape[1] < image_width, top + window.shape[0] < image_height)
                faces += self._search(window, width, height, scale=scale, offset=(left / scale, top / scale),
                                      inner_edges=inner)
        return faces

    def _search(self, bgr: np.ndarray, width: int, height: int, scale: float = 1.0,
                offset: tuple[float, float] = (0, 0), inner_edges=(False, False, False, False)) -> list[Face]:
        """YuNet on one image, its faces mapped to a width x height frame (``bgr`` is that frame scaled by ``scale``,
        or a window of it whose corner is at ``offset`` in the frame). Faces touching one of ``inner_edges`` (left,
        top, right, bottom) and faces under MIN_FACE pixels wide in the frame are dropped."""
        scores, boxes, landmarks = self._detect(np.ascontiguousarray(bgr), conf=self.min_confidence)
        shift = np.array(offset, np.float32)
        image_height, image_width = bgr.shape[:2]
        faces = []
        for score, box, points in zip(scores, boxes, landmarks):
            x, y, w, h = (int(v) for v in box)
            touches = (x <= 1, y <= 1, x + w >= image_width - 1, y + h >= image_height - 1)
            if any(inner and touching for inner, touching in zip(inner_edges, touches)) or w / scale < MIN_FACE:
                continue
            # points: the person's right eye (image left), left eye, nose tip, right and left mouth corners
            points = np.asarray(points, np.float32).reshape(5, 2) / scale + shift
            box = np.asarray(box, np.float32) / scale
            box[:2] += shift
            face = _make_face(box, float(score) / 100.0, points[:2], points, width, height, self.name)
            if face is not None:
                faces.append(face)
        return faces

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass


# yuface warns about every image over 960 px, which the windows and the shrunk pass see to; filtered once here rather
# than around each call, since warnings.catch_warnings is not safe while another thread (a frame loop's) warns
warnings.filterwarnings("ignore", message=r"Image size .* is too large", category=UserWarning, module="yuface")

THREADS_AUTO = "auto"  # YuNet's threads chosen at each call: the process's (every core) when idle, one when busy
_BUSY_CHECKED = {"at": -1e9, "busy": None}  # the last measurement, reused for a few seconds


def check_threads(threads, what: str) -> None:
    """ValueError unless ``threads`` is a whole number >= 1, "auto" or None."""
    if threads is None or threads == THREADS_AUTO:
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"{what} {threads!r}: expected a whole number, 1 or more, {THREADS_AUTO!r} (every core on "
                         "an idle machine, one on a busy one) or None (the process's setting)")


def other_programs_busy(interval: float = 0.05, reuse_s: float = 5.0) -> bool | None:
    """Whether other programs keep half a core or more busy: the machine's busy share of CPU time over ``interval``
    seconds while this thread sleeps (Linux's /proc/stat), times the core count. None where it cannot be read. A
    measurement is reused for ``reuse_s`` seconds, so a folder of photos pays for it once every few photos."""
    now = time.monotonic()
    if now - _BUSY_CHECKED["at"] < reuse_s:
        return _BUSY_CHECKED["busy"]

    def busy_and_total() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            ticks = [int(value) for value in stat.readline().split()[1:9]]  # user nice system idle iowait irq ...
        return sum(ticks) - ticks[3] - ticks[4], sum(ticks)

    try:
        busy_before, total_before = busy_and_total()
        time.sleep(interval)
        busy_after, total_after = busy_and_total()
    except (OSError, ValueError, IndexError):
        busy = None
    else:
        elapsed = total_after - total_before
        busy = None if elapsed <= 0 else (busy_after - busy_before) / elapsed * (os.cpu_count() or 1) >= 0.5
    _BUSY_CHECKED.update(at=time.monotonic(), busy=busy)
    return busy


def _yuface_openmp() -> tuple:
    """The OpenMP runtimes through which YuNet's thread count is set (``omp_set_num_threads`` applies to the calling
    thread): the one in the process's global scope, where there is one, and the libgomp the yuface wheel bundles.
    torch loads its own libgomp into the global scope, and the dynamic linker binds yuface's OpenMP calls there
    first: with torch imported, setting the bundled copy alone changed nothing. Its threads wait for work by
    spinning, so while another program keeps a core busy one thread is faster than two (``benchmarks/yunet_threads.py``
    measures both)."""
    import ctypes
    import glob

    import yuface

    runtimes = []
    with contextlib.suppress(OSError):
        process = ctypes.CDLL(None)
        if hasattr(process, "omp_get_max_threads") and hasattr(process, "omp_set_num_threads"):
            runtimes.append(process)
    libraries = glob.glob(os.path.join(os.path.dirname(os.path.dirname(yuface.__file__)), "yuface.libs", "libgomp*"))
    if libraries:
        runtimes.append(ctypes.CDLL(libraries[0]))
    return tuple(runtimes)


def _window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows of ``window`` pixels every ``stride`` pixels that cover ``length``; the last ends at
    the edge."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride))
    return starts + [length - window]


class HaarDetector:
    """OpenCV's frontal-face Haar cascade, then the eye cascade in the upper half of each face for alignment."""
    name = "haar"

    def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 5, min_size: int = 24, find_eyes: bool = True):
        self._faces = _cascade("haarcascade_frontalface_default.xml")
        self._eyes = _cascade("haarcascade_eye.xml") if find_eyes else None
        self.scale_factor, self.min_neighbors, self.min_size = scale_factor, min_neighbors, min_size

    def __call__(self, frame: np.ndarray) -> list[Face]:
        gray = as_gray(as_bgr(frame))
        height, width = gray.shape
        boxes, _, weights = self._faces.detectMultiScale3(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size), outputRejectLevels=True)
        faces = []
        for box, weight in zip(boxes, weights):
            eyes = self._find_eyes(gray, box) if self._eyes is not None else None
            face = _make_face(box, float(weight), eyes, eyes if eyes is not None else np.zeros((0, 2)), width, height,
                              self.name)
            if face is not None:
                faces.append(face)
        return faces

    def _find_eyes(self, gray: np.ndarray, box) -> np.ndarray | None:
        x, y, w, h = (int(v) for v in box)
        upper = gray[y:y + h // 2 + h // 8, x:x + w]
        found = self._eyes.detectMultiScale(upper, scaleFactor=1.1, minNeighbors=3,
                                            minSize=(max(4, w // 8), max(4, w // 8)), maxSize=(w // 2, w // 2))
        if len(found) < 2:
            return None
        centres = np.array([[ex + ew / 2, ey + eh / 2] for ex, ey, ew, eh in found], np.float32)
        # one eye in each half of the face, the largest candidate on each side
        sizes = np.array([ew for _, _, ew, _ in found])
        left = [i for i in range(len(found)) if centres[i, 0] < w / 2]
        right = [i for i in range(len(found)) if centres[i, 0] >= w / 2]
        if not left or not right:
            return None
        pair = centres[[max(left, key=lambda i: sizes[i]), max(right, key=lambda i: sizes[i])]]
        return pair + np.array([x, y], np.float32)

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass


def _cascade(filename: str) -> cv2.CascadeClassifier:
    path = os.path.join(cv2.data.haarcascades, filename)
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise RuntimeError(f"could not load OpenCV's Haar cascade {path}")
    return cascade


def box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    overlap_w = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    overlap_h = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    overlap = overlap_w * overlap_h
    union = a[2] * a[3] + b[2] * b[3] - overlap
    return overlap / union if union > 0 else 0.0


def holds_centre(box: tuple[int, int, int, int], other: tuple[int, int, int, int]) -> bool:
    """Whether ``box`` holds the centre of ``other`` (both (x, y, w, h))."""
    centre_x, centre_y = other[0] + other[2] / 2, other[1] + other[3] / 2
    return box[0] <= centre_x <= box[0] + box[2] and box[1] <= centre_y <= box[1] + box[3]


def same_place(face: Face, other: Face, min_iou: float = 0.3) -> bool:
    """Whether two detections are one face: their boxes overlap (IoU >= min_iou) or either holds the other's
    centre. Both ways, since two detectors frame one face differently: MediaPipe's box on a face YuNet framed
    tightly can sit over the chin, its centre just outside YuNet's box while holding YuNet's centre."""
    return (box_iou(face.box, other.box) >= min_iou
            or holds_centre(other.box, face.box) or holds_centre(face.box, other.box))


def merge_faces(faces: list[Face], min_iou: float = 0.3) -> list[Face]:
    """One face per place (see ``same_place``): the one with the higher score."""
    kept: list[Face] = []
    for face in sorted(faces, key=lambda f: -f.score):
        if not any(same_place(face, other, min_iou) for other in kept):
            kept.append(face)
    return kept


FACE_COLUMNS = 15  # a face between the search worker and BackgroundSearch: x, y, w, h, score, 5 landmarks (x, y)


def faces_to_rows(faces: list[Face]) -> np.ndarray:
    return np.array([[*face.box, face.score, *face.landmarks.ravel()] for face in faces],
                    np.float32).reshape(-1, FACE_COLUMNS)


def faces_from_rows(rows: np.ndarray, detector: str = YuNetDetector.name) -> list[Face]:
    faces = []
    for row in rows:
        landmarks = row[5:].reshape(5, 2)
        faces.append(Face(tuple(int(v) for v in row[:4]), float(row[4]), landmarks[:2].copy(), landmarks.copy(),
                          detector))
    return faces


def write_npy(stream, array: np.ndarray) -> None:
    """``array`` to a pipe in the ``.npy`` format (numpy's own writer wants a seekable file for raw data)."""
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
    stream.write(buffer.getbuffer())
    stream.flush()


def read_npy(stream) -> np.ndarray:
    """The next ``.npy`` array from a pipe; EOFError at its end (no pickles: object arrays are refused)."""
    if not stream.peek(1):
        raise EOFError("the pipe is closed")
    version = np.lib.format.read_magic(stream)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran_order, dtype = read_header(stream)
    if dtype.hasobject:
        raise ValueError("an object array: refused")
    size = math.prod(shape) * dtype.itemsize
    data = stream.read(size)
    if len(data) != size:
        raise EOFError("the pipe closed inside an array")
    return np.frombuffer(data, dtype).reshape(shape, order="F" if fortran_order else "C")


class BackgroundSearch:
    """YuNet's thorough search (``YuNetDetector`` with the enlarged pass that finds faces of 20-40 px) in a separate,
    low-priority process, so that a search of 0.1-2 s a frame runs beside a video's frame loop instead of stopping it.

    ``submit(frame)`` hands a frame over when the worker is free (False when it is still searching the last one);
    ``results()`` is the faces of the last frame searched, once, or None while there is nothing new. The worker
    (``python -m ferlib.face_search``) runs under Linux's idle scheduling class (elsewhere at nice 10), so it gets
    only the CPU that the frame loop and other programs leave: a thread of theirs that wakes takes the core from it
    at once, where at nice 10 the kernel may let the worker run on for a while first. Frames and faces cross its
    pipes as ``.npy`` arrays (nothing is unpickled); a frame is written by a thread of its own, so the frame loop
    never waits for the pipe (a 1080p frame is 6 MB, a hundred pipe buffers). If the worker cannot start or dies,
    ``alive`` turns False and the caller searches in its own process instead.
    """

    def __init__(self, min_confidence: float = 0.5, upscale: float = 2.5, niceness: int = 10):
        package_root = str(Path(__file__).resolve().parent.parent)  # a source checkout: the worker imports ferlib
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join(
            filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "ferlib.face_search", str(min_confidence), str(upscale), str(niceness)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=environment)
        self._answers: queue.Queue = queue.Queue()
        self._frames: queue.Queue = queue.Queue()  # frames to write; None closes the worker's input
        self._sent = self._received = self._stale = 0
        self.alive = True
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._writer = threading.Thread(target=self._write, daemon=True)
        self._writer.start()

    def _write(self) -> None:
        """Hand the frames over, as they come (on a thread: writing a pipe waits without holding the GIL)."""
        try:
            while (frame := self._frames.get()) is not None:
                write_npy(self._process.stdin, frame)
            self._process.stdin.close()
        except (OSError, ValueError):  # the worker has exited
            self.alive = False

    def _read(self) -> None:
        """The worker's answers, as they come (on a thread: reading a pipe waits without holding the GIL)."""
        try:
            while True:
                self._answers.put(read_npy(self._process.stdout))
        except Exception:  # end of file or a broken answer: the worker is gone
            self.alive = False

    @property
    def busy(self) -> bool:
        return self._sent > self._received

    def submit(self, frame: np.ndarray) -> bool:
        """Start a search of ``frame`` unless one is under way (False then, or when the worker is gone)."""
        if not self.alive or self.busy:
            return False
        self._frames.put(np.array(as_bgr(frame)))  # a copy: the caller may draw on its frame meanwhile
        self._sent += 1
        return True

    def results(self) -> list[Face] | None:
        """The faces of the last frame searched, in that frame's pixels; None while no new search has finished."""
        try:
            rows = self._answers.get_nowait()
        except queue.Empty:
            return None
        self._received += 1
        if self._received <= self._stale:  # asked for before reset(): another video's frame
            return None
        return faces_from_rows(rows)

    def reset(self) -> None:
        """Forget the search under way: its faces belong to the frames before."""
        self._stale = self._sent

    def close(self) -> None:
        if self.busy:  # a search nobody will read: stop it rather than wait for it
            self._process.kill()
        self._frames.put(None)
        self._writer.join(timeout=2)
        try:
            self._process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._reader.join(timeout=2)  # it ends at the closed pipe's end of file
        for pipe in (self._process.stdin, self._process.stdout):
            pipe.close()  # the writer may have stopped before closing stdin (a killed worker)
        self.alive = False


def serve_search(arguments: list[str]) -> int:
    """The worker behind ``BackgroundSearch``: frames in on stdin, their faces out on stdout, until stdin closes."""
    min_confidence, upscale, niceness = float(arguments[0]), float(arguments[1]), int(arguments[2])
    with contextlib.suppress(OSError, AttributeError):  # os.nice does not exist on Windows
        os.nice(niceness)
    with contextlib.suppress(OSError, AttributeError):  # Linux only; nice 10 stands elsewhere
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    detector = YuNetDetector(min_confidence, upscale=upscale, threads=1)
    frames, answers = sys.stdin.buffer, sys.stdout.buffer
    while True:
        try:
            frame = read_npy(frames)
        except (ValueError, EOFError, OSError):  # stdin closed: the video is over
            return 0
        write_npy(answers, faces_to_rows(detector(frame)))


class FaceFinder:
    """The default detector (``auto``): faces of every size, fast on video.

    MediaPipe's short-range model is fast (2 ms) but finds only faces that fill a good part of the frame; YuNet finds
    faces of every size, at a cost that grows with the frame (see ``YuNetDetector``; benchmarks/face_sizes.py
    measures both). For a photo (``video=False``) both run on the whole image, YuNet with its enlarged pass for faces
    down to 20-30 px, and their faces are merged.

    On video (``video=True``) MediaPipe runs on every frame and YuNet searches the first frame whole (without the
    enlarged pass). After that the photo-grade search (enlarged pass included) runs in a low-priority process of its
    own (``BackgroundSearch``) on a frame every ``refresh`` frames (2 s at 30 fps) or, where it takes longer, as
    soon as it is free: the frame loop never waits for it. A face that only YuNet found is followed from frame to
    frame by a search in a window twice its size around where it was (small faces enlarged), which costs little; a
    face the background search finds is first looked for so in the current frame, since it may have moved. So a face
    that only YuNet can see, 32 px wide in a 1080p frame included, is found a search later and then followed.
    ``background=False`` (or a worker that cannot start) searches whole frames in the loop instead, every
    ``refresh`` frames, without the enlarged pass. Without MediaPipe installed, YuNet runs alone on every frame.
    ``threads``: YuNet's threads for a photo's search (None: the process's setting; "auto": every core on an idle
    machine, one where other programs keep a core busy, as ``other_programs_busy`` finds at the call); one holds its
    speed when other programs share the CPU, where two wait on each other (benchmarks/yunet_threads.py).
    """
    name = "auto"

    def __init__(self, min_confidence: float = 0.5, video: bool = False, refresh: int = 60, background: bool = True,
                 threads: int | str | None = None):
        if refresh < 1:
            raise ValueError(f"refresh {refresh}: expected 1 or more frames")
        # photos can afford the enlarged pass for faces of 20-40 px (about 2 s for a 1920x1080 photo); video cannot
        # in its frame loop. There a whole-frame search, once a video or every `refresh` frames, takes every core; the
        # window searches of every frame take one thread, which holds its speed when other programs share the CPU
        if video:
            self.thorough = YuNetDetector(min_confidence)
        else:
            self.thorough = YuNetDetector(min_confidence, upscale=2.5, threads=threads)
        self.window_search = YuNetDetector(min_confidence, tile=None, threads=1 if video else None)
        try:
            self.fast = MediaPipeDetector(min_confidence)
        except ImportError:
            self.fast = None
            if video:  # photos lose little without it; video loses most of its speed, unexplained unless said
                warnings.warn("mediapipe is not installed: the auto detector searches every frame with YuNet alone, "
                              f"several times slower on video; {MEDIAPIPE_INSTALL} installs it", RuntimeWarning,
                              stacklevel=2)
        self.background = None
        if video and background and self.fast is not None:
            try:
                self.background = BackgroundSearch(min_confidence, upscale=2.5)
            except OSError:  # no process can be started here: search in the loop
                pass
        self.video, self.refresh = video, refresh
        self.reset()

    def reset(self) -> None:
        self.frames_since_refresh = None  # None: the next frame is searched whole
        self.followed: list[Face] = []  # faces only YuNet found, to look for again in the next frame
        self.background_searches = 0  # background searches whose faces this video has used
        self.search_wanted = False
        if self.background is not None:
            self.background.reset()

    def __call__(self, frame: np.ndarray) -> list[Face]:
        frame = as_bgr(frame)
        fast = self.fast(frame) if self.fast is not None else []
        if not self.video or self.fast is None:
            return merge_faces(fast + self.thorough(frame))
        background = self.background if self.background is not None and self.background.alive else None
        if self.frames_since_refresh is None:
            self.frames_since_refresh = 0
            self.search_wanted = True  # the background search too, as soon as it is free
            thorough = self.thorough(frame)
        else:
            self.frames_since_refresh += 1
            thorough = [found for face in self.followed if (found := self._look_again(frame, face)) is not None]
            if background is None and self.frames_since_refresh >= self.refresh:
                self.frames_since_refresh = 0
                thorough = self.thorough(frame)
        if background is not None:
            thorough += self._background_faces(frame, background, fast + thorough)
            if (self.search_wanted or self.frames_since_refresh >= self.refresh) and background.submit(frame):
                self.search_wanted, self.frames_since_refresh = False, 0
        faces = merge_faces(fast + thorough)
        self.followed = [face for face in faces if face.detector == self.thorough.name]
        return faces

    def _background_faces(self, frame: np.ndarray, background: BackgroundSearch, known: list[Face]) -> list[Face]:
        """The new faces of a finished background search, each looked for again in this frame (where the window
        search misses it, the search's own box stands: it is a few frames old at most)."""
        found = background.results()
        if found is None:
            return []
        self.background_searches += 1
        new = [face for face in found if not any(same_place(face, other) for other in known)]
        return [self._look_again(frame, face) or face for face in new]

    def _look_again(self, frame: np.ndarray, face: Face) -> Face | None:
        """The face in a window of twice its size around where it was, in frame coordinates; a small face's window
        is enlarged so that the face is about 80 px wide, which YuNet finds far more surely than 20-40 px."""
        height, width = frame.shape[:2]
        x, y, w, h = face.box
        x0, y0 = max(0, x - w // 2), max(0, y - h // 2)
        x1, y1 = min(width, x + w + w // 2), min(height, y + h + h // 2)
        window = frame[y0:y1, x0:x1]
        scale = min(4.0, 80 / max(w, 1))
        if scale > 1.25:
            window = cv2.resize(window, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        else:
            scale = 1.0
        found = self.window_search(window)
        if not found:
            return None
        best = max(found, key=lambda f: f.score)
        shift = np.array([x0, y0], np.float32)
        box = clip_box(best.box[0] / scale + x0, best.box[1] / scale + y0, best.box[2] / scale, best.box[3] / scale,
                       width, height)
        if box is None:
            return None
        return Face(box, best.score, None if best.eyes is None else best.eyes / scale + shift,
                    best.landmarks / scale + shift, best.detector)

    def close(self) -> None:
        if self.fast is not None:
            self.fast.close()
        if self.background is not None:
            self.background.close()


def _build_one(name: str, **kwargs):
    if name == "auto":
        return FaceFinder(**kwargs)
    if name in ("mediapipe", "mediapipe_full"):
        return MediaPipeDetector(model_selection=int(name == "mediapipe_full"), **kwargs)
    if name == "yunet":
        return YuNetDetector(**kwargs)
    if name == "haar":
        return HaarDetector(**kwargs)
    raise ValueError(f"unknown detector {name!r}: expected one of {', '.join(('auto',) + DETECTOR_NAMES)}")


def build_detector(name: str = "auto", **kwargs):
    """A detector by name: ``auto`` (``FaceFinder``; ``video=True`` for frames of one video) or one of
    DETECTOR_NAMES, with its keyword arguments."""
    try:
        return _build_one(name, **kwargs)
    except ImportError as error:
        hint = MEDIAPIPE_INSTALL if name.startswith("mediapipe") else "./run.sh --setup-only installs every detector"
        raise ImportError(f"the {name} detector needs a package that is not installed ({error}); {hint}") from error


def available_detectors() -> list[str]:
    """The names of the detectors that work here (their packages import)."""
    names = []
    for name in DETECTOR_NAMES:
        try:
            build_detector(name).close()
            names.append(name)
        except ImportError:
            pass
    return names


@dataclass(frozen=True)
class Framing:
    """Where a face sits in a FER2013 image, in pixels of the 48x48 frame: the midpoint between the eyes and the
    distance between them (for faces with eyes), and the detector's box centre and width (for faces without)."""
    eye_center: tuple[float, float]
    eye_distance: float
    box_center: tuple[float, float]
    box_width: float
    size: int = 48


# Medians over the first 1,000 FER+ test faces, each enlarged and bordered by fer_detection_frame; re-measured by
# `python benchmarks/face_detectors.py` and checked against these by tests/test_faces.py on the real data.
FER_FRAMINGS = {
    "mediapipe": Framing(eye_center=(24.08, 19.09), eye_distance=17.59, box_center=(24.12, 27.5), box_width=40.5),
    "mediapipe_full": Framing(eye_center=(23.98, 18.89), eye_distance=16.22, box_center=(24.0, 25.75), box_width=41.5),
    "yunet": Framing(eye_center=(23.88, 18.62), eye_distance=17.52, box_center=(24.0, 23.5), box_width=37.75),
    "haar": Framing(eye_center=(23.56, 18.31), eye_distance=18.08, box_center=(24.0, 23.75), box_width=46.75),
}


def alignment_matrix(face: Face, framing: Framing, size: int = 48) -> np.ndarray:
    """The 2x3 affine map from frame pixels to the size x size crop: eyes level and placed as in FER2013 when the face
    has eyes, otherwise the box scaled and centred as FER2013's faces are (no rotation)."""
    zoom = size / framing.size
    if face.eyes is not None:
        (lx, ly), (rx, ry) = face.eyes
        angle = math.degrees(math.atan2(ry - ly, rx - lx))
        distance = math.hypot(rx - lx, ry - ly)
        scale = framing.eye_distance * zoom / max(distance, 1e-3)
        # a face turned aside has its eyes close together: do not zoom in much further than its box says
        scale = min(scale, 1.15 * framing.box_width * zoom / max(face.box[2], 1))
        centre = ((lx + rx) / 2, (ly + ry) / 2)
        target = (framing.eye_center[0] * zoom, framing.eye_center[1] * zoom)
    else:
        x, y, w, h = face.box
        angle, scale = 0.0, framing.box_width * zoom / max(w, 1)
        centre = (x + w / 2, y + h / 2)
        target = (framing.box_center[0] * zoom, framing.box_center[1] * zoom)
    matrix = cv2.getRotationMatrix2D(centre, angle, scale)
    matrix[:, 2] += np.array(target) - np.array(centre)
    return matrix


def align_face(frame: np.ndarray, face: Face, framing: Framing | str | None = None, size: int = 48) -> np.ndarray:
    """The face as a size x size uint8 grayscale crop framed like a FER2013 image (by default with the framing of
    the detector that found it). Parts of the crop outside the frame repeat the frame's edge, as FER2013's own crops
    of faces near the border do not have black bands either."""
    if framing is None:
        framing = face.detector if face.detector in FER_FRAMINGS else "mediapipe"
    if isinstance(framing, str):
        framing = FER_FRAMINGS[framing]
    matrix = alignment_matrix(face, framing, size)
    # area-style smoothing before a large shrink, or a webcam face turns to aliased noise at 48x48
    shrink = matrix[0, 0] ** 2 + matrix[0, 1] ** 2
    sigma = 0.25 / math.sqrt(shrink) if shrink < 0.25 else 0.0
    # Only the part of the frame the crop samples is converted to gray and smoothed (the whole of a 1080p frame would
    # cost milliseconds): the crop's corners mapped back into the frame, plus the blur's reach. Inside that margin the
    # result is the same as from the whole frame; where the window meets the frame's edge, so are the borders.
    corners = cv2.invertAffineTransform(matrix) @ np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]],
                                                           np.float64).T
    margin = math.ceil(4 * sigma) + 2
    height, width = frame.shape[:2]
    x0, y0 = max(0, math.floor(corners[0].min()) - margin), max(0, math.floor(corners[1].min()) - margin)
    x1, y1 = min(width, math.ceil(corners[0].max()) + margin + 1), min(height, math.ceil(corners[1].max()) + margin + 1)
    if x1 <= x0 or y1 <= y0:  # a crop wholly outside the frame (a box at its very edge): use the whole frame
        x0, y0, x1, y1 = 0, 0, width, height
    gray = as_gray(as_bgr(frame[y0:y1, x0:x1]))
    if sigma:
        gray = cv2.GaussianBlur(gray, (0, 0), sigma)
    window_matrix = matrix.copy()
    window_matrix[:, 2] += matrix[:, :2] @ np.array([x0, y0], np.float64)
    return cv2.warpAffine(gray, window_matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


# FER2013 images are 48x48 and fill the frame with the face; detectors look for faces with some context around them
# and at least a few dozen pixels wide, so each training image is enlarged and given a border before detection.
FER_UPSCALE = 4
FER_BORDER = 48


def fer_detection_frame(image: np.ndarray) -> np.ndarray:
    """A 48x48 FER image prepared for a detector: enlarged FER_UPSCALE times, with a FER_BORDER-pixel replicated edge."""
    big = cv2.resize(image, None, fx=FER_UPSCALE, fy=FER_UPSCALE, interpolation=cv2.INTER_CUBIC)
    return cv2.copyMakeBorder(big, FER_BORDER, FER_BORDER, FER_BORDER, FER_BORDER, cv2.BORDER_REPLICATE)


def detect_in_fer_image(detector, image: np.ndarray) -> Face | None:
    """The most confident face a detector finds in a 48x48 FER image, in that image's own pixel coordinates."""
    faces = detector(fer_detection_frame(image))
    if not faces:
        return None
    face = max(faces, key=lambda f: f.score)

    def to_fer(points):
        return None if points is None else (np.asarray(points, np.float32) - FER_BORDER) / FER_UPSCALE

    x, y, w, h = face.box
    box = ((x - FER_BORDER) / FER_UPSCALE, (y - FER_BORDER) / FER_UPSCALE, w / FER_UPSCALE, h / FER_UPSCALE)
    return Face(tuple(float(v) for v in box), face.score, to_fer(face.eyes), to_fer(face.landmarks))


def measure_framing(faces: list[Face | None], size: int = 48) -> tuple[Framing, dict]:
    """The median framing of faces found in FER images (from ``detect_in_fer_image``), and how many had eyes."""
    found = [f for f in faces if f is not None]
    with_eyes = [f for f in found if f.eyes is not None]
    if not found:
        raise ValueError("no faces were found, so no framing can be measured")
    if with_eyes:
        eyes = np.stack([f.eyes for f in with_eyes])
        centres = eyes.mean(axis=1)
        distances = np.linalg.norm(eyes[:, 1] - eyes[:, 0], axis=1)
        eye_center = tuple(float(v) for v in np.median(centres, axis=0))
        eye_distance = float(np.median(distances))
    else:
        eye_center, eye_distance = (size / 2, size * 0.4), size * 0.375
    boxes = np.array([f.box for f in found], np.float64)
    box_center = tuple(float(v) for v in np.median(boxes[:, :2] + boxes[:, 2:] / 2, axis=0))
    framing = Framing(tuple(round(v, 2) for v in eye_center), round(eye_distance, 2),
                      tuple(round(v, 2) for v in box_center), round(float(np.median(boxes[:, 2])), 2), size)
    stats = {"faces": len(faces), "found": len(found), "with_eyes": len(with_eyes)}
    return framing, stats
