"""benchmarks/cross_dataset.py and the measurements behind it (ferlib.measure): sequences voted by majority, recall
per class, the detect path's largest face and missed faces, the JSON report and the errors for a bad data folder, on
a small synthetic folder made here; and, when ../shared/xdata is present, the committed report against a fresh
measurement."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from conftest import SHARED, load_benchmark
from ferlib.data import CLASS_NAMES
from ferlib.faces import Face, fer_detection_frame
from ferlib.measure import (NO_FACE, XDATA_COLUMNS, classify_directly, cross_set_scores, detect_and_classify,
                            read_xdata_images, read_xdata_labels, recall_summary, sequence_votes, tight_crop_frame)
from ferlib.recognizer import EmotionRecognizer
from ferlib.synthetic import cartoon_face

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "models" / "ferplus_cnn.safetensors"
# the direct path re-measured with the 7-bit int8 twins (the full report, both paths, is the 8-bit twins')
REPORT = REPO / "reports" / "cross_dataset" / "cross_dataset_direct.json"
XDATA = SHARED / "xdata"
C = {name: i for i, name in enumerate(CLASS_NAMES)}


def one_hot(*classes, weight: float = 0.9) -> np.ndarray:
    """Probability rows, each ``weight`` on its class (a NaN row for NO_FACE)."""
    rows = np.full((len(classes), len(CLASS_NAMES)), (1 - weight) / (len(CLASS_NAMES) - 1), np.float32)
    for row, c in zip(rows, classes):
        if c == NO_FACE:
            row[:] = np.nan
        else:
            row[c] = weight
    return rows


def label_row(dataset: str, label: str, file: str, image: np.ndarray) -> dict:
    return {"dataset": dataset, "label": label, "file": file, "width": image.shape[1], "height": image.shape[0],
            "source_repo": "synthetic", "source_commit": "", "source_path": file, "sha1": "0" * 40}


@pytest.fixture
def xdata(tmp_path) -> Path:
    """A folder in xdata's layout: CK+48 sequences S001_001 (happiness, 3 frames), S002_003 (contempt, 3 frames);
    muxspace: two colour and one gray crop, one of them contempt."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "xdata"
    rows = []
    for sequence, label in (("S001_001", "happiness"), ("S002_003", "contempt")):
        for frame in range(3):
            file = f"ckplus48/{label}/{sequence}_{frame + 10:08d}.png"
            rows.append(label_row("ckplus48", label, file, cartoon_face(C[label], rng)))
    for i, label in enumerate(("surprise", "anger", "contempt")):
        face = cv2.resize(cartoon_face(C[label], rng), (90, 110))
        image = face if i == 2 else cv2.merge([face, face // 2, face])
        rows.append(label_row("muxspace", label, f"muxspace/{label}/{i}.png", image))
        rows[-1]["image"] = image
    for row in rows:
        path = folder / row["file"]
        path.parent.mkdir(parents=True, exist_ok=True)
        image = row.pop("image", None)
        cv2.imwrite(str(path), image if image is not None else cartoon_face(C[row["label"]], rng))
    pd.DataFrame(rows, columns=XDATA_COLUMNS).to_csv(folder / "labels.csv", index=False)
    return folder


# ------------------------------------------------------------------------------------------------- the measurements

def test_a_sequence_is_what_most_of_its_frames_say():
    probabilities = np.concatenate([
        one_hot(C["anger"], C["anger"]), one_hot(C["disgust"], weight=1.0),  # 2 votes beat 1 confident vote
        one_hot(C["surprise"], C["fear"], weight=0.6), one_hot(C["disgust"], weight=0.9),  # 3-way tie: most mass
        one_hot(NO_FACE, NO_FACE, C["happiness"]),  # two frames without a face: the sequence has none
        one_hot(NO_FACE, C["sadness"]),  # a tie with a missed frame goes to the class
    ])
    sequences = ["S1_1"] * 3 + ["S2_1"] * 3 + ["S3_1"] * 3 + ["S4_1"] * 2
    names, votes = sequence_votes(probabilities, sequences)
    assert names == ["S1_1", "S2_1", "S3_1", "S4_1"]
    assert votes.tolist() == [C["anger"], C["disgust"], NO_FACE, C["sadness"]]


def test_recall_per_class_counts_only_the_classes_present_and_missed_faces_as_wrong():
    truth = [C["anger"]] * 4 + [C["happiness"]] * 2
    predicted = [C["anger"], C["anger"], C["disgust"], NO_FACE, C["happiness"], C["neutral"]]
    scores = recall_summary(truth, predicted)
    assert scores["recall"] == {"happiness": 0.5, "anger": 0.5}  # CLASS_NAMES order; absent classes left out
    assert scores["macro_recall"] == 0.5 and scores["accuracy"] == pytest.approx(3 / 6)
    assert scores["found"] == pytest.approx(5 / 6) and scores["support"] == {"happiness": 2, "anger": 4}
    confusion = np.array(scores["confusion"])
    assert confusion.shape == (8, 9) and confusion[C["anger"], -1] == 1 and confusion.sum() == 6
    assert confusion[C["anger"], C["disgust"]] == 1 and confusion[C["happiness"], C["neutral"]] == 1


def test_sets_drop_contempt_and_vote_sequences(xdata):
    table = read_xdata_labels(xdata)
    assert table["sequence"].tolist() == ["S001_001"] * 3 + ["S002_003"] * 3 + [""] * 3
    # happiness sequence: 2 of 3 frames right; contempt sequence read as neutral; muxspace: surprise right only
    probabilities = one_hot(C["happiness"], C["happiness"], C["sadness"], *[C["neutral"]] * 3,
                            C["surprise"], NO_FACE, C["contempt"])
    scores = cross_set_scores(table, probabilities)
    assert {key: (s["unit"], s["items"]) for key, s in scores.items()} == {
        "ckplus48": ("image", 6), "ckplus48_no_contempt": ("image", 3), "ckplus48_sequences": ("sequence", 2),
        "ckplus48_sequences_no_contempt": ("sequence", 1), "muxspace_no_contempt": ("image", 2),
        "muxspace": ("image", 3)}
    assert scores["ckplus48"]["accuracy"] == pytest.approx(2 / 6)
    assert scores["ckplus48_no_contempt"]["accuracy"] == pytest.approx(2 / 3)
    assert scores["ckplus48_sequences"]["recall"] == {"happiness": 1.0, "contempt": 0.0}
    assert scores["ckplus48_sequences_no_contempt"]["accuracy"] == 1.0
    assert scores["muxspace_no_contempt"]["accuracy"] == 0.5 and scores["muxspace_no_contempt"]["found"] == 0.5
    assert scores["muxspace"]["recall"] == {"surprise": 1.0, "anger": 0.0, "contempt": 1.0}


def test_a_tight_crop_is_prepared_as_fer_crops_are():
    crop = cartoon_face(3, np.random.default_rng(1))
    assert np.array_equal(tight_crop_frame(crop), fer_detection_frame(crop))  # 4x and a 48-pixel border
    large = np.zeros((350, 300, 3), np.uint8)
    assert tight_crop_frame(large).shape == (350 + 2 * 75, 300 + 2 * 75, 3)  # not enlarged; a quarter of 300


class TwoFaces:
    """A stand-in detector: no face in a plain frame; otherwise a small face over the dark right half, listed first,
    and a large one over the bright left half."""
    name = "two_faces"

    def __call__(self, frame):
        if frame.std() == 0:
            return []
        return [Face((170, 100, 50, 50), 0.9), Face((60, 70, 80, 80), 0.9)]

    def reset(self):
        pass

    def close(self):
        pass


class BrightnessEngine:
    """A stand-in model: happiness for a bright crop, sadness for a dark one."""
    name = "brightness"

    def predict(self, crops):
        return one_hot(*[C["happiness"] if crop.mean() > 128 else C["sadness"] for crop in crops])


def test_the_detect_path_answers_with_the_largest_face_and_marks_missed_faces():
    half_bright = np.full((48, 48), 30, np.uint8)
    half_bright[:, :24] = 220
    images = [half_bright, np.full((48, 48), 90, np.uint8), half_bright[:, ::-1].copy()]
    probabilities, found = detect_and_classify({"a": BrightnessEngine(), "b": SHIPPED}, images, TwoFaces(),
                                               progress=False)
    assert found.tolist() == [True, False, True]
    assert probabilities["a"][[0, 2]].argmax(axis=1).tolist() == [C["happiness"], C["sadness"]]
    assert np.isnan(probabilities["a"][1]).all() and np.isnan(probabilities["b"][1]).all()
    # the second model got the same largest face: what EmotionRecognizer(model).detect_emotions gives for it
    alone = EmotionRecognizer(SHIPPED, detector=TwoFaces()).detect_emotions(tight_crop_frame(images[0]))
    assert np.array_equal(probabilities["b"][0], np.float32([alone[0].probabilities[n] for n in CLASS_NAMES]))


# ------------------------------------------------------------------------------------------------- the benchmark

def test_the_benchmark_writes_every_figure_to_json(xdata, tmp_path, capsys):
    out = tmp_path / "reports" / "cross.json"
    code = load_benchmark("cross_dataset").main(["--data-dir", str(xdata), "--no-shipped", "--weights", str(SHIPPED),
                                                 "--paths", "direct", "--json", str(out), "--no-progress"])
    assert code == 0
    report = json.loads(out.read_text())
    assert [p.name for p in out.parent.iterdir()] == ["cross.json"]  # no temporary file left beside it
    rows = {row["set"]: row for row in report["results"]}
    assert {row["model"] for row in report["results"]} == {"ferplus_cnn"} and len(rows) == 6
    table = read_xdata_labels(xdata)
    predicted = EmotionRecognizer(SHIPPED).classify_faces(read_xdata_images(xdata, table["file"], False)).argmax(1)
    right = predicted == np.array([C[label] for label in table["label"]])
    assert rows["ckplus48"]["accuracy"] == pytest.approx(right[:6].mean())
    assert rows["muxspace"]["accuracy"] == pytest.approx(right[6:].mean())
    assert rows["muxspace_no_contempt"]["items"] == 2 and rows["ckplus48_sequences"]["items"] == 2
    assert report["fer_quoted_not_measured"]["muxspace_no_contempt"] == 0.452
    printed = capsys.readouterr().out
    assert "| ferplus_cnn | direct (classify_faces) |" in printed and "fer (quoted" in printed
    assert "## Recall per class: CK+48 sequences" in printed


def test_the_benchmark_with_flip_tta_reads_each_face_and_its_mirror_image(xdata, tmp_path, capsys):
    out = tmp_path / "cross_tta.json"
    assert load_benchmark("cross_dataset").main(["--data-dir", str(xdata), "--no-shipped", "--weights", str(SHIPPED),
                                                 "--tta", "--paths", "direct", "--json", str(out), "--no-progress"]) == 0
    report = json.loads(out.read_text())
    assert report["flip_tta"] is True and "flip TTA" in report["models"]["ferplus_cnn, flip TTA"]["engine"]
    rows = {row["set"]: row for row in report["results"]}
    table = read_xdata_labels(xdata)
    predicted = EmotionRecognizer(SHIPPED, tta=True).classify_faces(
        read_xdata_images(xdata, table["file"], False)).argmax(1)
    right = predicted == np.array([C[label] for label in table["label"]])
    assert rows["ckplus48"]["accuracy"] == pytest.approx(right[:6].mean())
    assert rows["muxspace"]["accuracy"] == pytest.approx(right[6:].mean())
    assert "| ferplus_cnn, flip TTA | direct (classify_faces) |" in capsys.readouterr().out


def test_an_ensemble_is_measured_as_one_model_the_mean_of_its_members(xdata, tmp_path, capsys):
    out = tmp_path / "cross_ensemble.json"
    members = ["ferplus_cnn", "ferplus_cnn_aligned"]
    assert load_benchmark("cross_dataset").main(["--data-dir", str(xdata), "--no-shipped", "--ensemble", *members,
                                                 "--paths", "direct", "--json", str(out), "--no-progress"]) == 0
    report = json.loads(out.read_text())
    assert list(report["models"]) == ["ferplus_cnn + ferplus_cnn_aligned"]
    assert report["models"]["ferplus_cnn + ferplus_cnn_aligned"]["file"] == [
        "models/ferplus_cnn.safetensors", "models/ferplus_cnn_aligned.safetensors"]
    rows = {row["set"]: row for row in report["results"]}
    table = read_xdata_labels(xdata)
    images = read_xdata_images(xdata, table["file"], False)
    mean = np.mean([EmotionRecognizer(name).classify_faces(images) for name in members], axis=0)
    right = mean.argmax(1) == np.array([C[label] for label in table["label"]])
    assert rows["ckplus48"]["accuracy"] == pytest.approx(right[:6].mean())
    assert rows["muxspace"]["accuracy"] == pytest.approx(right[6:].mean())
    assert "| ferplus_cnn + ferplus_cnn_aligned | direct (classify_faces) |" in capsys.readouterr().out


def test_a_report_is_redrawn_without_measuring(xdata, tmp_path, capsys):
    out, figure = tmp_path / "cross.json", tmp_path / "bars.png"
    assert load_benchmark("cross_dataset").main(["--data-dir", str(xdata), "--no-shipped", "--weights", str(SHIPPED),
                                                 "--paths", "direct", "--json", str(out), "--no-progress"]) == 0
    measured = capsys.readouterr().out
    assert load_benchmark("cross_dataset").main(["--from-json", str(out), "--figure", str(figure)]) == 0
    assert capsys.readouterr().out == measured
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("content", ["not json", '{"results": []}', '{"results": [{"set": "mnist"}], '
                                                                     '"detect_found_rate": {}}'])
def test_a_report_that_is_not_one_is_refused_in_one_line(tmp_path, capsys, content):
    report, figure = tmp_path / "report.json", tmp_path / "bars.png"
    report.write_text(content)
    assert load_benchmark("cross_dataset").main(["--from-json", str(report), "--figure", str(figure)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"error: --from-json {report}: expected a report written by --json") and "\n" not in error
    assert not figure.exists()


def test_long_model_names_are_broken_after_underscores():
    from ferlib.plots import wrapped_label

    assert wrapped_label("ferplus_cnn") == "ferplus_cnn"
    assert wrapped_label("ferplus_cnn_balanced") == "ferplus_cnn_\nbalanced"
    assert wrapped_label("ferplus_cnn_robust + seed_cnn") == "ferplus_cnn_\nrobust +\nseed_cnn"
    assert wrapped_label("averyveryverylongname") == "averyveryverylongname"  # a word is never cut


def break_labels(folder: Path, how: str) -> str:
    """Spoil ``folder``'s labels.csv (or the folder) one way; returns what the error must mention."""
    labels = folder / "labels.csv"
    table = pd.read_csv(labels, dtype=str, keep_default_na=False)
    if how == "no folder":
        return str(folder / "missing")
    if how == "no labels.csv":
        labels.unlink()
        return "labels.csv: not found"
    if how == "missing column":
        table.drop(columns=["label"]).to_csv(labels, index=False)
        return "missing column(s) label"
    if how == "unknown label":
        table.loc[4, "label"] = "smile"
        table.to_csv(labels, index=False)
        return "row 6: label 'smile'"
    if how == "missing image":
        (folder / table.loc[7, "file"]).unlink()
        return "row 9: image"
    if how == "bad CK+48 name":
        (folder / table.loc[0, "file"]).rename(folder / "ckplus48/happiness/frame.png")
        table.loc[0, "file"] = "ckplus48/happiness/frame.png"
        table.to_csv(labels, index=False)
        return "row 2: CK+48 file name 'frame.png'"
    table.loc[5, "label"] = "anger"  # "mixed sequence"
    table.to_csv(labels, index=False)
    return "sequence S002_003 has frames with different labels"


@pytest.mark.parametrize("how", ["no folder", "no labels.csv", "missing column", "unknown label", "missing image",
                                 "bad CK+48 name", "mixed sequence"])
def test_a_bad_data_folder_is_one_line_and_exit_2(xdata, tmp_path, capsys, how):
    expected = break_labels(xdata, how)
    data_dir = xdata / "missing" if how == "no folder" else xdata
    out = tmp_path / "out.json"
    code = load_benchmark("cross_dataset").main(["--data-dir", str(data_dir), "--json", str(out), "--no-progress"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and not out.exists()
    assert len(error.splitlines()) == 1 and error.startswith("error: ") and expected in error, error


def test_an_unreadable_image_is_one_line_and_exit_2(xdata, capsys):
    (xdata / "ckplus48/happiness/S001_001_00000010.png").write_bytes(b"not a png")
    assert load_benchmark("cross_dataset").main(["--data-dir", str(xdata), "--no-progress"]) == 2
    assert "S001_001_00000010.png: cannot be read as an 8-bit image" in capsys.readouterr().err


def test_a_bad_model_file_is_one_line_and_exit_2(xdata, tmp_path, capsys):
    garbage = tmp_path / "new_model.onnx"
    garbage.write_bytes(b"not a model")
    for weights, expected in ((garbage, "not an ONNX model"), (tmp_path / "absent.safetensors", "expected an existing")):
        assert load_benchmark("cross_dataset").main(["--data-dir", str(xdata), "--weights", str(weights),
                                                     "--no-progress"]) == 2
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and str(weights) in error and expected in error, error


# ------------------------------------------------------------------------------------------------- the real faces

@pytest.fixture(scope="module")
def real_xdata() -> Path:
    if not (XDATA / "labels.csv").is_file():
        pytest.skip(f"the faces from outside FER are not in {XDATA} (set FERLIB_SHARED to the folder holding xdata/)")
    return XDATA


def test_the_committed_report_matches_a_fresh_measurement(real_xdata):
    report = json.loads(REPORT.read_text())
    committed = {(r["model"], r["path"], r["set"]): r for r in report["results"]}
    table = read_xdata_labels(real_xdata)
    ckplus = table[table["dataset"] == "ckplus48"].reset_index(drop=True)
    assert len(ckplus) == 981
    probabilities = classify_directly(SHIPPED, read_xdata_images(real_xdata, ckplus["file"], False), progress=False)
    fresh = cross_set_scores(ckplus, probabilities)
    for key in ("ckplus48", "ckplus48_sequences_no_contempt"):
        reported = committed["ferplus_cnn", "direct", key]
        # int8 kernels differ between CPUs: allow one face (or sequence) to flip on another machine
        assert abs(fresh[key]["accuracy"] - reported["accuracy"]) * reported["items"] <= 1 + 1e-9, key
        assert fresh[key]["items"] == reported["items"]


def test_the_detect_path_on_real_faces_equals_each_models_own_detect_emotions(real_xdata):
    table = read_xdata_labels(real_xdata)
    chosen = pd.concat([table[table["dataset"] == d].iloc[[100]] for d in ("ckplus48", "muxspace")])
    images = read_xdata_images(real_xdata, chosen["file"], False)
    models = {"seed": REPO / "models" / "seed_cnn.safetensors", "ferplus": SHIPPED}
    probabilities, found = detect_and_classify(models, images, progress=False)
    assert found.all()
    # the second model is the one that did not drive the pipeline: it must still have got the same face
    recognizer = EmotionRecognizer(models["ferplus"])
    alone = [recognizer.detect_emotions(tight_crop_frame(image))[0] for image in images]
    assert np.array_equal(probabilities["ferplus"], np.float32([[f.probabilities[n] for n in CLASS_NAMES]
                                                                 for f in alone]))
