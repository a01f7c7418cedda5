"""ferlib.video and video_application.py: sources, tracking and smoothing, drawing, the log, errors, real videos."""

from __future__ import annotations

import itertools
import os
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

import video_application
from conftest import FixedDetector, load_benchmark
from ferlib.data import CLASS_NAMES
from ferlib.faces import Face
from ferlib.models import build_model, save_model, shipped_model
from ferlib.video import (DEFAULT_MODEL_NAME, DETECT_THREAD, LOG_COLUMNS, STAGES, EmotionLog, EmotionPipeline,
                          FaceTracker, Frame, FrameSource, Snapshot, SourceError, StageTimes, analyze_frames, box_iou,
                          draw_results, letterbox, log_rows, open_source, overlap_area, panel_position, process_frames,
                          read_ahead, read_frame, rotated_source, summarize_times, title_position, write_image)

SHIPPED = shipped_model(DEFAULT_MODEL_NAME)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = build_model("seed_cnn", width=0.25, in_channels=1)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(model, path, "seed_cnn", {"width": 0.25, "in_channels": 1})
    return path


def write_video(path: Path, frames: int = 12, size=(160, 120)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, size)
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), 20 * i % 256, np.uint8))
    writer.release()
    return path


# ---- tracking and smoothing

def one_hot(index: int) -> np.ndarray:
    p = np.zeros(len(CLASS_NAMES), np.float32)
    p[index] = 1.0
    return p


def face(x, y, w=50, h=50):
    return Face((x, y, w, h), 0.9)


def test_box_iou():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (20, 0, 10, 10)) == 0.0
    assert box_iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)


def test_tracker_keeps_ids_of_faces_that_move_a_little_and_smooths():
    tracker = FaceTracker(smoothing=0.5)
    first = tracker.update([face(0, 0), face(200, 0)], np.stack([one_hot(0), one_hot(1)]))
    assert [r.face_id for r in first] == [0, 1]
    # same faces, listed the other way round and shifted: ids follow the boxes
    second = tracker.update([face(205, 3), face(4, 2)], np.stack([one_hot(2), one_hot(2)]))
    assert [r.face_id for r in second] == [1, 0]
    assert second[1].probabilities == pytest.approx(0.5 * one_hot(0) + 0.5 * one_hot(2))
    assert second[1].raw_probabilities == pytest.approx(one_hot(2))
    assert second[1].label in ("neutral", "surprise")


def test_smoothing_stops_one_frame_flicker_and_zero_turns_it_off():
    steady, flicker = one_hot(1), one_hot(4)
    for smoothing, expected in ((0.6, "happiness"), (0.0, "anger")):
        tracker = FaceTracker(smoothing=smoothing)
        for _ in range(5):
            tracker.update([face(10, 10)], steady[None])
        assert tracker.update([face(10, 10)], flicker[None])[0].label == expected


def test_tracker_forgets_lost_faces_and_gives_new_ones_new_ids():
    tracker = FaceTracker(max_missed=2)
    assert tracker.update([face(0, 0)], one_hot(0)[None])[0].face_id == 0
    for _ in range(3):
        assert tracker.update([], np.zeros((0, 8))) == []
    assert tracker.update([face(0, 0)], one_hot(0)[None])[0].face_id == 1
    with pytest.raises(ValueError, match="smoothing"):
        FaceTracker(smoothing=1.0)


# ---- the pipeline with a fixed detector and an untrained model

def test_pipeline_classifies_each_face_and_times_each_stage(tiny_model):
    pipeline = EmotionPipeline(tiny_model, FixedDetector([(10, 10, 60, 60), (120, 30, 40, 40)]))
    frame = np.random.default_rng(0).integers(0, 256, (120, 200, 3), dtype=np.uint8)
    times = StageTimes()
    results = pipeline(frame, times)
    assert [r.face_id for r in results] == [0, 1]
    for result in results:
        assert result.probabilities.sum() == pytest.approx(1.0, abs=1e-4)
        assert result.label in CLASS_NAMES and len(result.top(3)) == 3
        assert result.top(3)[0][0] == result.label
    assert all(getattr(times, stage) > 0 for stage in ("detect", "align", "classify", "track"))
    assert times.decode == 0 and times.draw is None and times.write is None  # the frame loop's own stages
    pipeline.largest_face = True
    assert [r.box for r in pipeline(frame)] == [(10, 10, 60, 60)]


def test_three_channel_models_get_three_channel_crops(tmp_path):
    model = build_model("seed_cnn", width=0.25, in_channels=3)
    pipeline = EmotionPipeline(model, FixedDetector([(0, 0, 50, 50)]))
    assert pipeline(np.zeros((60, 60), np.uint8))[0].probabilities.shape == (8,)


def test_analyze_frames_yields_one_result_per_frame(tiny_model):
    frames = [np.zeros((100, 100, 3), np.uint8)] * 3
    results = list(analyze_frames(frames, tiny_model, FixedDetector([(20, 20, 50, 50)])))
    assert [r.index for r in results] == [0, 1, 2]
    assert all(len(r.faces) == 1 and r.faces[0].face_id == 0 for r in results)
    rows = log_rows(results[0])
    assert len(rows) == 1 and len(rows[0]) == len(LOG_COLUMNS)


# ---- the frame loop: every stage timed in one place

def test_frame_loop_times_every_stage_that_ran(tmp_path, tiny_model):
    video = write_video(tmp_path / "clip.avi")
    pipeline = EmotionPipeline(tiny_model, FixedDetector([(20, 20, 60, 60)]))
    plain = list(process_frames(open_source(video), pipeline, detect_ahead=False))
    assert [r.index for r in plain] == list(range(12)) and all(len(r.faces) == 1 for r in plain)
    for result in plain:
        times = result.times
        assert all(getattr(times, stage) > 0 for stage in ("decode", "detect", "align", "classify", "track"))
        assert times.draw is None and times.write is None and result.annotated is None
        assert times.total >= times.decode + times.detect + times.align + times.classify + times.track

    log = EmotionLog(tmp_path / "log.csv")
    drawn = list(process_frames(open_source(video), pipeline, [log], draw=True, max_frames=5, detect_ahead=False))
    log.commit()
    assert len(drawn) == 5 and len(pd.read_csv(tmp_path / "log.csv")) == 5
    for result in drawn:
        times = result.times
        assert times.draw > 0 and times.write > 0 and result.annotated.shape == (120, 160, 3)
        assert times.total >= sum(getattr(times, stage) for stage in STAGES if stage != "total")


class ThreadRecordingDetector(FixedDetector):
    """FixedDetector that notes the thread each search ran on and how many frames it searched."""

    def __init__(self, boxes, fail_at: int | None = None):
        super().__init__(boxes)
        self.threads, self.fail_at = [], fail_at

    def __call__(self, frame):
        if len(self.threads) == self.fail_at:
            raise RuntimeError("the detector failed")
        self.threads.append(threading.current_thread().name)
        return super().__call__(frame)


def test_a_video_is_searched_ahead_of_the_loop_with_the_same_results(tmp_path, tiny_model):
    video = write_video(tmp_path / "clip.avi")
    results = {}
    for ahead in (True, False):
        detector = ThreadRecordingDetector([(20, 20, 60, 60), (90, 30, 50, 50)])
        pipeline = EmotionPipeline(tiny_model, detector, video=True)
        results[ahead] = list(process_frames(open_source(video), pipeline, detect_ahead=ahead))
        assert set(detector.threads) == {DETECT_THREAD if ahead else threading.current_thread().name}
    assert len(results[True]) == 12
    for a, b in zip(results[True], results[False]):
        assert a.index == b.index and [f.box for f in a.faces] == [f.box for f in b.faces]
        assert [f.face_id for f in a.faces] == [f.face_id for f in b.faces]
        assert all(np.allclose(f.probabilities, g.probabilities) for f, g in zip(a.faces, b.faces))
    assert reader_threads() == []


def test_photos_are_searched_in_the_loop_and_a_stopped_loop_stops_its_search(tmp_path, tiny_model):
    video = write_video(tmp_path / "clip.avi")
    detector = ThreadRecordingDetector([(20, 20, 60, 60)])
    list(process_frames(open_source(video), EmotionPipeline(tiny_model, detector, video=False)))
    assert set(detector.threads) == {threading.current_thread().name}  # each photo forgotten before the next

    detector = ThreadRecordingDetector([(20, 20, 60, 60)])
    loop = process_frames(open_source(video), EmotionPipeline(tiny_model, detector, video=True))
    next(loop)
    loop.close()
    assert reader_threads() == [] and len(detector.threads) <= 4  # a frame or two ahead at most, then stopped
    assert len(list(process_frames(open_source(video), EmotionPipeline(tiny_model, detector), max_frames=5))) == 5


def test_no_reset_under_the_search_ahead_and_photos_and_cameras_are_searched_in_the_loop(tmp_path, tiny_model):
    video = write_video(tmp_path / "clip.avi")
    pipeline = EmotionPipeline(tiny_model, ThreadRecordingDetector([(20, 20, 60, 60)]))
    loop = process_frames(open_source(video), pipeline)
    next(loop)
    with pytest.raises(RuntimeError, match="cannot be reset while a frame loop searches frames ahead"):
        pipeline.reset()
    with pytest.raises(RuntimeError, match="cannot be called while"):
        pipeline(np.zeros((120, 160, 3), np.uint8))
    loop.close()
    pipeline.reset()  # the loop is over: the detector is the caller's again
    photos = EmotionPipeline(tiny_model, FixedDetector([]), video=False)
    with pytest.raises(ValueError, match="detect_ahead=True needs a video pipeline"):
        next(process_frames(open_source(video), photos, detect_ahead=True))
    frames = [Frame(np.zeros((120, 160, 3), np.uint8), i, i / 30, "camera 0") for i in range(4)]
    camera = FrameSource("camera", "camera 0", None, None, iter(frames))
    detector = ThreadRecordingDetector([(20, 20, 60, 60)])
    assert len(list(process_frames(camera, EmotionPipeline(tiny_model, detector)))) == 4
    assert set(detector.threads) == {threading.current_thread().name}  # what is drawn is what the camera sees now


def test_a_turned_source_stopped_early_stops_the_source(tmp_path):
    source = open_source(write_video(tmp_path / "clip.avi"))
    turned = iter(rotated_source(source, 90))
    assert next(turned).image.shape == (160, 120, 3)
    turned.close()
    assert reader_threads() == []


def test_a_camera_nobody_asks_a_frame_of_is_not_read_on(monkeypatch):
    monkeypatch.setattr("ferlib.video.LIVE_IDLE_S", 0.05)
    read = []

    def camera():
        for index in itertools.count():
            time.sleep(0.002)
            read.append(index)
            yield Frame(np.zeros((2, 2), np.uint8), index, 0.0, "camera")

    frames = read_ahead(camera(), live=True)
    next(frames)  # a notebook takes one frame and moves on
    time.sleep(0.3)
    count = len(read)
    time.sleep(0.3)
    assert len(read) == count and count < 100  # paused after LIVE_IDLE_S, not read at 500 frames/s
    assert next(frames).index == 1  # and reading again when asked
    frames.close()
    assert reader_threads() == []
    with pytest.raises(ValueError, match="depth 0: expected 1 or more"):
        next(read_ahead(iter([1]), depth=0))


def test_a_detector_error_ahead_of_the_loop_is_raised_in_the_loop(tmp_path, tiny_model):
    detector = ThreadRecordingDetector([(20, 20, 60, 60)], fail_at=3)
    loop = process_frames(open_source(write_video(tmp_path / "clip.avi")), EmotionPipeline(tiny_model, detector))
    assert len([next(loop) for _ in range(3)]) == 3
    with pytest.raises(RuntimeError, match="the detector failed"):
        next(loop)
    assert reader_threads() == []


def test_frame_loop_draws_only_the_frames_an_output_asks_for(tmp_path, tiny_model):
    pipeline = EmotionPipeline(tiny_model, FixedDetector([(20, 20, 60, 60)]))
    snapshot = Snapshot(tmp_path / "shot.png", 3)
    results = list(process_frames(open_source(write_video(tmp_path / "clip.avi")), pipeline, [snapshot]))
    assert [r.times.draw is not None for r in results] == [i == 3 for i in range(12)]
    assert snapshot.taken and not (tmp_path / "shot.png").exists()  # written on commit, when the run ended well
    snapshot.commit()
    assert (cv2.imread(str(tmp_path / "shot.png")) == results[3].annotated).mean() > 0.9  # png: lossless


def test_summarize_times_gives_median_mean_and_fps_of_the_stages_that_ran():
    times = [StageTimes(decode=0.001 * k, detect=0.002, classify=0.003, draw=0.004 if k == 1 else None, total=0.01 * k)
             for k in (1, 2, 6)]
    summary = summarize_times(times)
    assert summary.frames == 3 and "write" not in summary.mean_ms
    assert summary.median_ms["decode"] == pytest.approx(2.0) and summary.mean_ms["decode"] == pytest.approx(3.0)
    assert summary.mean_ms["draw"] == pytest.approx(4 / 3) and summary.median_ms["draw"] == 0  # drawn once in 3
    assert summary.mean_ms["total"] == pytest.approx(30.0) and summary.fps == pytest.approx(1000 / 30)
    assert str(summary).startswith("decode 3.0, detect 2.0, align 0.0, classify 3.0, track 0.0, draw 1.3, total")


def test_the_pipeline_benchmark_tabulates_the_frame_loops_own_times(tmp_path, capsys, tiny_model, monkeypatch):
    benchmark = load_benchmark("video_pipeline")
    seen = []

    def watched_loop(*args, **kwargs):  # the shared loop, recording what it timed
        for result in process_frames(*args, **kwargs):
            seen.append(result.times)
            yield result

    monkeypatch.setattr(benchmark, "process_frames", watched_loop)
    write_video(tmp_path / "clip.avi")
    threads = torch.get_num_threads()
    try:
        benchmark.main(["--media", str(tmp_path), "--videos", "clip.avi", "--model", str(tiny_model),
                        "--detectors", "haar", "--engines", "torch:1", "--repeat", "2"])
    finally:
        torch.set_num_threads(threads)
    header, _, row = [[cell.strip() for cell in line.strip("|").split("|")]
                      for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    cells = dict(zip(header, row))
    expected = summarize_times(seen)
    assert len(seen) == 24 and cells["frames"] == "12" and cells["size"] == "160x120"
    for stage in benchmark.STAGES:
        assert float(cells[f"{stage} ms"]) == pytest.approx(expected.mean_ms[stage], abs=0.051), stage
    assert float(cells["end-to-end fps"]) == pytest.approx(expected.fps, abs=0.51)
    later = summarize_times(seen[1:12] + seen[13:])  # each pass's first frame left out
    assert float(cells["fps after the first frame"]) == pytest.approx(later.fps, abs=0.51)


def test_drawing_many_faces_at_the_borders_does_not_fail(tiny_model):
    boxes = [(0, 0, 40, 40), (600, 330, 40, 30), (300, 150, 60, 60), (630, 0, 10, 10)]
    pipeline = EmotionPipeline(tiny_model, FixedDetector(boxes))
    for frame in (np.zeros((360, 640, 3), np.uint8), np.zeros((360, 640), np.uint8), np.zeros((30, 40, 3), np.uint8)):
        results = pipeline(frame)
        drawn = draw_results(frame, results, fps=60.0)
        assert drawn.shape[:2] == frame.shape[:2] and drawn.ndim == 3
        assert drawn.any()


def test_label_panels_go_where_they_hide_no_other_face():
    left_face, right_face = (100, 100, 60, 60), (170, 100, 60, 60)  # a group photo's neighbours
    taken = [left_face, right_face]
    x, y = panel_position((80, 50), left_face, taken, (640, 360))
    assert x + 80 <= 100 and overlap_area((x, y, 80, 50), right_face) == 0  # left of it: the right is the neighbour
    x, y = panel_position((80, 50), (0, 100, 60, 60), [(0, 100, 60, 60), (70, 100, 60, 60)], (640, 360))
    assert y >= 166 and overlap_area((x, y, 80, 50), (70, 100, 60, 60)) == 0  # no room beside it: below
    crowded = [(20 + 70 * i, 20 + 70 * j, 60, 60) for i in range(9) for j in range(5)]  # no free side at all
    x, y = panel_position((80, 50), crowded[20], crowded, (640, 360))
    assert 0 <= x <= 560 and 0 <= y <= 310  # inside the frame, wherever it covers least
    assert summarize_times([]).__str__() == "no frames"


def test_titles_go_under_a_face_where_on_top_they_would_cover_a_neighbour():
    assert title_position((90, 20), (100, 100, 60, 60), [], 360) == (100, 80, 90, 20)  # on top, as a rule
    neighbour = (150, 40, 60, 60)  # higher up and to the right: a title on top would cover its chin
    assert title_position((90, 20), (100, 100, 60, 60), [neighbour], 360) == (100, 162, 90, 20)
    assert title_position((90, 20), (100, 5, 60, 60), [], 360) == (100, 67, 90, 20)  # the frame's top would cut it
    assert title_position((90, 20), (100, 320, 60, 30), [neighbour, (100, 300, 90, 20)], 360)[1] == 300  # no room


def test_letterbox_keeps_the_aspect_ratio():
    out = letterbox(np.full((100, 50, 3), 255, np.uint8), (200, 100))
    assert out.shape == (100, 200, 3) and out[:, 75:125].min() == 255 and out[:, :70].max() == 0


# ---- sources

def test_write_image_is_whole_or_absent(tmp_path):
    image = np.full((20, 30, 3), 200, np.uint8)
    write_image(tmp_path / "shot.png", image)
    assert (cv2.imread(str(tmp_path / "shot.png")) == image).all()
    with pytest.raises(OSError, match=r"shot\.nope"):
        write_image(tmp_path / "shot.nope", image)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shot.png"]


def test_sources_open_videos_images_and_folders(tmp_path):
    video = open_source(write_video(tmp_path / "clip.avi"))
    frames = list(video)
    assert video.kind == "video" and len(frames) == 12 and frames[3].time_s == pytest.approx(0.3)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, shape in enumerate([(50, 60, 3), (80, 40), (30, 30, 4)]):
        cv2.imwrite(str(folder / f"p{i}.png"), np.zeros(shape, np.uint8))
    (folder / "notes.txt").write_text("not an image")
    images = open_source(folder)
    assert images.kind == "images" and [f.image.shape[:2] for f in images] == [(50, 60), (80, 40), (30, 30)]
    assert len(list(open_source(folder / "p1.png"))) == 1


def test_a_folder_of_photos_takes_gifs_and_a_broken_video_prints_one_line(tmp_path, capfd):
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.zeros((40, 50, 3), np.uint8))
    Image.fromarray(np.full((30, 20, 3), 90, np.uint8)).save(folder / "b.gif")
    assert [f.image.shape[:2] for f in open_source(folder)] == [(40, 50), (30, 20)]
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    capfd.readouterr()
    with pytest.raises(SourceError, match="cannot be read as a video"):
        open_source(tmp_path / "junk.mp4")
    assert capfd.readouterr().err == ""  # FFmpeg's own "moov atom not found" is not printed besides the error


def reader_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("ferlib-")]


def test_video_frames_read_ahead_are_the_frames_read_in_the_loop(tmp_path):
    video = write_video(tmp_path / "clip.avi")
    ahead, plain = list(open_source(video)), list(open_source(video, read_ahead=False))
    assert [(f.index, f.time_s) for f in ahead] == [(f.index, f.time_s) for f in plain] and len(ahead) == 12
    assert all((a.image == b.image).all() for a, b in zip(ahead, plain))
    assert reader_threads() == []


def test_a_reader_stopped_early_closes_its_frames(tmp_path):
    closed = []

    def frames():
        try:
            yield from range(1000)
        finally:
            closed.append(True)

    reader = read_ahead(frames())
    assert [next(reader), next(reader)] == [0, 1]
    reader.close()  # as a loop stopped at max_frames, or Ctrl-C
    assert closed == [True] and reader_threads() == []
    untouched = read_ahead(frames())  # never asked for a frame: no thread was started
    assert reader_threads() == []
    untouched.close()


def test_a_read_error_is_raised_in_the_caller_after_the_frames_before_it():
    def frames():
        yield "first"
        raise OSError("the disk went away")

    reader = read_ahead(frames())
    assert next(reader) == "first"
    with pytest.raises(OSError, match="the disk went away"):
        next(reader)
    assert reader_threads() == []


def test_a_live_source_hands_on_its_newest_frame_numbered_without_gaps():
    def camera():  # 30 frames, one every 5 ms
        for index in range(30):
            time.sleep(0.005)
            yield Frame(np.full((2, 2), index, np.uint8), index, index * 0.005, "camera")

    taken = []
    for frame in read_ahead(camera(), live=True):
        time.sleep(0.03)  # a loop slower than the camera
        taken.append(frame)
    assert [frame.index for frame in taken] == list(range(len(taken)))
    shown = [int(frame.image[0, 0]) for frame in taken]
    assert len(taken) < 20 and shown == sorted(shown) and shown[-1] == 29  # stale frames dropped, the last one shown


def write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("make,message", [
    (lambda d: d / "missing.mp4", "no such file"),
    (lambda d: write(d / "broken.mp4", b"not a video"), "cannot be read as a video"),
    (lambda d: write(d / "broken.png", b"\x89PNG junk"), "cannot be read as an image"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "folder has no images"),
    (lambda d: "97", "camera 97: cannot be opened"),
])
def test_unreadable_sources_are_clear_errors(tmp_path, make, message):
    with pytest.raises(SourceError, match=message):
        open_source(make(tmp_path))


# ---- the application

def run_app(capsys, *args) -> tuple[int, str, str]:
    code = video_application.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_app_on_a_video_without_faces_writes_the_video_and_an_empty_log(tmp_path, capsys, tiny_model):
    video, out, log = write_video(tmp_path / "clip.avi"), tmp_path / "annotated.mp4", tmp_path / "emotions.csv"
    code, stdout, _ = run_app(capsys, "--source", video, "--model", tiny_model, "--detector", "haar",
                              "--no-display", "--output", out, "--log", log)
    assert code == 0 and "12 frames, 0 faces" in stdout
    assert list(pd.read_csv(log).columns) == list(LOG_COLUMNS) and len(pd.read_csv(log)) == 0
    written = open_source(out)
    assert written.length == 12 and len(list(written)) == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["annotated.mp4", "clip.avi", "emotions.csv"]


def test_app_takes_a_shipped_models_name_and_flip_tta(tmp_path, capsys):
    log = tmp_path / "emotions.csv"
    code, stdout, err = run_app(capsys, "--source", write_video(tmp_path / "clip.avi", 3), "--model",
                                "ferplus_cnn_balanced", "--tta", "--detector", "haar", "--no-display", "--log", log)
    assert code == 0, err
    assert "3 frames" in stdout and list(pd.read_csv(log).columns) == list(LOG_COLUMNS)


@pytest.mark.parametrize("args,message", [
    (["--model", "{tmp}/missing.safetensors"], "model file not found"),
    (["--model", "{tmp}/junk.safetensors"], "not a safetensors model file"),
    (["--model", "{tmp}/pickle.pt"], "not a safetensors model file"),
    (["--model", "ferplus_cnn_balance"], "neither a shipped model (ferplus_cnn_robust, "),
    (["--source", "{tmp}/missing.mp4"], "no such file"),
    (["--source", "{tmp}/junk.safetensors"], "cannot be read as a video"),
    (["--source", "98"], "camera 98: cannot be opened"),
    (["--output", "{tmp}/out.gif"], "must end in .mp4"),
    (["--output", "{tmp}/out.mp4", "--log", "{tmp}/clip.avi/log.csv"], "clip.avi"),
    (["--snapshot", "{tmp}/out.txt"], "out.txt: cannot write an image of type '.txt' (expected .png"),
])
def test_app_bad_input_is_a_message_and_exit_2(tmp_path, capsys, tiny_model, args, message):
    (tmp_path / "junk.safetensors").write_bytes(os.urandom(64))
    torch.save({"weights": torch.zeros(2)}, tmp_path / "pickle.pt")
    video = write_video(tmp_path / "clip.avi", frames=2)
    base = ["--source", video, "--model", tiny_model, "--detector", "haar", "--no-display"]
    code, _, err = run_app(capsys, *base, *[a.format(tmp=tmp_path) for a in args])
    assert code == 2 and message in err and "Traceback" not in err
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".") or p.name.startswith("out.")]


def test_app_without_a_display_says_so(tmp_path, capsys, tiny_model, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    code, _, err = run_app(capsys, "--source", write_video(tmp_path / "clip.avi", 2), "--model", tiny_model)
    assert code == 2 and "--no-display" in err


def test_app_window_shows_drawn_frames_until_q(tmp_path, capsys, tiny_model, monkeypatch):
    shown, keys = [], iter([-1, -1, ord("q")])
    monkeypatch.setattr(video_application, "has_display", lambda: True)
    monkeypatch.setattr(cv2, "imshow", lambda window, image: shown.append(image))
    monkeypatch.setattr(cv2, "waitKey", lambda delay: next(keys))
    monkeypatch.setattr(cv2, "destroyAllWindows", lambda: None)
    code, stdout, _ = run_app(capsys, "--source", write_video(tmp_path / "clip.avi"), "--model", tiny_model,
                              "--detector", "haar", "--log", tmp_path / "log.csv")
    assert code == 0 and "3 frames" in stdout and "(q pressed)" in stdout and "draw" in stdout
    assert len(shown) == 3 and all(image.shape == (120, 160, 3) for image in shown)


def fail_at_frame(monkeypatch, frame: int, error: BaseException) -> None:
    """Make the frame loop raise ``error`` at its ``frame``-th frame (counting from 1), in the loop's own thread."""
    calls = {"n": 0}
    original = EmotionPipeline.read_faces

    def failing(self, image, faces, times=None):
        calls["n"] += 1
        if calls["n"] == frame:
            raise error
        return original(self, image, faces, times)

    monkeypatch.setattr(EmotionPipeline, "read_faces", failing)


def test_app_failure_midway_leaves_no_partial_files(tmp_path, capsys, tiny_model, monkeypatch):
    fail_at_frame(monkeypatch, 4, OSError("disk full"))
    code, _, err = run_app(capsys, "--source", write_video(tmp_path / "clip.avi"), "--model", tiny_model,
                           "--detector", "haar", "--no-display", "--output", tmp_path / "a.mp4",
                           "--log", tmp_path / "a.csv")
    assert code == 1 and "disk full" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.avi"]


def test_app_on_a_folder_of_photos(tmp_path, capsys, tiny_model):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.jpg"), np.full((60 + 10 * i, 80, 3), 50 * i, np.uint8))
    (folder / "3.jpg").write_bytes(b"not a jpeg")
    code, stdout, stderr = run_app(capsys, "--source", folder, "--model", tiny_model, "--detector", "haar",
                              "--no-display", "--log", tmp_path / "log.csv", "--output", tmp_path / "photos.avi")
    assert code == 0 and "3 frames" in stdout
    assert "skipped" in stderr and "3.jpg: cannot be read as an image" in stderr
    assert len(pd.read_csv(tmp_path / "log.csv")) == 0


def test_the_app_sums_a_folders_faces_up_in_one_line(tmp_path, capsys, tiny_model, monkeypatch):
    monkeypatch.setattr("ferlib.video.build_detector", lambda name, **options: FixedDetector([(5, 5, 40, 40),
                                                                                             (50, 5, 40, 40)]))
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.jpg"), np.full((60, 100, 3), 50 * i, np.uint8))
    code, stdout, _ = run_app(capsys, "--source", folder, "--model", tiny_model, "--no-display")
    assert code == 0 and "3 frames, 6 faces" in stdout
    assert "labels of the 6 faces: " in stdout and "face #" not in stdout  # photos' faces are not followed


# ---- the sample videos (skipped without ../shared/media)

@pytest.fixture(scope="module")
def shipped_model():
    if not SHIPPED.is_file():
        pytest.skip(f"{SHIPPED} is not committed yet")
    return SHIPPED


def app_log(capsys, tmp_path, video: Path, model: Path) -> pd.DataFrame:
    log = tmp_path / f"{video.stem}.csv"
    code, _, err = run_app(capsys, "--source", video, "--model", model, "--no-display", "--log", log)
    assert code == 0, err
    return pd.read_csv(log)


def test_single_face_video_finds_the_face_every_frame_and_the_smile(tmp_path, capsys, media, shipped_model):
    log = app_log(capsys, tmp_path, media / "single_face.mp4", shipped_model)
    assert sorted(log["frame"]) == list(range(72)) and set(log["face_id"]) == {0}
    assert (log.loc[log["frame"] < 10, "label"] == "neutral").all()
    middle = log[(log["frame"] >= 30) & (log["frame"] < 60)]
    assert (middle["label"] == "happiness").mean() > 0.9
    assert np.allclose(log[list(CLASS_NAMES)].sum(axis=1), 1.0, atol=1e-3)


def test_no_face_video_has_no_faces(tmp_path, capsys, media, shipped_model):
    assert len(app_log(capsys, tmp_path, media / "no_face.mp4", shipped_model)) == 0


def test_faces_stop_when_the_scene_cuts(tmp_path, capsys, media, shipped_model):
    log = app_log(capsys, tmp_path, media / "face_then_no_face.mov", shipped_model)
    frames_with_face = set(log["frame"])
    assert len(frames_with_face & set(range(60))) >= 57
    assert not frames_with_face & set(range(80, 169))


def test_app_reports_the_frame_loops_stage_times_drawing_only_when_asked(tmp_path, capsys, tiny_model):
    video = write_video(tmp_path / "clip.avi")
    base = ["--source", video, "--model", tiny_model, "--detector", "haar", "--no-display"]
    stages = {}
    for name, outputs in (("log", ["--log", tmp_path / "a.csv"]), ("video", ["--output", tmp_path / "a.mp4"])):
        code, stdout, _ = run_app(capsys, *base, *outputs)
        assert code == 0
        line = stdout.split("ms per frame: ")[1].splitlines()[0]
        stages[name] = {stage: float(ms) for stage, ms in (part.split() for part in line.split(", "))}
    assert list(stages["log"]) == ["decode", "detect", "align", "classify", "track", "write", "total"]
    assert list(stages["video"]) == ["decode", "detect", "align", "classify", "track", "draw", "write", "total"]
    assert stages["video"]["total"] > 0  # (a faceless 160x120 frame draws in well under 0.05 ms)


def test_read_frame_is_the_frame_the_source_yields(tmp_path):
    video = write_video(tmp_path / "clip.avi")
    assert (read_frame(video, 7) == list(open_source(video))[7].image).all()
    with pytest.raises(SourceError, match="has no frame 12"):
        read_frame(video, 12)


def test_app_snapshot_saves_one_annotated_frame(tmp_path, capsys, tiny_model):
    video = write_video(tmp_path / "clip.avi")
    base = ["--source", video, "--model", tiny_model, "--detector", "haar", "--no-display"]
    code, stdout, _ = run_app(capsys, *base, "--snapshot", tmp_path / "shot.png", "--snapshot-frame", 5)
    assert code == 0 and cv2.imread(str(tmp_path / "shot.png")).shape == (120, 160, 3)
    # refused before any frame is read when the frame count is known (the header's, --max-frames)
    code, _, err = run_app(capsys, *base, "--snapshot", tmp_path / "late.png", "--snapshot-frame", 99)
    assert code == 2 and "--snapshot-frame 99: " in err and "expected 0 to" in err and len(err.splitlines()) == 1
    code, _, err = run_app(capsys, *base, "--snapshot", tmp_path / "late.png", "--snapshot-frame", 3,
                           "--max-frames", 3)
    assert code == 2 and "gives 3 frame(s) here; expected 0 to 2" in err
    assert not (tmp_path / "late.png").exists()


# ---- bad arguments, odd sources and interruptions

@pytest.mark.parametrize("args,message", [
    (["--output", "{tmp}/x.mp4", "--log", "{tmp}/x.mp4"], "--output and --log are the same file"),
    (["--log", "{tmp}/x.csv", "--snapshot", "{tmp}/./x.csv"], "--log and --snapshot are the same file"),
    (["--max-frames", "-1"], "--max-frames: -1: expected 0 or more"),
    (["--min-face", "-5"], "--min-face: -5: expected 0 or more"),
    (["--threads", "0"], "--threads: 0: expected 1 or more"),
    (["--rotate", "45"], "--rotate: invalid choice: 45"),
    (["--snapshot-frame", "3"], "--snapshot-frame: names a frame for --snapshot, which is not given"),
    (["--source", "{tmp}/in.mp4", "--output", "{tmp}/in.mp4"], "--output: {tmp}/in.mp4 is the --source being read"),
    (["--source", "{tmp}/in.mp4", "--log", "{tmp}/./in.mp4"], "--log: {tmp}/in.mp4 is the --source being read"),
])
def test_app_refuses_bad_arguments_before_reading_anything(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        video_application.main(["--no-display", *[a.format(tmp=tmp_path) for a in args]])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message.format(tmp=tmp_path) in err
    assert len(err.strip().splitlines()) == 1, err  # one line, not argparse's usage block
    assert list(tmp_path.iterdir()) == []


def test_a_numbered_file_read_as_the_source_is_not_overwritten(tmp_path, capsys, monkeypatch):
    """A number that names an existing file is that file, not a camera (ferlib.video.names_camera), so it is
    protected as any other --source is."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "2024").write_bytes(b"a video")
    with pytest.raises(SystemExit) as exit_info:
        video_application.main(["--no-display", "--source", "2024", "--output", "2024"])
    assert exit_info.value.code == 2 and "--output: 2024 is the --source being read" in capsys.readouterr().err
    assert (tmp_path / "2024").read_bytes() == b"a video"


def test_a_one_frame_source_is_one_frame(tmp_path, capsys, tiny_model):
    from PIL import Image

    still = tmp_path / "still.gif"
    Image.fromarray(np.full((120, 160, 3), 90, np.uint8)).save(still)
    renamed = tmp_path / "png.mp4"
    cv2.imwrite(str(renamed.with_suffix(".png")), np.full((120, 160, 3), 90, np.uint8))
    renamed.with_suffix(".png").rename(renamed)
    for source in (still, renamed):
        code, stdout, _ = run_app(capsys, "--source", source, "--model", tiny_model, "--detector", "haar",
                                  "--no-display", "--log", tmp_path / "log.csv")
        assert code == 0 and "1 frames" in stdout


def test_ctrl_c_on_a_file_writes_nothing_and_says_so(tmp_path, capsys, tiny_model, monkeypatch):
    fail_at_frame(monkeypatch, 4, KeyboardInterrupt())
    code, _, err = run_app(capsys, "--source", write_video(tmp_path / "clip.avi"), "--model", tiny_model,
                           "--detector", "haar", "--no-display", "--output", tmp_path / "a.mp4",
                           "--log", tmp_path / "a.csv", "--snapshot", tmp_path / "a.png", "--snapshot-frame", 1)
    assert code == 130 and "interrupted at frame 3" in err and "none was written" in err
    assert "Traceback" not in err and sorted(p.name for p in tmp_path.iterdir()) == ["clip.avi"]


def test_a_video_that_ends_early_is_warned_about(tmp_path, capsys, tiny_model):
    video = write_video(tmp_path / "clip.avi", frames=40)
    data = video.read_bytes()
    video.write_bytes(data[:len(data) // 2])  # the header still announces 40 frames
    code, _, err = run_app(capsys, "--source", video, "--model", tiny_model, "--detector", "haar", "--no-display",
                           "--log", tmp_path / "log.csv")
    assert code == 0 and "ended after" in err and "of the 40 frames" in err


def test_outputs_in_a_read_only_place_name_the_requested_file(tmp_path, capsys, tiny_model):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = run_app(capsys, "--source", write_video(tmp_path / "clip.avi", 2), "--model", tiny_model,
                           "--detector", "haar", "--no-display", "--log", blocker / "log.csv")
    assert code == 2 and f"{blocker / 'log.csv'}: {blocker} is a file, not a folder" in err


def test_a_rotated_source_turns_every_frame_clockwise(tmp_path):
    video = write_video(tmp_path / "clip.avi", frames=3, size=(160, 120))
    plain = [frame.image for frame in open_source(video)]
    for degrees, turns in ((90, -1), (180, -2), (270, -3)):
        frames = list(rotated_source(open_source(video), degrees))
        assert [frame.index for frame in frames] == [0, 1, 2]
        for frame, image in zip(frames, plain):
            assert np.array_equal(frame.image, np.rot90(image, turns)) and frame.image.flags["C_CONTIGUOUS"]
    source = open_source(video)
    assert rotated_source(source, 0) is source
    for degrees in (45, -90, True, "90"):
        with pytest.raises(ValueError, match="expected 0, 90, 180 or 270 degrees clockwise"):
            rotated_source(source, degrees)


def test_app_turns_a_sideways_camera_upright(tmp_path, capsys, tiny_model):
    out = tmp_path / "annotated.mp4"
    code, stdout, err = run_app(capsys, "--source", write_video(tmp_path / "clip.avi", 4, size=(160, 120)), "--model",
                                tiny_model, "--detector", "haar", "--no-display", "--rotate", 90, "--output", out)
    assert code == 0, err
    written = list(open_source(out))
    assert len(written) == 4 and written[0].image.shape[:2] == (160, 120)  # 120 wide, 160 high: turned


# ---- what users' own videos brought up (a review, 2026-11-29)

def test_a_number_is_a_camera_only_when_no_file_has_that_name_and_a_bad_index_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("2024").mkdir()
    cv2.imwrite("2024/photo.png", np.full((60, 80, 3), 90, np.uint8))
    folder = open_source("2024")
    assert folder.kind == "images" and folder.length == 1
    for index in (-1, "-1", 10 ** 12):  # OpenCV crashes the process on a negative index: refused before it
        with pytest.raises(SourceError, match=f"camera {index}: expected a camera index from 0 to 9999"):
            open_source(index)
    with pytest.raises(SourceError, match="no such file, folder or camera"):
        open_source("\u00b2")  # a digit to str.isdigit, not a camera index
    with pytest.raises(SourceError, match="expected a camera index"):
        open_source("9" * 300)  # a name too long for a file: a number, not an OSError


def test_a_folder_names_the_videos_it_holds_among_the_skipped_files(tmp_path):
    cv2.imwrite(str(tmp_path / "photo.png"), np.full((60, 80, 3), 90, np.uint8))
    write_video(tmp_path / "clip.avi")
    source = open_source(tmp_path)
    assert source.length == 1 and len(source.skipped) == 1 and "clip.avi: a video" in source.skipped[0]
    (tmp_path / "photo.png").unlink()
    with pytest.raises(SourceError, match=r"no images .*1 video\(s\): give each video as the source"):
        open_source(tmp_path)


def test_a_video_of_variable_frame_rate_is_timed_by_its_frames_and_not_called_cut_short(tmp_path):
    from ferlib.video import cut_short

    # what OpenCV says of a phone's clip: 320 frames at 30 fps by its header (10.7 s), 40 real frames up to 10.2 s
    vfr = FrameSource("video", "phone.mp4", 30.0, 320, iter(()))
    assert cut_short(vfr, 40, 10.167) is None
    assert "ended after 23 of the 72 frames" in cut_short(FrameSource("video", "cut.mp4", 30.0, 72, iter(())), 23, 0.733)
    assert cut_short(FrameSource("video", "whole.mp4", 30.0, 72, iter(())), 72, 2.367) is None
    assert cut_short(FrameSource("images", "folder", None, 5, iter(())), 2, None) is None
    frames = list(open_source(write_video(tmp_path / "clip.avi", frames=5)))  # 10 fps: each frame's own time
    assert [frame.time_s for frame in frames] == [0.0, 0.1, 0.2, 0.3, 0.4]


def test_a_timed_video_output_holds_each_frame_as_long_as_its_timestamp_says(tmp_path):
    from ferlib.video import FrameResult, VideoOutput

    output = VideoOutput(tmp_path / "out.avi", fps=10.0, timed=True)
    image = np.zeros((48, 64, 3), np.uint8)
    for index, time_s in enumerate((0.0, 0.1, 0.2, 1.0, 1.1)):  # a pause of 0.8 s after the third frame
        output.write(FrameResult(index, time_s, "clip", [], StageTimes(), image))
    output.commit()
    assert int(cv2.VideoCapture(str(tmp_path / "out.avi")).get(cv2.CAP_PROP_FRAME_COUNT)) == 12  # 1.2 s at 10 fps
    overnight = VideoOutput(tmp_path / "night.avi", fps=10.0, timed=True)
    copies = [overnight.timed_copies(t) for t in (0.0, 0.1, 3600.0, 3600.1, 3600.2)]
    assert copies == [1, 1, 100, 1, 1]  # an hour's pause held for MAX_HOLD_S (10 s), and the frames after it not
    fast = VideoOutput(tmp_path / "fast.avi", fps=10.0, timed=True)
    copies = [fast.timed_copies(i / 40) for i in range(9)]  # 0.2 s of 40 fps into 10 fps: 3 frames, kept in time
    assert sum(copies) == 3 and max(copies) == 1 and copies[0] == 1


def test_read_frame_refuses_a_bad_index_before_decoding(tmp_path):
    video = write_video(tmp_path / "clip.avi", frames=3)
    for index in (-1, 2.5, True):
        with pytest.raises(ValueError, match="expected a frame number, 0 or more"):
            read_frame(video, index)


@pytest.mark.parametrize("args,message", [
    (["--max-frames", "0"], "--max-frames: 0: expected 1 or more"),
    (["--log", "{tmp}/faces.xlsx"], "--log: {tmp}/faces.xlsx: the log is CSV; expected a file name ending in .csv"),
])
def test_app_refuses_a_log_that_is_not_csv_and_zero_frames(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        video_application.main(["--no-display", *[a.format(tmp=tmp_path) for a in args]])
    assert exit_info.value.code == 2 and message.format(tmp=tmp_path) in capsys.readouterr().err


def test_app_expands_the_home_folder_in_its_outputs_too(tmp_path, capsys, tiny_model, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    write_video(tmp_path / "clip.avi", frames=3)
    code, _, _ = run_app(capsys, "--source=~/clip.avi", "--model", tiny_model, "--detector", "haar",
                         "--no-display", "--log=~/faces.csv")
    assert code == 0 and (tmp_path / "faces.csv").is_file() and not Path("~").exists()


def test_app_interrupted_before_its_first_frame_says_so_in_one_line(tmp_path, capsys, tiny_model, monkeypatch):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(video_application, "open_input", interrupted)
    code, _, err = run_app(capsys, "--source", write_video(tmp_path / "clip.avi"), "--model", tiny_model,
                           "--no-display", "--log", tmp_path / "a.csv")
    assert code == 130 and err.strip() == "interrupted before the first frame; nothing was written"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.avi"]


def test_app_stopped_by_sigterm_discards_its_outputs(tmp_path, capsys, tiny_model, monkeypatch):
    import signal

    calls = {"n": 0}
    read_faces = EmotionPipeline.read_faces

    def terminated_at_frame_4(self, image, faces, times=None):  # as `timeout` or `docker stop` would
        calls["n"] += 1
        if calls["n"] == 4:
            os.kill(os.getpid(), signal.SIGTERM)
        return read_faces(self, image, faces, times)

    monkeypatch.setattr(EmotionPipeline, "read_faces", terminated_at_frame_4)
    original = signal.getsignal(signal.SIGTERM)
    code, _, err = run_app(capsys, "--source", write_video(tmp_path / "clip.avi"), "--model", tiny_model,
                           "--detector", "haar", "--no-display", "--output", tmp_path / "a.mp4",
                           "--log", tmp_path / "a.csv")
    assert code == 130 and "none was written" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.avi"]  # no hidden part-files either
    assert signal.getsignal(signal.SIGTERM) == original  # the app's handler is the app's only


def test_app_keeps_nohup_s_ignored_hangup_and_a_camera_s_recording_through_a_second_ctrl_c(tmp_path, capsys,
                                                                                          tiny_model, monkeypatch):
    import signal

    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as nohup starts the app
    try:
        video_application.main(["--source", str(write_video(tmp_path / "clip.avi", 2)), "--model", str(tiny_model),
                                "--detector", "haar", "--no-display"])
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)
    # a camera is stopped with Ctrl-C; another one while it closes must not lose what was recorded
    opened = video_application.open_input

    def as_camera(args):
        source, pipeline = opened(args)
        return FrameSource("camera", "camera 0", 10.0, None, source.frames), pipeline

    def close_with_a_second_ctrl_c(self):
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(video_application, "open_input", as_camera)
    monkeypatch.setattr(EmotionPipeline, "close", close_with_a_second_ctrl_c)
    fail_at_frame(monkeypatch, 3, KeyboardInterrupt())
    code, _, err = run_app(capsys, "--source", write_video(tmp_path / "cam.avi"), "--model", tiny_model,
                           "--detector", "haar", "--no-display", "--log", tmp_path / "cam.csv")
    assert code == 0 and "interrupted" not in err
    assert len(pd.read_csv(tmp_path / "cam.csv")) == 0 and (tmp_path / "cam.csv").is_file()


@pytest.mark.parametrize("ahead", [True, False])
def test_closing_a_source_releases_its_capture_even_before_its_first_frame(tmp_path, ahead):
    for frames_read in (0, 2):
        source = open_source(write_video(tmp_path / "clip.avi"), read_ahead=ahead)
        capture = source.release.__self__  # the cv2.VideoCapture behind the frames
        for _ in range(frames_read):
            next(iter(source))
        assert capture.isOpened()
        source.close()
        assert not capture.isOpened()
