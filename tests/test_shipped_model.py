"""The committed model: it loads safely, and on the real test split it still scores what README.md says."""

from __future__ import annotations

import json
import re

import pytest
import torch

from conftest import REPO_ROOT
from ferlib.evaluate import evaluate_model
from ferlib.models import load_model

MODEL = REPO_ROOT / "models" / "ferplus_cnn.safetensors"
REPORT = REPO_ROOT / "reports" / "ferplus_cnn_test.json"


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
    for protocol in ("majority", "seed"):
        assert results[protocol]["n"] == report["protocols"][protocol]["n"]
        assert results[protocol]["accuracy"] == pytest.approx(report["protocols"][protocol]["accuracy"], abs=0.001)
