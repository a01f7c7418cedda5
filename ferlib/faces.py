"""Face detection and alignment: one small interface over offline detectors, and the crop that turns a detected face
into the 48x48 grayscale image the models were trained on.

A detector is a callable: ``detector(frame) -> list[Face]`` for a BGR, BGRA or grayscale uint8 frame. Three ship, all
offline (their models are inside the pip wheels):

- ``mediapipe``: MediaPipe 0.10.21's bundled BlazeFace short-range detector (eyes, nose, mouth, ears). The default.
- ``yunet``: libfacedetection's YuNet, compiled into the ``yuface`` wheel (eyes, nose, mouth corners).
- ``haar``: OpenCV's Haar cascades, the seed's choice: a frontal-face cascade, then an eye cascade inside the box.

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
import sys
from dataclasses import dataclass, field

import cv2
import numpy as np

DETECTOR_NAMES = ("mediapipe", "yunet", "haar")


@dataclass(frozen=True)
class Face:
    """One detected face. ``box`` is (x, y, w, h) in pixels, clipped to the frame; ``eyes`` is [[x, y], [x, y]] with
    the eye on the image's left first (the person's right eye), or None when the detector found no eyes;
    ``landmarks`` holds every point the detector gives (K x 2, pixels), for drawing."""
    box: tuple[int, int, int, int]
    score: float
    eyes: np.ndarray | None = None
    landmarks: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))


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


def _make_face(box, score, eyes, landmarks, width: int, height: int) -> Face | None:
    clipped = clip_box(*box, width, height)
    if clipped is None:
        return None
    landmarks = np.asarray(landmarks, np.float32).reshape(-1, 2)
    return Face(clipped, float(score), None if eyes is None else np.asarray(eyes, np.float32).reshape(2, 2), landmarks)


@contextlib.contextmanager
def _quiet_native_stderr():
    """Send what native code writes to file descriptor 2 to /dev/null for a while."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class MediaPipeDetector:
    """MediaPipe's BlazeFace. ``model_selection`` 0 is the short-range model (faces within about 2 m, the webcam case),
    1 the full-range one."""
    name = "mediapipe"

    def __init__(self, min_confidence: float = 0.5, model_selection: int = 0):
        # Importing mediapipe prints a harmless complaint about the protobuf version (through sys.excepthook, which a
        # notebook shows as an error), and its first frame logs TensorFlow Lite start-up lines from native code.
        hook = sys.excepthook
        sys.excepthook = lambda *args: None
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                from mediapipe.python.solutions import face_detection
        finally:
            sys.excepthook = hook
        with _quiet_native_stderr():
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
            face = _make_face(box, detection.score[0], points[:2] if len(points) >= 2 else None, points, width, height)
            if face is not None:
                faces.append(face)
        return faces

    def close(self) -> None:
        self._detector.close()


class YuNetDetector:
    """libfacedetection's YuNet through the ``yuface`` wheel."""
    name = "yunet"

    def __init__(self, min_confidence: float = 0.5):
        import yuface
        self._detect = yuface.detect
        self.min_confidence = min_confidence

    def __call__(self, frame: np.ndarray) -> list[Face]:
        bgr = np.ascontiguousarray(as_bgr(frame))
        height, width = bgr.shape[:2]
        scores, boxes, landmarks = self._detect(bgr, conf=self.min_confidence)
        faces = []
        for score, box, points in zip(scores, boxes, landmarks):
            # points: the person's right eye (image left), left eye, nose tip, right and left mouth corners
            points = np.asarray(points, np.float32).reshape(5, 2)
            face = _make_face(box, float(score) / 100.0, points[:2], points, width, height)
            if face is not None:
                faces.append(face)
        return faces

    def close(self) -> None:
        pass


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
            face = _make_face(box, float(weight), eyes, eyes if eyes is not None else np.zeros((0, 2)), width, height)
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

    def close(self) -> None:
        pass


def _cascade(filename: str) -> cv2.CascadeClassifier:
    path = os.path.join(cv2.data.haarcascades, filename)
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise RuntimeError(f"could not load OpenCV's Haar cascade {path}")
    return cascade


_DETECTORS = {"mediapipe": MediaPipeDetector, "yunet": YuNetDetector, "haar": HaarDetector}


def build_detector(name: str = "auto", **kwargs):
    """A detector by name; "auto" is the best one that imports here (mediapipe, then yunet, then haar)."""
    if name == "auto":
        for candidate in DETECTOR_NAMES:
            try:
                return _DETECTORS[candidate](**kwargs)
            except ImportError:
                continue
    if name not in _DETECTORS:
        raise ValueError(f"unknown detector {name!r}: expected one of {', '.join(('auto',) + DETECTOR_NAMES)}")
    try:
        return _DETECTORS[name](**kwargs)
    except ImportError as error:
        raise ImportError(f"the {name} detector needs a package that is not installed ({error}); "
                          "./run.sh --setup-only installs every detector") from error


def available_detectors() -> list[str]:
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


def align_face(frame: np.ndarray, face: Face, framing: Framing | str = "mediapipe", size: int = 48) -> np.ndarray:
    """The face as a size x size uint8 grayscale crop framed like a FER2013 image. Parts of the crop outside the frame
    repeat the frame's edge, as FER2013's own crops of faces near the border do not have black bands either."""
    if isinstance(framing, str):
        framing = FER_FRAMINGS[framing]
    gray = as_gray(as_bgr(frame))
    matrix = alignment_matrix(face, framing, size)
    # area-style smoothing before a large shrink, or a webcam face turns to aliased noise at 48x48
    shrink = matrix[0, 0] ** 2 + matrix[0, 1] ** 2
    if shrink < 0.25:
        sigma = 0.25 / math.sqrt(shrink)
        gray = cv2.GaussianBlur(gray, (0, 0), sigma)
    return cv2.warpAffine(gray, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


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
