"""Metrics, the protocols on a synthetic dataset, and the evaluation command's JSON and plots."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import make_rows, write_csvs
from ferlib.evaluate import classification_metrics, main, unseen_mask
from ferlib.generate import generate_dataset
from ferlib.models import SeedCNN, save_model


def test_classification_metrics_by_hand():
    labels = np.array([0, 0, 1, 1, 2, 7])
    predictions = np.array([0, 1, 1, 1, 2, 0])
    m = classification_metrics(labels, predictions)
    assert m["n"] == 6 and m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_class"]["neutral"] == {"precision": 0.5, "recall": 0.5, "support": 2}
    assert m["per_class"]["happiness"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["contempt"] == {"precision": 0.0, "recall": 0.0, "support": 1}
    assert np.array(m["confusion"]).shape == (8, 8) and m["confusion"][7][0] == 1 and np.trace(m["confusion"]) == 4
    assert m["recall_weighted"] == pytest.approx(m["accuracy"])
    # macro F1 over the 8 classes: neutral 0.5, happiness 0.8, surprise 1.0, the rest 0
    assert m["f1_macro"] == pytest.approx((0.5 + 0.8 + 1.0) / 8)


def test_unseen_mask_finds_pixel_identical_copies():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (5, 48, 48), dtype=np.uint8)
    test = np.stack([train[2], rng.integers(0, 256, (48, 48), dtype=np.uint8), train[4]])
    assert unseen_mask(test, train).tolist() == [False, True, False]


@pytest.fixture
def tiny_model_and_data(tmp_path):
    rows = make_rows()
    rows[30].pixels = rows[0].pixels.copy()  # a test face with a copy in training
    csvs = write_csvs(tmp_path / "csv", rows)
    generate_dataset(csvs.fer, csvs.ferplus, tmp_path / "data", log=lambda m: None, progress=False)
    torch.manual_seed(0)
    weights = tmp_path / "tiny.safetensors"
    save_model(SeedCNN(in_channels=1, width=0.25).eval(), weights, "seed_cnn", {"in_channels": 1, "width": 0.25})
    return weights, tmp_path / "data"


def test_evaluate_command_writes_the_report_and_plots(tiny_model_and_data, tmp_path, capsys):
    weights, data = tiny_model_and_data
    out = tmp_path / "report.json"
    assert main(["--weights", str(weights), "--data", str(data), "--split", "test", "--json", str(out),
                 "--plots", str(tmp_path / "plots"), "--tta"]) == 0
    report = json.loads(out.read_text())
    assert set(report["protocols"]) == {"majority", "no_unknown"}
    for metrics in report["protocols"].values():
        for key in ("n", "accuracy", "precision_weighted", "recall_weighted", "f1_weighted", "f1_macro", "confusion"):
            assert key in metrics
        assert np.array(metrics["confusion"]).sum() == metrics["n"]
        assert metrics["unseen_in_train"]["n"] <= metrics["n"]
    assert report["tta"] is True
    assert (tmp_path / "plots" / "confusion_majority_normalized.png").stat().st_size > 1000
    assert "| majority |" in capsys.readouterr().out


def test_evaluate_command_rejects_a_file_that_is_not_a_model(tiny_model_and_data, tmp_path, capsys):
    _, data = tiny_model_and_data
    bad = tmp_path / "bad.safetensors"
    bad.write_text("hello")
    assert main(["--weights", str(bad), "--data", str(data)]) == 2
    assert "not a safetensors model file" in capsys.readouterr().err
    assert main(["--weights", str(tmp_path / "none.safetensors"), "--data", str(data)]) == 2


@pytest.mark.parametrize("content,message", [
    ('{"history": 3}', 'expected a run\'s summary.json, with a "history" list'),
    ('{"epochs": []}', 'with a "history" list'),
    ("\x00\x01 not json", "not JSON"),
])
def test_a_history_that_is_not_a_runs_summary_is_refused_first(tmp_path, capsys, content, message):
    (tmp_path / "summary.json").write_text(content)
    code = main(["--weights", str(tmp_path / "missing.safetensors"), "--history", str(tmp_path / "summary.json")])
    assert code == 2 and message in capsys.readouterr().err


def test_a_split_with_no_face_for_the_protocol_is_a_clear_error(tiny_dataset, tmp_path):
    import shutil

    from ferlib.evaluate import evaluate_model

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    label_file = data / "FER2013Test" / "label.csv"
    rows = [line.split(",") for line in label_file.read_text().splitlines()]
    label_file.write_text("".join(",".join(row[:-10] + ["0"] * 8 + ["10", "0"]) + "\n" for row in rows))
    with pytest.raises(ValueError, match="FER2013Test: the majority protocol keeps none of its"):
        evaluate_model(SeedCNN(in_channels=1, width=0.25), data, "test", progress=False)
