"""The committed models: they load safely, their ONNX twins are there and agree with them, and on the real test split
the headline model (and its int8 twin) still scores what README.md says."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT
from ferlib.data import load_split
from ferlib.engine import OnnxEngine, TorchEngine, onnx_twin, stale_twin
from ferlib.evaluate import evaluate_model
from ferlib.models import SHIPPED_MODELS, load_model, shipped_model

MODEL = REPO_ROOT / "models" / "ferplus_cnn.safetensors"
REPORT = REPO_ROOT / "reports" / "ferplus_cnn_test.json"
INT8_REPORT = REPO_ROOT / "reports" / "ferplus_cnn_int8_test.json"


@pytest.fixture(scope="module")
def shipped():
    if not MODEL.is_file():
        pytest.skip(f"{MODEL} is not committed yet")
    return load_model(MODEL)


def test_shipped_model_loads_safely_and_predicts_8_classes(shipped):
    model, info = shipped
    assert info["class_names"] == ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"]
    channels = info["model_kwargs"]["in_channels"]
    assert model(torch.zeros(2, channels, 48, 48)).shape == (2, 8)
    assert MODEL.stat().st_size < 25 * 2**20


def test_readme_headline_is_the_committed_report():
    if not REPORT.is_file():
        pytest.skip(f"{REPORT} is not committed yet")
    report = json.loads(REPORT.read_text())
    headline = re.search(r"HEADLINE: ([\d.]+)% test accuracy", (REPO_ROOT / "README.md").read_text())
    assert headline, "README.md states the headline accuracy as 'HEADLINE: xx.xx% test accuracy'"
    assert float(headline.group(1)) == pytest.approx(100 * report["protocols"]["majority"]["accuracy"], abs=0.005)
    assert report["protocols"]["majority"]["n"] == 3152


def test_shipped_model_scores_the_reported_accuracy_on_the_real_test_split(shipped, real_dataset):
    if not REPORT.is_file():
        pytest.skip(f"{REPORT} is not committed yet")
    report = json.loads(REPORT.read_text())
    model, _ = shipped
    results = evaluate_model(model, real_dataset, "test", progress=False)
    for protocol in ("majority", "no_unknown"):
        assert results[protocol]["n"] == report["protocols"][protocol]["n"]
        assert results[protocol]["accuracy"] == pytest.approx(report["protocols"][protocol]["accuracy"], abs=0.001)


# ---- the ONNX twins (python -m ferlib.export) beside each shipped model

@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_every_shipped_model_has_both_onnx_twins(name):
    weights = shipped_model(name)
    for precision in ("fp32", "int8"):
        twin = onnx_twin(weights, precision)
        assert twin.is_file(), f"{twin} missing: python -m ferlib.export --weights {weights} --data data"
        engine = OnnxEngine(twin)
        assert engine.info["model_kwargs"] == load_model(weights)[1]["model_kwargs"]
        assert stale_twin(weights, engine) is None, f"{twin} was exported from other weights than {weights}"
    assert "FER2013Train" in OnnxEngine(onnx_twin(weights, "int8")).info["calibration"]  # never the test faces


@pytest.fixture(scope="module")
def real_test_faces(real_dataset):
    return load_split(real_dataset, "test").images


def test_onnx_twin_gives_the_probabilities_of_the_model_on_real_faces(shipped, real_test_faces):
    model, _ = shipped
    faces = real_test_faces[:512]
    difference = np.abs(OnnxEngine(onnx_twin(MODEL, "fp32")).predict(faces) - TorchEngine(model).predict(faces))
    assert difference.max() <= 1e-4


def test_int8_twin_agrees_with_fp32_and_scores_what_readme_says(real_dataset, real_test_faces):
    fp32, int8 = OnnxEngine(onnx_twin(MODEL, "fp32")), OnnxEngine(onnx_twin(MODEL, "int8"))
    agreement = (fp32.predict(real_test_faces).argmax(1) == int8.predict(real_test_faces).argmax(1)).mean()
    assert agreement >= 0.99
    report = json.loads(INT8_REPORT.read_text())
    accuracy = evaluate_model(int8, real_dataset, "test", progress=False)["majority"]["accuracy"]
    assert accuracy == pytest.approx(report["protocols"]["majority"]["accuracy"], abs=0.001)
    fp32_accuracy = json.loads(REPORT.read_text())["protocols"]["majority"]["accuracy"]
    assert abs(accuracy - fp32_accuracy) <= 0.003
    readme = (REPO_ROOT / "README.md").read_text()
    assert f"{100 * accuracy:.2f}%" in readme


# ---- the fast network (configs/fast_kd.toml): a quarter of the work per face, scored as README.md says

FAST = REPO_ROOT / "models" / "ferplus_cnn_fast.safetensors"


def test_fast_model_is_a_quarter_of_the_headline_and_scores_what_readme_says(real_dataset, real_test_faces):
    from ferlib.models import count_parameters

    fast, info = load_model(FAST)
    assert info["model_kwargs"]["width"] == 0.5 and count_parameters(fast) < count_parameters(load_model(MODEL)[0]) / 3
    readme = (REPO_ROOT / "README.md").read_text()
    for engine, report in ((TorchEngine(fast), "ferplus_cnn_fast_test.json"),
                           (OnnxEngine(onnx_twin(FAST, "int8")), "ferplus_cnn_fast_int8_test.json")):
        expected = json.loads((REPO_ROOT / "reports" / report).read_text())["protocols"]["majority"]
        accuracy = evaluate_model(engine, real_dataset, "test", progress=False)["majority"]["accuracy"]
        assert accuracy == pytest.approx(expected["accuracy"], abs=0.001)
        assert f"{100 * expected['accuracy']:.2f}%" in readme


# ---- the re-balanced model (configs/balanced.sh): the rare emotions, scored as README.md says

BALANCED = REPO_ROOT / "models" / "ferplus_cnn_balanced.safetensors"


def scored_as_reported(engine, dataset, report: Path, tta: bool = False) -> tuple[dict, dict]:
    """The engine's majority-protocol figures on the real test split and the committed report's, checked to agree
    (accuracy within 0.1 point, macro F1 within half a point)."""
    expected = json.loads(report.read_text())["protocols"]["majority"]
    measured = evaluate_model(engine, dataset, "test", tta=tta, progress=False)["majority"]
    assert measured["accuracy"] == pytest.approx(expected["accuracy"], abs=0.001), report
    assert measured["f1_macro"] == pytest.approx(expected["f1_macro"], abs=0.005), report
    return measured, expected


def readme_states(expected: dict) -> bool:
    """Whether README.md shows a report's majority-protocol accuracy and macro F1, as it prints them (xx.xx%)."""
    readme = (REPO_ROOT / "README.md").read_text()
    return f"{100 * expected['accuracy']:.2f}%" in readme and f"{100 * expected['f1_macro']:.2f}%" in readme


def test_balanced_model_reads_the_rare_emotions_as_readme_says(real_dataset):
    # the fourth lease's second generation, re-balanced, interpolated (share 0.6) and adjusted (tau -0.10)
    model, info = load_model(BALANCED)
    assert info["interpolation"]["share"] == 0.6 and info["logit_adjustment"]["tau"] == -0.1
    int8 = OnnxEngine(onnx_twin(BALANCED, "int8"))
    for engine, tta, report in ((TorchEngine(model), False, "ferplus_cnn_balanced_test.json"),
                                (int8, False, "ferplus_cnn_balanced_int8_test.json"),
                                (int8, True, "ferplus_cnn_balanced_int8_test_tta.json")):
        measured, expected = scored_as_reported(engine, real_dataset, REPO_ROOT / "reports" / report, tta)
        assert measured["n"] == expected["n"] == 3152
        assert readme_states(expected), report
        # issue 14's rare-emotion goal (macro F1 >= 70% at >= 86%), met by every engine, with and without TTA
        assert measured["accuracy"] >= 0.86 and measured["f1_macro"] >= 0.70, report


# ---- the default model (configs/finetune_app.toml): both framings, real-input damage, scored as README.md says

ROBUST = REPO_ROOT / "models" / "ferplus_cnn_robust.safetensors"


def test_default_model_is_the_robust_one_and_scores_as_readme_says(real_dataset):
    from ferlib.video import DEFAULT_MODEL_NAME

    assert DEFAULT_MODEL_NAME == ROBUST.name.removesuffix(".safetensors")
    # the damage fine-tune mixed half-way with ferplus_cnn_balanced (a share fixed beforehand), tau chosen on validation
    model, info = load_model(ROBUST)
    assert info["interpolation"]["share"] == 0.5 and info["logit_adjustment"]["tau"] == -0.1
    for engine, report in ((TorchEngine(model), "ferplus_cnn_robust_test.json"),
                           (OnnxEngine(onnx_twin(ROBUST, "int8")), "ferplus_cnn_robust_int8_test.json")):
        measured, expected = scored_as_reported(engine, real_dataset, REPO_ROOT / "reports" / report)
        assert measured["n"] == expected["n"] == 3152
        assert readme_states(expected), report
        # issue 14's rare-emotion goal (macro F1 >= 70% at >= 86%), on FER's crops
        assert measured["accuracy"] >= 0.86 and measured["f1_macro"] >= 0.70, report


def test_default_model_scores_as_readme_says_on_the_apps_crops(real_aligned_dataset):
    engine = OnnxEngine(onnx_twin(ROBUST, "int8"))
    report = REPO_ROOT / "reports" / "ferplus_cnn_robust_int8_test_app_crops.json"
    measured, expected = scored_as_reported(engine, real_aligned_dataset, report)
    assert measured["n"] == 3152
    assert readme_states(expected), report
