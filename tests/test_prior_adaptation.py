"""benchmarks/prior_adaptation.py: the temperature it fits and the class shares its EM estimates, on synthetic
collections where the answers are known; its figures beside cross_dataset's; a bad input folder."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from conftest import load_benchmark
from ferlib.engine import softmax

REPO = Path(__file__).resolve().parents[1]
REPORT = REPO / "reports" / "cross_dataset" / "prior_adaptation.json"
DIRECT = REPO / "reports" / "cross_dataset" / "cross_dataset_direct.json"


def gaussian_posteriors(points: np.ndarray, means: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """Exact class probabilities for 1-D points of unit-variance Gaussian classes with these priors."""
    likelihoods = np.exp(-0.5 * (points[:, None] - means[None, :]) ** 2)
    joint = likelihoods * priors
    return joint / joint.sum(axis=1, keepdims=True)


def test_the_fitted_temperature_undoes_overconfidence():
    benchmark = load_benchmark("prior_adaptation")
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (4000, 8))
    truth = softmax(logits)
    labels = np.array([rng.choice(8, p=row) for row in truth])
    overconfident = softmax(2.0 * logits)  # a model twice as sure as it should be
    assert abs(benchmark.fit_temperature(overconfident, labels) - 2.0) < 0.15
    assert abs(benchmark.fit_temperature(truth, labels) - 1.0) < 0.08


def test_em_finds_a_collections_class_shares_when_only_the_shares_changed():
    benchmark = load_benchmark("prior_adaptation")
    rng = np.random.default_rng(1)
    means = np.arange(8, dtype=float) * 1.5
    source = np.array([0.35, 0.29, 0.13, 0.12, 0.08, 0.01, 0.01, 0.01])
    target = np.array([0.0, 0.21, 0.25, 0.09, 0.14, 0.18, 0.08, 0.05])
    classes = rng.choice(8, size=6000, p=target)
    points = rng.normal(means[classes], 1.0)
    posteriors = gaussian_posteriors(points, means, source)  # a calibrated model trained at the source shares
    shares, adapted = benchmark.em_adapt(posteriors, source)
    assert np.abs(shares - target).max() < 0.03
    assert np.allclose(adapted.sum(axis=1), 1)
    # the right shares make the answers more accurate (neutral, absent here, no longer takes the doubtful faces)
    assert (adapted.argmax(1) == classes).mean() > (posteriors.argmax(1) == classes).mean() + 0.03
    # and a collection drawn at the source shares is left nearly as it is
    same = rng.choice(8, size=6000, p=source)
    shares, _ = benchmark.em_adapt(gaussian_posteriors(rng.normal(means[same], 1.0), means, source), source)
    assert np.abs(shares - source).max() < 0.03


def test_a_missing_data_folder_is_one_line_and_exit_2(tmp_path, capsys):
    out = tmp_path / "out.json"
    code = load_benchmark("prior_adaptation").main(["--data-dir", str(tmp_path / "absent"), "--json", str(out)])
    error = capsys.readouterr().err.strip()
    assert code == 2 and not out.exists()
    assert len(error.splitlines()) == 1 and error.startswith("error: ") and "absent" in error, error


def test_the_committed_reports_direct_figures_are_cross_datasets():
    """Both benchmarks feed the same faces to the same int8 twins: their direct figures must agree."""
    adaptation = json.loads(REPORT.read_text())
    direct = {(r["model"], r["set"]): r["accuracy"] for r in json.loads(DIRECT.read_text())["results"]
              if r["path"] == "direct"}
    rows = [r for r in adaptation["results"] if r["method"] == "direct"]
    assert len(rows) == 4
    for row in rows:
        for key in ("ckplus48_sequences_no_contempt", "muxspace_no_contempt"):
            assert abs(row["accuracy"][key] - direct[row["model"], key]) < 1e-9, (row["model"], key)
