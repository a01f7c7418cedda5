"""ferlib.faces: detectors on any kind of frame, alignment geometry, and the FER framing measured on real faces."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from ferlib.faces import (DETECTOR_NAMES, FER_FRAMINGS, Face, FaceFinder, Framing, YuNetDetector, _window_starts,
                          align_face, alignment_matrix, as_bgr, as_gray, available_detectors, build_detector, clip_box,
                          detect_in_fer_image, measure_framing, merge_faces, same_place)
from ferlib.video import read_frame
from conftest import SHARED

MEDIA = SHARED / "media"

FRAMING = Framing(eye_center=(24.0, 19.0), eye_distance=18.0, box_center=(24.0, 27.0), box_width=40.0)


def transform(matrix: np.ndarray, points) -> np.ndarray:
    points = np.asarray(points, np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def test_clip_box_keeps_boxes_inside_the_frame():
    assert clip_box(10, 20, 30, 40, 640, 360) == (10, 20, 30, 40)
    assert clip_box(-15, -5, 40, 30, 640, 360) == (0, 0, 25, 25)
    assert clip_box(620, 350, 50, 50, 640, 360) == (620, 350, 20, 10)
    assert clip_box(700, 10, 30, 30, 640, 360) is None
    assert clip_box(10, 10, 1, 30, 640, 360) is None


def test_frames_of_every_layout_become_bgr_and_gray():
    gray = np.zeros((20, 30), np.uint8)
    for frame in (gray, gray[:, :, None], np.zeros((20, 30, 3), np.uint8), np.zeros((20, 30, 4), np.uint8)):
        assert as_bgr(frame).shape == (20, 30, 3)
        assert as_gray(as_bgr(frame)).shape == (20, 30)
    with pytest.raises(ValueError, match="uint8"):
        as_bgr(np.zeros((20, 30), np.float32))
    with pytest.raises(ValueError, match="shape"):
        as_bgr(np.zeros((20, 30, 2), np.uint8))


@pytest.mark.parametrize("angle", [-30.0, 0.0, 12.0, 45.0])
def test_alignment_puts_the_eyes_level_where_fer_has_them(angle):
    centre, half = np.array([300.0, 200.0]), 40.0
    direction = np.array([math.cos(math.radians(angle)), math.sin(math.radians(angle))])
    eyes = np.stack([centre - half * direction, centre + half * direction])
    face = Face((240, 150, 120, 140), 0.9, eyes.astype(np.float32))
    for size in (48, 96):
        mapped = transform(alignment_matrix(face, FRAMING, size), eyes)
        zoom = size / 48
        assert mapped[0, 1] == pytest.approx(mapped[1, 1], abs=1e-3)  # level
        assert mapped[1, 0] - mapped[0, 0] == pytest.approx(FRAMING.eye_distance * zoom, abs=1e-3)
        assert mapped.mean(axis=0) == pytest.approx(np.array(FRAMING.eye_center) * zoom, abs=1e-3)


def test_a_face_turned_aside_is_not_zoomed_in_beyond_its_box():
    eyes = np.array([[290.0, 200.0], [300.0, 200.0]], np.float32)  # 10 px apart in a 120 px box: a profile
    face = Face((240, 150, 120, 140), 0.9, eyes)
    matrix = alignment_matrix(face, FRAMING)
    scale = math.hypot(matrix[0, 0], matrix[0, 1])
    assert scale == pytest.approx(1.15 * FRAMING.box_width / 120, rel=1e-6)


def test_alignment_without_eyes_uses_the_box():
    face = Face((100, 50, 80, 80), 0.9, None)
    mapped = transform(alignment_matrix(face, FRAMING), [[140.0, 90.0], [100.0, 90.0], [180.0, 90.0]])
    assert mapped[0] == pytest.approx(FRAMING.box_center, abs=1e-3)
    assert mapped[2, 0] - mapped[1, 0] == pytest.approx(FRAMING.box_width, abs=1e-3)


@pytest.mark.parametrize("box,eyes", [
    ((0, 0, 30, 30), [[5, 8], [20, 9]]),          # corner of the frame
    ((600, 330, 40, 30), [[610, 340], [630, 338]]),  # bottom right edge
    ((300, 100, 3, 3), [[300.5, 101], [302, 101]]),  # tiny
    ((100, 100, 200, 200), [[150, 150], [150, 150]]),  # both eyes on one point
    ((100, 100, 200, 200), None),
])
def test_align_face_never_fails_on_awkward_faces(box, eyes):
    frame = np.random.default_rng(0).integers(0, 256, (360, 640, 3), dtype=np.uint8)
    face = Face(box, 0.5, None if eyes is None else np.array(eyes, np.float32))
    for image in (frame, cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)):
        crop = align_face(image, face, FRAMING)
        assert crop.shape == (48, 48) and crop.dtype == np.uint8


def test_align_face_samples_the_right_place():
    # a bright square centred between the eyes lands centred on FER's eye midpoint
    frame = np.zeros((400, 400), np.uint8)
    frame[190:210, 190:210] = 255
    face = Face((150, 150, 100, 120), 0.9, np.array([[170, 200], [230, 200]], np.float32))
    crop = align_face(frame, face, FRAMING)
    ys, xs = np.nonzero(crop > 128)
    assert xs.mean() == pytest.approx(FRAMING.eye_center[0] - 0.5, abs=1.0)
    assert ys.mean() == pytest.approx(FRAMING.eye_center[1] - 0.5, abs=1.0)


def test_unknown_detector_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown detector 'dlib'.*mediapipe"):
        build_detector("dlib")


@pytest.mark.parametrize("name", DETECTOR_NAMES)
def test_every_detector_handles_blank_gray_colour_tiny_and_bgra_frames(name):
    if name not in available_detectors():
        pytest.skip(f"{name} is not installed (./run.sh --setup-only installs it)")
    detector = build_detector(name)
    try:
        for frame in (np.zeros((360, 640, 3), np.uint8), np.full((240, 320), 128, np.uint8),
                      np.zeros((8, 8, 3), np.uint8), np.zeros((100, 120, 4), np.uint8)):
            faces = detector(frame)
            assert isinstance(faces, list)
            for face in faces:
                x, y, w, h = face.box
                assert 0 <= x and 0 <= y and x + w <= frame.shape[1] and y + h <= frame.shape[0]
    finally:
        detector.close()


class ScriptedDetector:
    """Returns the faces it is told to, and records the frame sizes it was asked about."""

    def __init__(self, name, faces=()):
        self.name, self.faces, self.calls = name, list(faces), []

    def __call__(self, frame):
        self.calls.append(frame.shape[:2])
        return list(self.faces)

    def close(self):
        pass


def scripted_finder(video: bool, fast_faces, thorough_faces, window_faces=(), refresh: int = 3) -> FaceFinder:
    if "yunet" not in available_detectors():
        pytest.skip("yunet is not installed (./run.sh --setup-only installs it)")
    finder = FaceFinder(video=video, refresh=refresh, background=False)
    finder.fast = ScriptedDetector("mediapipe", fast_faces)
    finder.thorough = ScriptedDetector("yunet", thorough_faces)
    finder.window_search = ScriptedDetector("yunet", window_faces)
    return finder


def test_auto_is_the_face_finder_and_merges_its_detectors_faces():
    detector = build_detector("auto")
    assert isinstance(detector, FaceFinder) and detector.name == "auto"
    detector.close()
    close_up = Face((100, 100, 200, 200), 0.95, detector="mediapipe")
    same_face = Face((110, 90, 180, 210), 0.9, detector="yunet")
    small = Face((500, 50, 30, 36), 0.8, detector="yunet")
    finder = scripted_finder(False, [close_up], [same_face, small])
    assert finder(np.zeros((360, 640, 3), np.uint8)) == [close_up, small]
    assert len(finder.thorough.calls) == 1


def test_one_face_framed_by_two_detectors_is_kept_once_whichever_box_holds_the_others_centre():
    # multi_face.jpg saved as a GIF: YuNet frames the woman's face tightly, MediaPipe's weaker box sits over her chin;
    # its centre lies 2.5 px below YuNet's box, but it holds YuNet's centre (IoU 0.25)
    yunet = Face((686, 288, 102, 134), 0.94, detector="yunet")
    chin = Face((669, 342, 166, 165), 0.57, detector="mediapipe")
    neighbour = Face((420, 300, 110, 130), 0.9, detector="yunet")
    assert merge_faces([chin, yunet, neighbour]) == [yunet, neighbour]
    assert same_place(chin, yunet) and same_place(yunet, chin)
    assert not same_place(yunet, neighbour)


def test_on_video_the_face_finder_searches_whole_frames_now_and_then_and_follows_faces_between():
    face = Face((400, 50, 80, 96), 0.8, np.array([[420, 80], [460, 80]], np.float32), detector="yunet")
    moved = Face((32, 38, 80, 96), 0.8, np.array([[52, 68], [92, 68]], np.float32), detector="yunet")
    finder = scripted_finder(True, [], [face], window_faces=[moved], refresh=3)
    frame = np.zeros((360, 640, 3), np.uint8)
    assert finder(frame) == [face]  # first frame: searched whole
    followed = finder(frame)  # next: the face is looked for in a window around it
    assert followed[0].box == (400 - 40 + 32, 50 - 48 + 38, 80, 96)
    assert followed[0].eyes[0].tolist() == [400 - 40 + 52, 50 - 48 + 68]
    assert finder.window_search.calls == [(96 * 2, 80 * 2)]
    finder(frame)
    assert len(finder.thorough.calls) == 1
    finder(frame)
    assert len(finder.thorough.calls) == 2  # frames 0, 3, 6, ...: searched whole
    finder.window_search.faces = []
    finder.thorough.faces = []
    finder.reset()
    assert finder(frame) == [] and len(finder.thorough.calls) == 3  # reset: the next frame is searched whole


def test_a_small_face_is_looked_for_again_in_an_enlarged_window():
    small = Face((500, 50, 20, 24), 0.8, np.array([[505, 58], [515, 58]], np.float32), detector="yunet")
    # the window (40 x 48 px around the face) enlarged 4x: YuNet answers in the enlarged window's pixels
    in_window = Face((40, 48, 80, 96), 0.7, np.array([[60, 80], [100, 80]], np.float32), detector="yunet")
    finder = scripted_finder(True, [], [small], window_faces=[in_window], refresh=100)
    frame = np.zeros((360, 640, 3), np.uint8)
    finder(frame)
    (again,) = finder(frame)
    assert finder.window_search.calls == [(48 * 4, 40 * 4)]
    assert again.box == (500, 50, 20, 24) and again.eyes[0].tolist() == [505, 58]


class ScriptedBackground:
    """A BackgroundSearch stand-in: records the frames it is handed; its answer is set by the test."""

    def __init__(self):
        self.alive, self.submitted, self.answer, self.resets, self.free = True, 0, None, 0, True

    def submit(self, frame):
        self.submitted += self.free
        return self.free

    def results(self):
        answer, self.answer = self.answer, None
        return answer

    def reset(self):
        self.resets += 1

    def close(self):
        self.alive = False


def test_on_video_the_thorough_search_runs_in_the_background_and_its_faces_are_placed_in_the_current_frame():
    close_up = Face((100, 100, 200, 200), 0.95, detector="mediapipe")
    far = Face((500, 50, 80, 96), 0.8, np.array([[520, 80], [560, 80]], np.float32), detector="yunet")
    there_now = Face((40, 48, 80, 96), 0.8, np.array([[60, 80], [100, 80]], np.float32), detector="yunet")
    finder = scripted_finder(True, [close_up], [], window_faces=[there_now], refresh=3)
    finder.background = ScriptedBackground()
    frame = np.zeros((360, 640, 3), np.uint8)
    assert finder(frame) == [close_up]
    assert len(finder.thorough.calls) == 1 and finder.background.submitted == 1  # first frame: both
    # the background search answers: the face MediaPipe has is not looked for again, the new one is
    finder.background.answer = [Face((110, 110, 190, 190), 0.9, detector="yunet"), far]
    faces = finder(frame)
    assert faces == [close_up, Face((500 - 40 + 40, 50 - 48 + 48, 80, 96), 0.8, faces[1].eyes, faces[1].landmarks,
                                    "yunet")]
    assert finder.window_search.calls == [(96 * 2, 80 * 2)] and finder.background_searches == 1
    assert finder(frame)[1].box == (500, 50, 80, 96)  # then followed frame by frame
    finder(frame)
    # every `refresh` frames a frame goes to the background; the loop never searches whole frames itself again
    assert finder.background.submitted == 2 and len(finder.thorough.calls) == 1
    finder.reset()
    assert finder.background.resets == 1 and finder.background_searches == 0
    finder.background.free = False  # still searching a frame from before reset: the new video's first frame waits
    finder(frame)
    finder.background.free = True
    finder(frame)
    assert finder.background.submitted == 3  # handed over as soon as the worker was free, not `refresh` frames later
    finder.background.alive = False  # a worker that died: whole frames are searched in the loop again
    for _ in range(3):
        finder(frame)
    assert len(finder.thorough.calls) == 3


def test_npy_pipes_carry_arrays_and_refuse_pickles():
    import io as bytes_io

    from ferlib.faces import read_npy, write_npy

    stream = bytes_io.BytesIO()
    frame = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    write_npy(stream, frame)
    write_npy(stream, np.zeros((0, 15), np.float32))
    reader = bytes_io.BufferedReader(bytes_io.BytesIO(stream.getvalue()))
    assert np.array_equal(read_npy(reader), frame)
    assert read_npy(reader).shape == (0, 15)
    with pytest.raises(EOFError):
        read_npy(reader)
    pickled = bytes_io.BytesIO()
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="object array"):
        read_npy(bytes_io.BufferedReader(bytes_io.BytesIO(pickled.getvalue())))


def test_the_background_search_finds_what_the_photo_search_finds_in_another_process():
    if "yunet" not in available_detectors():
        pytest.skip("yunet is not installed (./run.sh --setup-only installs it)")
    from ferlib.faces import BackgroundSearch

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)
    photo = MEDIA / "multi_face.jpg"
    if photo.is_file():
        frame = cv2.imread(str(photo))
    expected = YuNetDetector(upscale=2.5)(frame)
    search = BackgroundSearch()
    try:
        assert search.submit(frame) and search.busy and not search.submit(frame)
        frame[:] = 0  # the caller draws on its frame while the worker searches: the worker has its own copy
        deadline = time.monotonic() + 120
        while (faces := search.results()) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert faces is not None and not search.busy
        if hasattr(os, "sched_getscheduler"):  # Linux: the worker gets only the CPU nobody else wants
            assert os.sched_getscheduler(search._process.pid) == os.SCHED_IDLE
        assert [face.box for face in faces] == [face.box for face in expected]
        assert [face.score for face in faces] == pytest.approx([face.score for face in expected], abs=1e-6)
        search.submit(frame)
        search.reset()  # the answer to a frame from before reset is dropped
        deadline = time.monotonic() + 120
        while search.busy and time.monotonic() < deadline:
            assert search.results() is None
            time.sleep(0.02)
    finally:
        search.close()
    assert not search.alive and search._process.returncode is not None
    assert search._process.stdin.closed and search._process.stdout.closed  # no ResourceWarning at exit


def test_yunet_threads_reach_the_openmp_runtime_torch_shares_for_the_call_only():
    if "yunet" not in available_detectors():
        pytest.skip("yunet is not installed (./run.sh --setup-only installs it)")
    import ctypes

    import torch  # loads its OpenMP runtime into the process's global scope, where yuface's calls then go

    process = ctypes.CDLL(None)
    if not hasattr(process, "omp_get_max_threads"):
        pytest.skip("no OpenMP runtime in this process's global scope (torch built without OpenMP?)")
    detector = YuNetDetector(tile=None, threads=1)
    during = []

    def detect(image, conf):
        during.append(process.omp_get_max_threads())
        return [], [], []

    detector._detect = detect
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert detector(np.zeros((64, 64, 3), np.uint8)) == []
        assert during == [1]
        assert torch.get_num_threads() == 2 and process.omp_get_max_threads() == 2
    finally:
        torch.set_num_threads(previous)


def test_auto_threads_are_every_core_on_an_idle_machine_and_one_on_a_busy_one(monkeypatch):
    if "yunet" not in available_detectors():
        pytest.skip("yunet is not installed (./run.sh --setup-only installs it)")
    import ctypes

    import torch  # noqa: F401  (its OpenMP runtime is the one yuface's calls reach)

    from ferlib import faces

    process = ctypes.CDLL(None)
    if not hasattr(process, "omp_get_max_threads"):
        pytest.skip("no OpenMP runtime in this process's global scope (torch built without OpenMP?)")
    detector = YuNetDetector(tile=None, threads="auto")
    during = []
    detector._detect = lambda image, conf: during.append(process.omp_get_max_threads()) or ([], [], [])
    setting = process.omp_get_max_threads()  # the process's, torch's too
    for busy in (False, True, None):  # None: the load could not be read (not Linux): as when idle
        monkeypatch.setattr(faces, "other_programs_busy", lambda busy=busy: busy)
        detector(np.zeros((64, 64, 3), np.uint8))
    assert during == [setting, 1, setting] and process.omp_get_max_threads() == setting
    for bad in (0, "two", 1.5, True):
        with pytest.raises(ValueError, match="threads .*expected a whole number, 1 or more, 'auto'"):
            YuNetDetector(threads=bad)


@pytest.mark.skipif(not Path("/proc/stat").is_file(), reason="reads Linux's /proc/stat")
def test_other_programs_busy_sees_a_busy_loop_and_reuses_its_answer_a_while():
    from ferlib.faces import other_programs_busy

    loop = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        assert other_programs_busy(interval=0.3, reuse_s=0) is True
    finally:
        loop.kill()
        loop.wait()
    assert other_programs_busy(reuse_s=60) is True  # the answer of a moment ago, not measured again
    other_programs_busy(reuse_s=0)  # the loop is gone: later tests get the machine as it is


def test_yunet_drops_faces_cut_by_an_inner_window_edge_and_specks():
    if "yunet" not in available_detectors():
        pytest.skip("yunet is not installed (./run.sh --setup-only installs it)")
    detector = YuNetDetector()
    # yuface's answer: scores, boxes (x, y, w, h) and 5 landmarks, in the window's pixels
    boxes = np.array([[0, 100, 50, 60], [300, 300, 60, 70], [600, 10, 40, 50], [200, 200, 6, 8]])
    detector._detect = lambda image, conf: (np.full(4, 90), boxes, np.tile(boxes[:, :2], 5))
    window = np.zeros((640, 640, 3), np.uint8)
    kept = detector._search(window, 2000, 2000, inner_edges=(True, False, True, False))
    assert [face.box for face in kept] == [(300, 300, 60, 70)]  # cut at the left and right edges; a speck
    kept = detector._search(window, 2000, 2000)
    assert [face.box for face in kept] == [(0, 100, 50, 60), (300, 300, 60, 70), (600, 10, 40, 50)]


def test_a_large_photos_windows_leave_large_faces_to_the_shrunk_pass():
    if "yunet" not in available_detectors():
        pytest.skip("yunet is not installed (./run.sh --setup-only installs it)")
    detector = YuNetDetector()

    def detect(image, conf):  # every 640-px window "finds" a hand filling it and a small face; the shrunk frame none
        if image.shape[:2] != (640, 640):
            return np.zeros(0), np.zeros((0, 4)), np.zeros((0, 10))
        boxes = np.array([[100, 100, 440, 480], [300, 200, 60, 70]])
        return np.full(2, 60), boxes, np.tile(boxes[:, :2], 5)

    detector._detect = detect
    faces = detector(np.zeros((2667, 4000, 3), np.uint8))  # a 10-megapixel photo
    assert faces and all(face.box[2] <= 320 for face in faces)  # the small faces stay; no window's 440-px "face"


def test_yunet_finds_faces_in_large_frames_by_windows_and_a_shrunk_pass():
    if "yunet" not in available_detectors():
        pytest.skip("yunet is not installed (./run.sh --setup-only installs it)")
    assert _window_starts(1920, 640, 480) == [0, 480, 960, 1280]
    assert _window_starts(500, 640, 480) == [0]
    detector = YuNetDetector(upscale=2.0)
    seen = []
    detector._search = lambda image, width, height, scale=1.0, offset=(0, 0), inner_edges=None: seen.append(
        (image.shape[:2], scale, offset)) or []
    detector(np.zeros((1080, 1920, 3), np.uint8))
    assert ((640, 640), 1.0, (1280.0, 440.0)) in seen  # full-resolution windows, the last ones at the edges
    assert ((360, 640), pytest.approx(1 / 3), (0, 0)) in seen  # the whole frame, shrunk
    assert ((640, 640), 2.0, (1600.0, 760.0)) in seen  # the enlarged pass, mapped back to the frame
    assert len(seen) == 8 + 1 + 8 * 5
    seen.clear()
    detector(np.zeros((1912, 2560, 3), np.uint8))
    assert max(scale for _, scale, _ in seen) == pytest.approx(4800 / 2560)  # enlarged to 4,800 px at most
    seen.clear()
    detector(np.zeros((3000, 4000, 3), np.uint8))
    assert max(scale for _, scale, _ in seen) == 1.0  # 1.2x would cost as much and find little: not enlarged


def test_measure_framing_takes_medians_and_counts():
    faces = [Face((4.0, 6.0, 40.0, 40.0), 1.0, np.array([[15, 19], [33, 19]], np.float32)),
             Face((6.0, 8.0, 36.0, 36.0), 1.0, np.array([[16, 21], [32, 21]], np.float32)),
             Face((5.0, 7.0, 38.0, 38.0), 1.0, None), None]
    framing, stats = measure_framing(faces)
    assert stats == {"faces": 4, "found": 3, "with_eyes": 2}
    assert framing.eye_center == (24.0, 20.0) and framing.eye_distance == 17.0
    assert framing.box_width == 38.0 and framing.box_center == (24.0, 26.0)
    with pytest.raises(ValueError, match="no faces"):
        measure_framing([None, None])


# ---- real data and real video (skipped without ../shared)

def test_mediapipe_framing_constant_is_what_the_real_faces_measure(real_dataset):
    from ferlib.data import load_split

    images = load_split(real_dataset, "test").images[:1000]
    detector = build_detector("mediapipe")
    framing, stats = measure_framing([detect_in_fer_image(detector, image) for image in images])
    detector.close()
    assert stats["found"] >= 950  # 96.5% measured here
    assert framing.eye_center == pytest.approx(FER_FRAMINGS["mediapipe"].eye_center, abs=0.05)
    assert framing.eye_distance == pytest.approx(FER_FRAMINGS["mediapipe"].eye_distance, abs=0.05)
    assert framing.box_width == pytest.approx(FER_FRAMINGS["mediapipe"].box_width, abs=0.05)


@pytest.mark.parametrize("name", DETECTOR_NAMES)
def test_each_detector_finds_the_face_in_a_real_frame_with_level_eyes(name, media):
    frame = read_frame(media / "single_face.mp4", 10)
    detector = build_detector(name)
    faces = detector(frame)
    detector.close()
    assert len(faces) == 1
    x, y, w, h = faces[0].box
    assert 150 < x + w / 2 < 450 and 120 < y + h / 2 < 320 and 80 < w < 300  # the man in the middle
    if faces[0].eyes is not None:
        (lx, ly), (rx, ry) = faces[0].eyes
        assert lx < rx and abs(ly - ry) < 0.2 * (rx - lx)


@pytest.fixture(scope="module")
def real_frame(media) -> np.ndarray:
    return read_frame(media / "single_face.mp4", 10)


def eye_angle(face: Face) -> float:
    (lx, ly), (rx, ry) = face.eyes
    return math.degrees(math.atan2(ry - ly, rx - lx))


@pytest.mark.parametrize("angle", [-25, 20])
def test_a_rotated_real_face_is_found_and_aligned_level(real_frame, angle):
    height, width = real_frame.shape[:2]
    rotation = cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0)
    rotated = cv2.warpAffine(real_frame, rotation, (width, height), borderMode=cv2.BORDER_REPLICATE)
    detector = build_detector("mediapipe")
    upright, turned = detector(real_frame)[0], detector(rotated)[0]
    detector.close()
    # OpenCV's positive angle turns the picture anticlockwise, so the eye line tilts by -angle on screen
    assert eye_angle(turned) - eye_angle(upright) == pytest.approx(-angle, abs=5)
    mapped = transform(alignment_matrix(turned, FER_FRAMINGS["mediapipe"]), turned.eyes)
    assert mapped[0, 1] == pytest.approx(mapped[1, 1], abs=1e-3)


def test_several_faces_gray_frames_and_faces_cut_by_the_border(real_frame):
    detector = build_detector("mediapipe")
    two = detector(np.hstack([real_frame, real_frame]))
    gray = detector(cv2.cvtColor(real_frame, cv2.COLOR_BGR2GRAY))
    cut = detector(real_frame[:, 260:])  # the left part of the face is outside the frame
    detector.close()
    assert len(two) == 2 and abs(two[0].box[0] - two[1].box[0]) > 500
    assert len(gray) == 1
    for face in cut:
        x, y, w, h = face.box
        assert x >= 0 and x + w <= real_frame.shape[1] - 260
        assert align_face(real_frame[:, 260:], face).shape == (48, 48)


def test_the_yunet_threads_benchmark_tabulates_each_thread_count_and_refuses_bad_counts(tmp_path, capsys):
    if "yunet" not in available_detectors():
        pytest.skip("yunet is not installed (./run.sh --setup-only installs it)")
    from conftest import load_benchmark

    benchmark = load_benchmark("yunet_threads")
    benchmark.main(["--media", str(tmp_path), "--repeat", "3", "--load", "0", "--threads", "1,2"])
    header, _, *rows = [[cell.strip() for cell in line.strip("|").split("|")]
                        for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    rows = [dict(zip(header, row)) for row in rows]
    assert [(row["frame"], row["size"], row["YuNet threads"]) for row in rows] == [
        ("noise 640x360", "640x360", "1"), ("noise 640x360", "640x360", "2")]  # no media: seeded noise
    assert rows[0]["ratio to 1 thread"] == "1.00" and float(rows[1]["median ms"]) > 0
    ratio = float(rows[1]["median ms"]) / float(rows[0]["median ms"])  # of the printed medians, rounded to 0.1 ms
    assert float(rows[1]["ratio to 1 thread"]) == pytest.approx(ratio, rel=0.05)
    with pytest.raises(SystemExit, match="--threads .one.: expected a comma list"):
        benchmark.main(["--media", str(tmp_path), "--threads", "one"])


def test_without_mediapipe_the_video_face_finder_says_why_it_is_slow(monkeypatch):
    import ferlib.faces

    if "yunet" not in available_detectors():
        pytest.skip("yunet is not installed (./run.sh --setup-only installs it)")

    def missing(*args, **kwargs):
        raise ImportError("No module named 'mediapipe'")

    monkeypatch.setattr(ferlib.faces, "MediaPipeDetector", missing)
    with pytest.warns(RuntimeWarning, match="mediapipe is not installed.*pip install --no-deps mediapipe"):
        finder = FaceFinder(video=True, background=False)
    assert finder.fast is None
    finder.close()
    with pytest.raises(ImportError, match="pip install --no-deps mediapipe"):
        ferlib.faces.build_detector("mediapipe")
