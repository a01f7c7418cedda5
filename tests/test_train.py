"""Training on a tiny synthetic dataset: configs, checkpoints, TensorBoard output and exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO_ROOT
from ferlib.train import TrainConfig, class_weights, load_config, loss_function, main, train


def tiny_config(data: Path, runs: Path, **overrides) -> TrainConfig:
    settings = dict(data_dir=str(data), runs_dir=str(runs), width=0.25, epochs=3, batch_size=8, num_workers=0,
                    bf16=False, channels_last=False, ema_decay=0.3, label_mode="crossentropy")
    settings.update(overrides)
    return TrainConfig(**settings)


def test_config_files_hold_the_seed_recipe_and_the_default():
    seed = load_config(REPO_ROOT / "configs" / "seed.toml")
    assert (seed.optimizer, seed.lr, seed.weight_decay, seed.dropout, seed.batch_size) == ("adam", 0.01, 1e-7, 0.4, 64)
    assert (seed.epochs, seed.patience, seed.label_mode, seed.in_channels) == (20, 8, "no_unknown", 3)
    assert load_config(REPO_ROOT / "configs" / "default.toml") == TrainConfig(max_minutes=115.0)


def test_a_config_extends_its_base_file(tmp_path):
    aligned = load_config(REPO_ROOT / "configs" / "aligned.toml")
    assert aligned == TrainConfig(max_minutes=115.0, data_dir="data/aligned", run_name="aligned")
    (tmp_path / "a.toml").write_text('base = "b.toml"\nlr = 0.1\n')
    (tmp_path / "b.toml").write_text('base = "a.toml"\nepochs = 3\n')
    with pytest.raises(ValueError, match="base files include each other"):
        load_config(tmp_path / "a.toml")
    (tmp_path / "b.toml").write_text('epochs = 3\nlr = 0.5\n')
    assert (load_config(tmp_path / "a.toml").lr, load_config(tmp_path / "a.toml").epochs) == (0.1, 3)
    (tmp_path / "c.toml").write_text('base = "missing.toml"\n')
    with pytest.raises(FileNotFoundError, match="missing.toml"):
        load_config(tmp_path / "c.toml")

def test_config_errors_name_the_setting(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("learning_rate = 0.1\n")
    with pytest.raises(ValueError, match="unknown setting.*learning_rate"):
        load_config(bad)
    with pytest.raises(ValueError, match="--set bogus"):
        load_config(None, ["bogus=1"])
    assert load_config(None, ["lr=0.5", "labels=none", "label_mode=no_unknown"]).lr == 0.5


def test_training_writes_checkpoints_tensorboard_and_summary(tiny_dataset, tmp_path):
    summary = train(tiny_config(tiny_dataset, tmp_path, oversample=True, class_weighted_loss=True), progress=False,
                    export=tmp_path / "exported.safetensors")
    run = tmp_path / "default"
    assert (run / "last.pt").is_file() and (run / "best.safetensors").is_file()
    assert list(run.glob("events.out.tfevents.*")), "TensorBoard events"
    saved = json.loads((run / "summary.json").read_text())
    assert len(saved["history"]) == 3 and saved["epochs"] == 3 and 1 <= saved["best_epoch"] <= 3
    assert summary["valid_accuracy"] is not None
    assert load_file(tmp_path / "exported.safetensors").keys() == load_file(run / "best.safetensors").keys()
    torch.load(run / "last.pt", weights_only=True)  # a checkpoint must load without running code


def test_class_weighted_loss_weights_faces_by_their_class_not_their_stray_votes():
    weights = class_weights(torch.tensor([0] * 98 + [7] * 2))  # contempt (7) 49x rarer than neutral (0)
    assert weights[7] / weights[0] == pytest.approx(49)
    loss = loss_function(TrainConfig(label_mode="crossentropy", class_weighted_loss=True), weights)
    mostly_neutral = torch.tensor([[0.9, 0, 0, 0, 0, 0, 0, 0.1]])
    says_neutral, says_contempt = torch.zeros(1, 8), torch.zeros(1, 8)
    says_neutral[0, 0], says_contempt[0, 7] = 5.0, 5.0
    # one stray contempt vote must not make "contempt" the cheaper answer for a neutral face
    assert loss(says_neutral, mostly_neutral) < loss(says_contempt, mostly_neutral)
    # with hard labels it is PyTorch's weighted cross-entropy
    logits, labels = torch.randn(6, 8), torch.tensor([0, 7, 0, 3, 7, 0])
    majority_loss = loss_function(TrainConfig(label_mode="majority", class_weighted_loss=True), weights)
    assert majority_loss(logits, labels) == pytest.approx(float(torch.nn.functional.cross_entropy(logits, labels, weight=weights)))
    with pytest.raises(ValueError, match="multi_target"):
        loss_function(TrainConfig(label_mode="multi_target", class_weighted_loss=True), weights)


@pytest.mark.parametrize("label_mode", ["majority", "probability", "multi_target", "no_unknown"])
def test_every_label_mode_trains(tiny_dataset, tmp_path, label_mode):
    summary = train(tiny_config(tiny_dataset, tmp_path, label_mode=label_mode, epochs=1, ema_decay=0.0), progress=False)
    assert summary["epochs"] == 1


@pytest.mark.parametrize("num_workers", [0, 1])
def test_interrupted_then_resumed_training_ends_with_the_same_weights(tiny_dataset, tmp_path, num_workers):
    straight = tiny_config(tiny_dataset, tmp_path, run_name="straight", num_workers=num_workers)
    train(straight, progress=False)
    interrupted = tiny_config(tiny_dataset, tmp_path, run_name="interrupted", num_workers=num_workers)
    assert train(interrupted, progress=False, stop_after_epochs=1)["interrupted"]
    train(interrupted, resume=True, progress=False)
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "interrupted" / "last.pt", weights_only=True)
    assert a["state"]["epoch"] == b["state"]["epoch"] == 3
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in a["ema"]:
        assert torch.equal(a["ema"][key], b["ema"][key]), key
    assert [h["valid_loss"] for h in a["state"]["history"]] == [h["valid_loss"] for h in b["state"]["history"]]


def test_resume_with_other_settings_is_refused(tiny_dataset, tmp_path):
    train(tiny_config(tiny_dataset, tmp_path, run_name="r", epochs=1), progress=False)
    with pytest.raises(ValueError, match="different settings.*lr"):
        train(tiny_config(tiny_dataset, tmp_path, run_name="r", epochs=1, lr=0.5), resume=True, progress=False)


def test_weight_averaging_too_short_to_forget_the_initial_weights_is_warned_about(tiny_dataset, tmp_path):
    with pytest.warns(UserWarning, match=r"ema_decay=0.999 over only \d+ steps"):
        train(tiny_config(tiny_dataset, tmp_path, run_name="short", epochs=1, ema_decay=0.999), progress=False)


def test_early_stopping_stops_after_patience(tiny_dataset, tmp_path):
    summary = train(tiny_config(tiny_dataset, tmp_path, epochs=30, patience=1, lr=0.5, scheduler="none",
                                optimizer="adam", ema_decay=0.0), progress=False)
    assert summary["epochs"] < 30 and summary["stopped"].startswith("early stopping")


def test_command_line_reports_bad_config(tmp_path, capsys):
    assert main(["--config", str(tmp_path / "missing.toml")]) == 2
    assert "config file not found" in capsys.readouterr().err
