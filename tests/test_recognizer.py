"""ferlib.EmotionRecognizer: the one-call API's contract (types, shapes, every wrong input, photos kept apart) on an
untrained model and a fixed detector, and on the real sample photos and videos when ../shared/media is there."""

from __future__ import annotations

import warnings
from dataclasses import replace

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import FixedDetector
from ferlib import CLASS_NAMES, EmotionRecognizer, FaceEmotion
from ferlib.faces import captured_native_stderr
from ferlib.models import build_model, save_model
from ferlib.recognizer import as_image
from ferlib.video import LOG_COLUMNS


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(build_model("seed_cnn", width=0.25, in_channels=1), path, "seed_cnn", {"width": 0.25, "in_channels": 1})
    return path


@pytest.fixture
def recognizer(tiny_weights):
    return EmotionRecognizer(tiny_weights, detector=FixedDetector([(10, 20, 60, 60), (100, 10, 30, 40)]))


def photo(seed: int = 0, shape=(120, 160, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_detect_emotions_returns_boxes_labels_and_probabilities(recognizer):
    faces = recognizer.detect_emotions(photo())
    assert len(faces) == 2 and all(isinstance(face, FaceEmotion) for face in faces)
    assert faces[0].box == (10, 20, 60, 60)  # largest first
    for face in faces:
        assert all(type(v) is int for v in face.box)
        assert list(face.probabilities) == list(CLASS_NAMES)
        assert sum(face.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert face.label == max(face.probabilities, key=face.probabilities.get)
        assert face.top(3)[0] == (face.label, face.probabilities[face.label]) and len(face.top(3)) == 3


def test_every_kind_of_image_gives_the_same_answer(recognizer, tmp_path):
    def probabilities(faces):
        return np.array([list(face.probabilities.values()) for face in faces])

    bgr = photo()
    expected = probabilities(recognizer.detect_emotions(bgr))
    cv2.imwrite(str(tmp_path / "photo.png"), bgr)
    rgb = Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    for image in (tmp_path / "photo.png", str(tmp_path / "photo.png"), rgb, rgb.convert("RGBA"),
                  cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)):
        assert np.allclose(probabilities(recognizer.detect_emotions(image)), expected, atol=1e-5)
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    for image in (gray, gray[:, :, None], Image.fromarray(gray)):
        assert len(recognizer.detect_emotions(image)) == 2


def test_photos_are_not_smoothed_together(tiny_weights):
    first = EmotionRecognizer(tiny_weights, detector=FixedDetector([(10, 20, 60, 60)]))
    fresh = EmotionRecognizer(tiny_weights, detector=FixedDetector([(10, 20, 60, 60)]))
    for seed in range(3):
        first.detect_emotions(photo(seed))
    assert first.detect_emotions(photo(7))[0].probabilities == fresh.detect_emotions(photo(7))[0].probabilities


@pytest.mark.parametrize("image,message", [
    (np.zeros((48, 48), np.float32), "uint8 array.*float32.*255"),
    (np.zeros((48, 48), np.int64), "uint8 array.*int64"),
    (np.zeros((48, 48), np.uint16), r"uint16 \(16-bit: \(image // 257\)"),
    (np.zeros((48, 48, 2), np.uint8), r"\(H, W, 3\) BGR"),
    (np.zeros((2, 48, 48, 3), np.uint8), r"got \(2, 48, 48, 3\)"),
    (np.zeros((0, 48), np.uint8), "empty"),
    (12, "file path, a numpy array or a PIL image, got int"),
    ([np.zeros((48, 48), np.uint8)], "got list"),
    ("missing.jpg", "missing.jpg: no such image file"),
    ("", "an empty path; expected an image file"),
])
def test_wrong_images_are_value_errors_that_say_what_was_expected(recognizer, image, message):
    with pytest.raises(ValueError, match=message):
        recognizer.detect_emotions(image)


def test_unreadable_image_files_are_value_errors(recognizer, tmp_path):
    (tmp_path / "text.jpg").write_text("not a picture")
    with pytest.raises(ValueError, match="text.jpg: cannot be read as an image"):
        recognizer.detect_emotions(tmp_path / "text.jpg")
    with pytest.raises(ValueError, match="a folder; expected an image file .*analyze_video"):
        recognizer.detect_emotions(tmp_path)
    (tmp_path / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    with pytest.raises(ValueError, match="clip.mp4: cannot be read as an image .a video. .*analyze_video"):
        recognizer.detect_emotions(tmp_path / "clip.mp4")


def test_a_jpeg_cut_short_is_refused_and_pil_failures_are_value_errors(recognizer, tmp_path, capfd):
    ok, encoded = cv2.imencode(".jpg", photo(4, (240, 320, 3)))
    whole = encoded.tobytes()
    (tmp_path / "cut.jpg").write_bytes(whole[: len(whole) // 3])  # a download that stopped a third of the way
    capfd.readouterr()
    with pytest.raises(ValueError, match=r"cut.jpg: the image is cut short"):
        recognizer.detect_emotions(tmp_path / "cut.jpg")
    assert capfd.readouterr().err == ""  # libjpeg's own warning is not printed besides the error
    with pytest.raises(ValueError, match=r"face 0: .*cut.jpg: the image is cut short"):
        recognizer.classify_faces([tmp_path / "cut.jpg"])
    with pytest.raises(ValueError, match=r"face 1: .*nope.png: no such image file"):
        recognizer.classify_faces([photo(1, (48, 48)), tmp_path / "nope.png"])
    (tmp_path / "whole.jpg").write_bytes(whole)
    with Image.open(tmp_path / "whole.jpg") as closed:
        pass
    with pytest.raises(ValueError, match="the PIL image cannot be read .the file was closed"):
        recognizer.detect_emotions(closed)
    with pytest.raises(ValueError, match="the PIL image cannot be read .image file is truncated"):
        recognizer.detect_emotions(Image.open(tmp_path / "cut.jpg"))


def test_images_opencv_cannot_read_are_read_through_pil(recognizer, tmp_path):
    upright = photo(5, (120, 160, 3))
    sideways = Image.fromarray(cv2.cvtColor(np.ascontiguousarray(np.rot90(upright)), cv2.COLOR_BGR2RGB))
    exif = sideways.getexif()
    exif[0x0112] = 6  # stored turned: OpenCV's TIFF reader fails on it
    sideways.save(tmp_path / "scan.tif", exif=exif)
    with captured_native_stderr():  # OpenCV's reader fails on it here, saying so on stderr
        assert cv2.imread(str(tmp_path / "scan.tif")) is None
    image = as_image(tmp_path / "scan.tif")
    assert image.shape == (120, 160, 3) and np.array_equal(image, upright)
    (tmp_path / "photo.jfif").write_bytes(cv2.imencode(".jpg", upright)[1].tobytes())
    assert as_image(tmp_path / "photo.jfif").shape == (120, 160, 3)


def test_a_path_from_the_home_folder_may_start_with_a_tilde(recognizer, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    cv2.imwrite(str(tmp_path / "photo.png"), photo(1, (120, 160, 3)))
    assert recognizer.detect_emotions("~/photo.png") == recognizer.detect_emotions(tmp_path / "photo.png")
    with pytest.raises(ValueError, match="source: an empty path"):
        recognizer.analyze_video("")


def test_classify_faces_takes_one_face_a_list_or_a_stack(recognizer):
    engine = recognizer.engine
    face = photo(1, (48, 48))
    single = recognizer.classify_faces(face)
    assert single.shape == (1, 8) and single.dtype == np.float32
    assert np.allclose(single, engine.predict(face[None]), atol=1e-6)
    assert np.allclose(single.sum(axis=1), 1.0, atol=1e-5)
    assert recognizer.classify_faces(face[:, :, None]).shape == (1, 8)
    colour = cv2.cvtColor(face, cv2.COLOR_GRAY2BGR)
    assert np.allclose(recognizer.classify_faces(colour), single, atol=1e-5)
    assert recognizer.classify_faces([face, photo(2, (100, 80, 3)), photo(3, (20, 20, 4)), Image.fromarray(face)]
                                     ).shape == (4, 8)
    assert recognizer.classify_faces(np.stack([face] * 5)).shape == (5, 8)
    assert recognizer.classify_faces(np.stack([colour] * 3)).shape == (3, 8)
    assert recognizer.classify_faces([]).shape == (0, 8)
    assert recognizer.classify_faces(np.zeros((0, 48, 48), np.uint8)).shape == (0, 8)


@pytest.mark.parametrize("faces,message", [
    (np.zeros((48, 48), np.float64), "face 0: expected a uint8 array"),
    ([np.zeros((48, 48), np.uint8), np.zeros((48, 48), np.float32)], "face 1: expected a uint8 array"),
    (np.zeros((4, 48, 48, 2), np.uint8), r"face 0: expected shape"),
    (np.zeros((2, 2, 48, 48, 1), np.uint8), r"expected one face"),
    (np.zeros((4, 4), np.uint8), "4x4 pixels; expected at least 8x8"),
    ("nope.png", "nope.png: no such image file"),
    (3.5, "got float"),
])
def test_wrong_faces_are_value_errors(recognizer, faces, message):
    with pytest.raises(ValueError, match=message):
        recognizer.classify_faces(faces)


class SideEngine:
    """Answers neutral as far as a face's left half is brighter than its right, happiness otherwise: a mirror image
    gets the other answer."""
    info, name, precision = {}, "side", "fp32"

    def predict(self, crops):
        crops = np.asarray(crops)
        if crops.dtype != np.uint8 or crops.ndim != 3:
            raise ValueError(f"expected uint8 faces of shape (N, 48, 48), got {crops.dtype} {crops.shape}")
        left = crops[:, :, :24].mean(axis=(1, 2)) / 255
        right = crops[:, :, 24:].mean(axis=(1, 2)) / 255
        probabilities = np.zeros((len(crops), 8), np.float32)
        probabilities[:, 0] = (1 + left - right) / 2
        probabilities[:, 1] = 1 - probabilities[:, 0]
        return probabilities


def test_flip_tta_averages_each_face_with_its_mirror_image(tiny_weights):
    plain = EmotionRecognizer(SideEngine(), detector=FixedDetector([(0, 0, 120, 120)]))
    averaged = EmotionRecognizer(SideEngine(), tta=True, detector=FixedDetector([(0, 0, 120, 120)]))
    ramp = np.tile(np.linspace(255, 0, 48).astype(np.uint8), (48, 1))  # bright on the left
    faces = np.stack([ramp, ramp[:, ::-1], np.full((48, 48), 90, np.uint8)])
    assert plain.classify_faces(faces)[0, 0] > 0.7 and plain.classify_faces(faces)[1, 0] < 0.3
    assert np.allclose(averaged.classify_faces(faces)[:, :2], 0.5, atol=1e-6)  # each face with its mirror image
    assert "flip TTA" in averaged.engine.name
    left_bright = np.tile(np.linspace(255, 0, 160).astype(np.uint8), (120, 1))
    assert plain.detect_emotions(left_bright)[0].label == "neutral"
    assert averaged.detect_emotions(left_bright)[0].probabilities["neutral"] == pytest.approx(0.5, abs=1e-6)
    with pytest.raises(ValueError, match="face 0: expected a uint8 array"):
        averaged.classify_faces(np.zeros((48, 48), np.float32))
    with pytest.raises(ValueError, match="tta 'yes'"):
        EmotionRecognizer(tiny_weights, tta="yes")


def write_video(path, frames: int = 6, size=(160, 120)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, size)
    for i in range(frames):
        writer.write(photo(i, (size[1], size[0], 3)))
    writer.release()
    return path


def test_analyze_video_is_one_row_per_face_per_frame(recognizer, tmp_path):
    table = recognizer.analyze_video(write_video(tmp_path / "clip.avi"))
    assert isinstance(table, pd.DataFrame) and list(table.columns) == list(LOG_COLUMNS)
    assert len(table) == 12 and sorted(set(table["frame"])) == list(range(6))
    assert sorted(set(table["face_id"])) == [0, 1]  # followed across frames
    assert np.allclose(table[list(CLASS_NAMES)].sum(axis=1), 1.0, atol=1e-5)
    assert table["x"].dtype.kind == "i" and table["neutral"].dtype.kind == "f"
    assert len(recognizer.analyze_video(tmp_path / "clip.avi", max_frames=2)) == 4
    with pytest.raises(ValueError, match="max_frames"):
        recognizer.analyze_video(tmp_path / "clip.avi", max_frames=-1)
    with pytest.raises(ValueError, match="no such file"):
        recognizer.analyze_video(tmp_path / "missing.mp4")
    for source in (photo(), [photo()], 2.0, True):
        with pytest.raises(ValueError, match="source: expected a video or image file, a folder of images or a camera"):
            recognizer.analyze_video(source)


def test_analyze_video_warns_of_a_cut_short_file_unless_max_frames_stopped_it(recognizer, tmp_path):
    video = write_video(tmp_path / "clip.avi", frames=40)
    video.write_bytes(video.read_bytes()[:video.stat().st_size // 2])  # the header still announces 40 frames
    for max_frames in (None, 39):  # the file ends before either
        with pytest.warns(UserWarning, match="ended after .* of the 40 frames"):
            recognizer.analyze_video(video, max_frames=max_frames)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        recognizer.analyze_video(video, max_frames=3)


def test_analyze_video_on_a_folder_warns_of_the_files_it_skips(recognizer, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(2):
        cv2.imwrite(str(folder / f"{i}.png"), photo(i))
    (folder / "2.jpg").write_text("not a picture")
    with pytest.warns(UserWarning, match=r"skipped 1 file.*2.jpg: cannot be read as an image"):
        table = recognizer.analyze_video(folder)
    assert sorted(set(table["frame"])) == [0, 1] and len(table.attrs["skipped"]) == 1
    (folder / "3.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic")  # an iPhone's photo: named, not passed over
    with pytest.warns(UserWarning, match=r"skipped 2 file.*3.HEIC: a HEIC photo, which cannot be read"):
        assert len(recognizer.analyze_video(folder).attrs["skipped"]) == 2
    only_heic = tmp_path / "iphone"
    only_heic.mkdir()
    (only_heic / "IMG_0001.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    with pytest.raises(ValueError, match=r"folder has no images .only 1 HEIC photo"):
        recognizer.analyze_video(only_heic)


class InterruptedDetector(FixedDetector):
    """Ctrl-C arrives while the third frame is searched."""

    def __init__(self, boxes):
        super().__init__(boxes)
        self.calls = 0

    def __call__(self, frame):
        self.calls += 1
        if self.calls == 3:
            raise KeyboardInterrupt
        return super().__call__(frame)


def test_an_interrupted_analysis_returns_the_rows_so_far(tiny_weights, tmp_path):
    recognizer = EmotionRecognizer(tiny_weights, detector=InterruptedDetector([(0, 0, 40, 40)]))
    with pytest.warns(UserWarning, match="interrupted after 2 frame"):
        table = recognizer.analyze_video(write_video(tmp_path / "clip.avi"))
    assert list(table["frame"]) == [0, 1] and table.attrs["interrupted"] is True
    assert recognizer.analyze_video(tmp_path / "clip.avi").attrs["interrupted"] is False


def test_a_camera_without_max_frames_says_it_runs_until_interrupted(recognizer, monkeypatch):
    import ferlib.recognizer
    from ferlib.video import Frame, FrameSource

    frames = (Frame(photo(i), i, i / 30, "camera 0") for i in range(3))  # a camera that a user stops after 3
    monkeypatch.setattr(ferlib.recognizer, "open_source", lambda source: FrameSource("camera", "0", 30.0, None, frames))
    with pytest.warns(UserWarning, match="camera 0: no max_frames, so it runs until interrupted"):
        table = recognizer.analyze_video(0)
    assert sorted(set(table["frame"])) == [0, 1, 2]


def test_a_detector_handed_in_stays_open(tiny_weights, tmp_path):
    detector = FixedDetector([(0, 0, 40, 40)])
    recognizer = EmotionRecognizer(tiny_weights, detector=detector)
    recognizer.analyze_video(write_video(tmp_path / "clip.avi", 2))
    assert not detector.closed and len(recognizer.detect_emotions(photo())) == 1


def test_bad_settings_are_value_errors(tiny_weights):
    with pytest.raises(ValueError, match="min_face"):
        EmotionRecognizer(tiny_weights, min_face=-1)
    for smoothing in (1.5, None, "0.5"):
        with pytest.raises(ValueError, match=r"smoothing .*expected a number in \[0, 1\) \(0: no smoothing\)"):
            EmotionRecognizer(tiny_weights, smoothing=smoothing)
    with pytest.raises(ValueError, match="engine 'gpu'"):
        EmotionRecognizer(tiny_weights, engine="gpu")
    for threads in (0, "2", 1.5, True):
        with pytest.raises(ValueError, match="^threads .*expected a whole number, 1 or more"):
            EmotionRecognizer(tiny_weights, threads=threads)
        with pytest.raises(ValueError, match="^detector_threads .*expected a whole number, 1 or more, 'auto'"):
            EmotionRecognizer(tiny_weights, detector_threads=threads)
    with pytest.raises(ValueError, match="^threads 'auto'"):  # the network's threads are a number
        EmotionRecognizer(tiny_weights, threads="auto")
    assert EmotionRecognizer(tiny_weights).detector_threads == "auto"  # every core on an idle machine, else one
    for score in (-0.1, 5, "0.5"):
        with pytest.raises(ValueError, match="min_score .*expected a detector score in \\[0, 1\\]"):
            EmotionRecognizer(tiny_weights, min_score=score)
    with pytest.raises(ValueError, match="detector 'bad': expected one of auto, mediapipe"):
        EmotionRecognizer(tiny_weights, detector="bad")
    for detector in (None, 3):  # not a name, and not a detector object (called with a frame; reset())
        with pytest.raises(ValueError, match=f"detector {detector}: expected one of auto, .* or a detector object"):
            EmotionRecognizer(tiny_weights, detector=detector)
    for model in (3, 3.5, {}):
        with pytest.raises(ValueError, match=f"model {model}: expected None .* a torch model, an engine"):
            EmotionRecognizer(model)
    for model in ("ferplus_cnn_nope", "nope.safetensors"):  # a missing model is a ValueError, as a missing image is
        with pytest.raises(ValueError, match="ferplus_cnn_nope: neither a shipped model|model file not found"):
            EmotionRecognizer(model)
    with pytest.raises(ValueError, match="min_face True: expected a whole number"):
        EmotionRecognizer(tiny_weights, min_face=True)
    with pytest.raises(ValueError, match="max_frames True: expected a whole number"):
        EmotionRecognizer(tiny_weights, detector=FixedDetector([])).analyze_video("clip.avi", max_frames=True)


def test_top_refuses_a_count_that_is_not_a_positive_whole_number():
    face = FaceEmotion((0, 0, 10, 10), "happiness", {"neutral": 0.2, "happiness": 0.7, "anger": 0.1}, 0.9, 0)
    assert face.top(2) == [("happiness", 0.7), ("neutral", 0.2)]
    for k in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="expected a whole number, 1 or more"):
            face.top(k)


# ---- the shipped model and default detector on the sample media (skipped without ../shared/media)

@pytest.fixture(scope="module")
def shipped():
    return EmotionRecognizer()


def test_shipped_recognizer_runs_onnx_runtime_by_default(shipped):
    assert shipped.engine.name == "onnx int8"


def test_group_photo_has_five_faces_and_the_black_and_white_photo_one(shipped, media):
    faces = shipped.detect_emotions(media / "multi_face.jpg")
    assert len(faces) == 5 and all(60 <= face.box[2] <= 140 for face in faces)
    assert sum(face.label == "happiness" for face in faces) >= 4  # five people smiling at the camera
    faces = shipped.detect_emotions(media / "BWPictureHuman.jpg")
    assert len(faces) == 1
    x, y, w, h = faces[0].box
    assert 800 <= x + w / 2 <= 1100 and 350 <= y + h / 2 <= 650  # the soldier's face, not his shoulder


def test_videos_every_frame_of_the_face_and_none_without(shipped, media):
    table = shipped.analyze_video(media / "single_face.mp4")
    assert sorted(table["frame"]) == list(range(72)) and set(table["face_id"]) == {0}
    assert len(shipped.analyze_video(media / "no_face.mp4")) == 0


def test_photos_stored_sideways_are_turned_upright_as_their_exif_says(recognizer, tmp_path):
    upright = photo(3, (120, 160, 3))
    sideways = Image.fromarray(cv2.cvtColor(np.ascontiguousarray(np.rot90(upright)), cv2.COLOR_BGR2RGB))
    exif = sideways.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    sideways.save(tmp_path / "phone.jpg", exif=exif, quality=100)
    for image in (tmp_path / "phone.jpg", Image.open(tmp_path / "phone.jpg")):
        assert as_image(image).shape[:2] == (120, 160)


def test_a_photos_yunet_search_gets_the_detector_thread_count(tiny_weights):
    for threads in (1, 2, None):
        recognizer = EmotionRecognizer(tiny_weights, detector_threads=threads)
        photos, video = recognizer.pipeline(video=False), recognizer.pipeline(video=True)
        try:
            assert photos.detector.thorough.threads == threads
            assert video.detector.thorough.threads is None  # a video's one-off whole-frame search: unchanged
        finally:
            photos.close()
            video.close()
    yunet = EmotionRecognizer(tiny_weights, detector="yunet", detector_threads=1).pipeline(video=False)
    assert yunet.detector.threads == 1
    yunet.close()


# ---- pictures lying sideways or upside down without EXIF: detect_emotions(try_rotations=True)

class TopLeftDetector(FixedDetector):
    """Finds one face, 20x30 px at the top left, as sure of it as that corner is bright: a stand-in for a detector
    that is surest of a face the right way up."""

    def __init__(self):
        super().__init__([(4, 6, 20, 30)])

    def __call__(self, frame):
        return [replace(face, score=float(frame[:40, :40].mean()) / 255) for face in super().__call__(frame)]


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_the_quarter_turn_the_detector_is_surest_of_is_read_and_boxed_in_the_image_as_given(tiny_weights, rotation):
    upright = np.zeros((90, 120), np.uint8)
    upright[:40, :40] = 255  # the corner the stand-in detector looks at
    given = np.ascontiguousarray(np.rot90(upright, rotation // 90))  # turned counter-clockwise by `rotation`
    recognizer = EmotionRecognizer(tiny_weights, detector=TopLeftDetector())
    (face,) = recognizer.detect_emotions(given, try_rotations=True)
    assert face.rotation == rotation and face.score == pytest.approx(1.0)
    x, y, w, h = face.box
    # the box holds, in the image as given, the pixels the detector boxed in the turned image
    assert np.array_equal(np.rot90(given[y:y + h, x:x + w], -rotation // 90), upright[6:36, 4:24])
    (plain,) = recognizer.detect_emotions(given)
    assert plain.rotation == 0 and plain.box == (4, 6, 20, 30)


def test_a_tie_keeps_the_image_as_given_and_a_bad_flag_is_refused(recognizer):
    faces = recognizer.detect_emotions(photo(), try_rotations=True)  # the fixed detector: equally sure every way
    assert [face.rotation for face in faces] == [0, 0] and faces[0].box == (10, 20, 60, 60)
    with pytest.raises(ValueError, match="try_rotations 'yes': expected True or False"):
        recognizer.detect_emotions(photo(), try_rotations="yes")


@pytest.mark.parametrize("turn", [cv2.ROTATE_90_CLOCKWISE, cv2.ROTATE_180, cv2.ROTATE_90_COUNTERCLOCKWISE])
def test_the_group_photo_turned_is_read_as_upright(shipped, media, turn):
    upright = shipped.detect_emotions(media / "multi_face.jpg")
    turned = cv2.rotate(cv2.imread(str(media / "multi_face.jpg")), turn)
    faces = shipped.detect_emotions(turned, try_rotations=True)
    assert len(faces) == 5 and len({face.rotation for face in faces}) == 1 and faces[0].rotation != 0
    # the same faces, boxed in the turned image where the upright boxes land when turned the same way
    height, width = cv2.imread(str(media / "multi_face.jpg")).shape[:2]
    for face in upright:
        mask = np.zeros((height, width), np.uint8)
        x, y, w, h = face.box
        mask[y + h // 2, x + w // 2] = 255
        cy, cx = np.argwhere(cv2.rotate(mask, turn))[0]
        match = [f for f in faces if f.box[0] <= cx < f.box[0] + f.box[2] and f.box[1] <= cy < f.box[1] + f.box[3]]
        assert len(match) == 1 and match[0].label == face.label


def test_analyze_video_turns_a_sideways_camera_upright(tiny_weights, tmp_path):
    clip = write_video(tmp_path / "clip.avi", 3)  # 160 wide, 120 high
    seen = []

    class Recording(FixedDetector):
        def __call__(self, frame):
            seen.append(frame.shape[:2])
            return super().__call__(frame)

    recognizer = EmotionRecognizer(tiny_weights, detector=Recording([(5, 5, 40, 40)]))
    assert len(recognizer.analyze_video(clip, rotate=90)) == 3
    assert seen and all(shape == (160, 120) for shape in seen)  # turned: 120 wide, 160 high
    with pytest.raises(ValueError, match="rotate 45: expected 0, 90, 180 or 270 degrees clockwise"):
        recognizer.analyze_video(clip, rotate=45)
