"""Training on a tiny synthetic dataset: configs, checkpoints, TensorBoard output and exact resume."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO_ROOT
from ferlib.data import MULTI_TARGET_EPSILON
from ferlib.evaluate import dataset_images, predict_probabilities
from ferlib.train import (LoopState, TrainConfig, build_loaders, build_optimizer, build_scheduler, build_training,
                          class_weights, ema_decay_at, ema_update, load_config, log_epoch, loss_function, main,
                          native_bf16, restore_checkpoint, save_checkpoint, train, train_one_epoch, validate)

CPU = torch.device("cpu")


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


@pytest.mark.parametrize("native", [False, True])
def test_bf16_autocast_only_where_the_device_computes_it_natively(tiny_dataset, tmp_path, monkeypatch, capsys, native):
    # emulated bfloat16 made the default network train 14x slower on an AVX2-only CPU
    monkeypatch.setattr("ferlib.train.native_bf16", lambda device: native)
    used = []
    real_autocast = torch.autocast

    def recording_autocast(*args, **kwargs):
        used.append(kwargs.get("enabled", True))
        return real_autocast(*args, **kwargs)
    monkeypatch.setattr(torch, "autocast", recording_autocast)
    summary = train(tiny_config(tiny_dataset, tmp_path, bf16=True, epochs=1), progress=False)
    assert summary["bf16_autocast"] is native
    assert used and set(used) == {native}
    said = capsys.readouterr().out
    assert ("bfloat16 autocast" in said) is native
    assert ("float32: this cpu has no native bfloat16" in said) is not native


def test_native_bf16_is_oneDNN_s_answer_on_the_cpu():
    assert native_bf16(CPU) is bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert native_bf16(torch.device("meta")) is False


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


def check_targets(label_mode: str, targets: torch.Tensor) -> None:
    """The targets a loader yields in each label mode (see ferlib.data.FerPlusDataset)."""
    if label_mode in ("majority", "no_unknown", "probability"):
        assert targets.dtype == torch.long and targets.ndim == 1 and ((0 <= targets) & (targets < 8)).all()
    elif label_mode == "crossentropy":
        assert targets.ndim == 2 and targets.shape[1] == 8, targets
        assert torch.allclose(targets.sum(dim=1), torch.ones(len(targets)))
    else:  # multi_target: every accepted emotion near 1, the others near 0
        assert targets.shape[1] == 8
        accepted = torch.isclose(targets, torch.tensor(1.0))
        assert (accepted | torch.isclose(targets, torch.tensor(MULTI_TARGET_EPSILON))).all(), targets
        assert accepted.any(dim=1).all(), targets
        assert ((targets > 0.5).sum(dim=1) >= 1).all()


@pytest.mark.parametrize("label_mode", ["majority", "probability", "crossentropy", "multi_target", "no_unknown"])
def test_every_label_mode_trains(tiny_dataset, tmp_path, label_mode):
    """Each mode's targets reach the loss in the form it expects, and training on them learns the faces: the loss
    falls and the model comes to answer the training faces' own classes."""
    config = tiny_config(tiny_dataset, tmp_path, label_mode=label_mode, ema_decay=0.0, augmentation="none",
                         scheduler="none", lr=0.01, dropout=0.0)
    torch.manual_seed(0)
    data = build_loaders(config)
    check_targets(label_mode, next(iter(data.loader))[1])
    parts = build_training(config, CPU, len(data.loader), data.train_labels)
    losses = [train_one_epoch(parts, data.loader, config, CPU)["train_loss"] for _ in range(8)]
    assert all(math.isfinite(loss) for loss in losses), losses
    assert min(losses[-3:]) < losses[0] - 0.25, f"{label_mode}: the loss hardly fell: {losses}"
    dataset = data.loader.dataset
    probabilities = predict_probabilities(parts.model, dataset_images(dataset))  # no augmentation: the faces as they are
    # The share of training faces answered with an emotion their target accepts (the majority class, a voted
    # emotion, one of multi_target's accepted ones): a model that learned its targets does far better than a random
    # answer; one that learned other targets (the emotions a face's votes rejected) does far worse.
    accepted = dataset.distributions > 0
    learned = accepted[torch.arange(len(dataset)), probabilities.argmax(dim=1)].float().mean().item()
    random_answer = accepted.float().mean().item()
    assert learned > 2 * random_answer, f"{label_mode}: {learned:.2f} of the faces answered as their targets accept"


def test_multi_target_loss_is_the_reference_codes_on_a_known_batch():
    loss = loss_function(TrainConfig(label_mode="multi_target"), None)
    eps = MULTI_TARGET_EPSILON
    logits = torch.zeros(2, 8)
    logits[0, 1] = math.log(3)  # softmax: 0.3 for class 1, 0.1 for the other seven
    targets = torch.full((2, 8), eps)
    targets[0, 0] = targets[0, 1] = 1.0  # accepts neutral and happiness (FerPlusDataset's multi_target targets)
    targets[1, 5] = 1.0  # accepts disgust; all classes at 1/8
    # -log of the largest probability (times target) on an accepted emotion, averaged over the batch: the most
    # likely accepted emotion counts, the rejected ones (0.1 * eps) do not
    expected = -(math.log(0.3) + math.log(0.125)) / 2
    assert float(loss(logits, targets)) == pytest.approx(expected, rel=1e-6)
    assert float(loss(logits[1:], targets[1:])) == pytest.approx(math.log(8), rel=1e-6)


def test_cosine_schedule_follows_half_a_cosine_over_every_step_of_the_run():
    config = TrainConfig(scheduler="cosine", lr=0.01, epochs=2)
    optimizer = build_optimizer(config, torch.nn.Linear(2, 2))
    scheduler = build_scheduler(config, optimizer, steps_per_epoch=5)
    rates = [optimizer.param_groups[0]["lr"]]
    for _ in range(10):
        optimizer.step()
        scheduler.step()
        rates.append(optimizer.param_groups[0]["lr"])
    expected = [0.01 * (1 + math.cos(math.pi * step / 10)) / 2 for step in range(11)]
    assert rates == pytest.approx(expected, abs=1e-9)
    assert (rates[0], rates[5], rates[10]) == pytest.approx((0.01, 0.005, 0.0), abs=1e-9)


class TenSecondClock:
    """A stand-in for ferlib.train's ``time``: every reading is 10 s after the previous one."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self) -> float:
        self.now += 10.0
        return self.now


def test_max_minutes_stops_the_run_once_its_training_time_passes_the_budget(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr("ferlib.train.time", TenSecondClock())
    # the loop reads the clock at an epoch's start, at the end of its training and after validation: each epoch
    # then trains for 10 s, and a 0.5-minute budget is passed (40 s > 30 s) at the end of the fourth epoch
    summary = train(tiny_config(tiny_dataset, tmp_path, epochs=10, patience=100, max_minutes=0.5, ema_decay=0.0),
                    progress=False)
    assert summary["stopped"] == "time budget of 0.5 minutes reached"
    assert summary["epochs"] == 4 and summary["train_minutes"] == pytest.approx(40 / 60)


def test_each_phase_can_be_called_alone(tiny_dataset, tmp_path):
    config = tiny_config(tiny_dataset, tmp_path, ema_decay=0.5)
    torch.manual_seed(0)
    data = build_loaders(config)
    assert len(data.loader) == len(data.train_labels) // 8 and data.valid_images.shape[1:] == (1, 48, 48)
    parts = build_training(config, CPU, len(data.loader), data.train_labels)
    before = {k: v.clone() for k, v in parts.model.state_dict().items()}
    metrics = train_one_epoch(parts, data.loader, config, CPU)
    assert set(metrics) == {"train_loss", "train_accuracy", "train_f1_macro"} and metrics["train_loss"] > 0
    assert any(not torch.equal(before[k], v) for k, v in parts.model.state_dict().items()), "the weights moved"
    valid = validate(parts.evaluated, data.valid_images, data.valid_labels, CPU)
    assert valid["n"] == len(data.valid_labels) and sum(map(sum, valid["confusion"])) == len(data.valid_labels)

    state = LoopState()
    record = {"epoch": 1, **metrics, "valid_loss": valid["valid_loss"], "valid_accuracy": valid["accuracy"],
              "valid_f1_macro": valid["f1_macro"], "valid_f1_weighted": valid["f1_weighted"], "lr": 0.1, "seconds": 1.0}
    writer = RecordingWriter()
    log_epoch(writer, state.history, record, valid["confusion"])
    assert state.history == [record] and writer.scalars["loss/valid"] == (valid["valid_loss"], 1)
    assert set(writer.scalars) >= {"loss/train", "accuracy/valid", "f1_macro/valid", "lr"} and writer.figures == 1
    assert state.end_epoch(record) and (state.epoch, state.best_epoch, state.bad_epochs) == (1, 1, 0)
    assert not state.end_epoch({**record, "epoch": 2}) and state.bad_epochs == 1

    path = tmp_path / "last.pt"
    save_checkpoint(path, config, parts, state, [{"torch": torch.get_rng_state(), "loader": data.generator.get_state()}])
    torch.manual_seed(123)
    other = build_training(config, CPU, len(data.loader), data.train_labels)
    restored = restore_checkpoint(torch.load(path, weights_only=True), path, other, torch.Generator())
    assert restored == state
    for key, value in parts.model.state_dict().items():
        assert torch.equal(other.model.state_dict()[key], value), key
    assert other.scheduler.state_dict()["last_epoch"] == parts.scheduler.state_dict()["last_epoch"] == len(data.loader)


class RecordingWriter:
    """What log_epoch would write to TensorBoard."""

    def __init__(self):
        self.scalars, self.figures = {}, 0

    def add_scalar(self, tag, value, step):
        self.scalars[tag] = (value, step)

    def add_figure(self, tag, figure, step):
        self.figures += 1


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


def test_weight_average_warm_up_grows_its_decay_with_the_steps():
    assert [round(ema_decay_at(n, 0.999, True), 4) for n in (0, 1, 90, 10_000)] == [0.1, 0.1818, 0.91, 0.999]
    assert ema_decay_at(5, 0.999, False) == 0.999
    model = torch.nn.Linear(1, 1, bias=False)
    average = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=ema_update(0.999, True), use_buffers=True)
    expected = None
    for step, value in enumerate([4.0, 1.0, -2.0, 3.0]):
        with torch.no_grad():
            model.weight.fill_(value)
        average.update_parameters(model)
        # the first update copies; after n updates the next keeps (1 + n) / (10 + n) of the average
        decay = (1 + step) / (10 + step)
        expected = value if expected is None else decay * expected + (1 - decay) * value
        assert average.module.weight.item() == pytest.approx(expected, abs=1e-6)


def test_a_short_run_with_warm_up_averages_its_trained_weights(tiny_dataset, tmp_path):
    config = tiny_config(tiny_dataset, tmp_path, epochs=1, ema_decay=0.999, ema_warmup=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "the averaged weights would still be the initial ones" warning
        data = build_loaders(config)
        parts = build_training(config, torch.device("cpu"), len(data.loader), data.train_labels)
    initial = [p.detach().clone() for p in parts.ema.module.parameters()]
    for images, targets in data.loader:
        parts.optimizer.zero_grad()
        parts.criterion(parts.model(images), targets).backward()
        parts.optimizer.step()
        parts.ema.update_parameters(parts.model)
    averaged, trained = (torch.cat([p.detach().flatten() for p in m.parameters()]) for m in (parts.ema.module,
                                                                                              parts.model))
    start = torch.cat([p.flatten() for p in initial])
    # the average sits near the trained weights: without warm-up, 0.999 over these few steps would keep it at the
    # weights of the first step (the first update copies them), nearly as far from the trained ones as the start
    assert (averaged - trained).norm() < 0.5 * (start - trained).norm()


def test_augmenting_on_the_device_leaves_the_loader_plain_faces_and_trains(tiny_dataset, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="augment_on_device"):
        load_config(None, ["augment_on_device=true", "augmentation=light"])
    config = tiny_config(tiny_dataset, tmp_path, augment_on_device=True, augmentation="strong", ema_decay=0.0,
                         scheduler="none", lr=0.01, dropout=0.0)
    torch.manual_seed(0)
    data = build_loaders(config)
    dataset = data.loader.dataset
    assert torch.equal(dataset[0][0], dataset[0][0])  # the loader's faces are not augmented ...
    parts = build_training(config, CPU, len(data.loader), data.train_labels)
    losses = [train_one_epoch(parts, data.loader, config, CPU)["train_loss"] for _ in range(8)]
    assert all(math.isfinite(loss) for loss in losses) and min(losses[-3:]) < losses[0] - 0.2, losses
    # ... the batch is: train_one_epoch draws strong_augmentation_batch on it
    import ferlib.train as train_module
    seen, original = [], train_module.strong_augmentation_batch
    monkeypatch.setattr(train_module, "strong_augmentation_batch",
                        lambda images: seen.append(images.shape) or original(images))
    train_one_epoch(parts, data.loader, config, CPU)
    assert len(seen) == len(data.loader)


def test_progressive_resizing_trains_early_epochs_on_smaller_faces_and_validates_at_48(tiny_dataset, tmp_path):
    from ferlib.transforms import downscaled

    faces = torch.rand(5, 1, 48, 48)
    assert downscaled(faces, 32).shape == (5, 1, 32, 32) and downscaled(faces, 48) is faces
    config = tiny_config(tiny_dataset, tmp_path, small_size=24, small_size_epochs=1, ema_decay=0.0)
    data = build_loaders(config)
    parts = build_training(config, CPU, len(data.loader), data.train_labels)
    sizes = []
    hook = parts.step_model.register_forward_pre_hook(lambda module, args: sizes.append(tuple(args[0].shape[-2:])))
    for epoch in (1, 2):
        assert math.isfinite(train_one_epoch(parts, data.loader, config, CPU, epoch)["train_loss"])
    hook.remove()
    per_epoch = len(data.loader)
    assert set(sizes[:per_epoch]) == {(24, 24)} and set(sizes[per_epoch:]) == {(48, 48)}, sizes


def test_init_weights_starts_from_a_saved_model_of_the_same_network(tiny_dataset, tmp_path):
    from ferlib.models import build_model, save_model
    from ferlib.train import build_training
    torch.manual_seed(5)
    source = build_model("seed_cnn", num_classes=8, in_channels=1, width=0.25, dropout=0.4)
    path = tmp_path / "start.safetensors"
    save_model(source, path, "seed_cnn", {"num_classes": 8, "in_channels": 1, "width": 0.25, "dropout": 0.4})
    config = tiny_config(tiny_dataset, tmp_path, init_weights=str(path), dropout=0.1)
    parts = build_training(config, torch.device("cpu"), 10, torch.zeros(4, dtype=torch.long))
    for name, value in source.state_dict().items():
        assert torch.equal(parts.model.state_dict()[name].float(), value.float()), name
    if parts.ema is not None:  # the average starts from the loaded weights too
        assert torch.equal(parts.ema.module.state_dict()["head.2.bias"].float(), source.state_dict()["head.2.bias"])
    with pytest.raises(ValueError, match="init_weights: .*not this run's; set model, width"):
        build_training(tiny_config(tiny_dataset, tmp_path, init_weights=str(path), width=0.5), torch.device("cpu"), 10,
                       torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="init_weights: .*missing.safetensors: model file not found"):
        build_training(tiny_config(tiny_dataset, tmp_path, init_weights=str(tmp_path / "missing.safetensors")),
                       torch.device("cpu"), 10, torch.zeros(4, dtype=torch.long))


def test_the_finetune_config_starts_from_the_shipped_model_with_real_input_damage():
    config = load_config(REPO_ROOT / "configs" / "finetune_real.toml")
    assert (config.init_weights, config.augmentation, config.lr, config.epochs) == (
        "models/ferplus_cnn.safetensors", "real", 0.0002, 6)
    assert (REPO_ROOT / config.init_weights).is_file()
    assert config.model_kwargs() == load_config(REPO_ROOT / "configs" / "default.toml").model_kwargs()


def test_the_damage_share_is_checked():
    with pytest.raises(ValueError, match="damage_share = 1.5: expected a number in \\[0, 1\\]"):
        load_config(None, ["augmentation=real", "damage_share=1.5"])
    with pytest.raises(ValueError, match="damage_share = 0.5: .* 1 with any other augmentation"):
        load_config(None, ["damage_share=0.5"])  # the default augmentation, strong, has no damage to scale
    assert load_config(None, ["augmentation=real", "damage_share=0.5"]).damage_share == 0.5


def test_the_balanced_finetune_config_oversamples_from_the_shipped_model():
    config = load_config(REPO_ROOT / "configs" / "finetune_balanced.toml")
    assert (config.init_weights, config.oversample, config.augmentation, config.lr, config.epochs) == (
        "models/ferplus_cnn.safetensors", True, "strong", 0.0002, 6)


def test_the_ensemble_distillation_config_starts_from_a_committed_network():
    config = load_config(REPO_ROOT / "configs" / "finetune_ensemble_kd.toml")
    assert (REPO_ROOT / config.init_weights).is_file()  # the fourth lease's born-again network, committed
    assert (config.teacher_targets, config.distill_weight, config.lr, config.epochs, config.ema_warmup) == (
        "runs/teacher_targets/ensemble_best_three.npz", 0.5, 0.0002, 6, True)


def test_other_crops_train_on_both_folders_and_refuse_other_faces(tiny_dataset, tmp_path, capsys):
    import shutil

    import cv2

    other = tmp_path / "other"
    shutil.copytree(tiny_dataset, other)
    for png in (other / "FER2013Train").glob("*.png"):  # the same faces, "cropped" another way
        cv2.imwrite(str(png), 255 - cv2.imread(str(png), cv2.IMREAD_GRAYSCALE))
    config = tiny_config(tiny_dataset, tmp_path / "runs", epochs=1, other_crops=str(other))
    data = build_loaders(config)
    assert data.loader.dataset.other_images is not None
    assert train(config, progress=False)["epochs"] == 1
    with pytest.raises(ValueError, match="other_crops = .*expected none, or a generated folder other than data_dir"):
        train(tiny_config(tiny_dataset, tmp_path / "runs", other_crops=str(tiny_dataset)), progress=False)
    label_file = other / "FER2013Train" / "label.csv"
    lines = label_file.read_text().splitlines()
    label_file.write_text("\n".join(lines[1:] + lines[:1]) + "\n")  # another order: not the same faces row for row
    code = main(["--data", str(tiny_dataset), "--set", f"other_crops={other}", "--set",
                 f"runs_dir={tmp_path / 'runs'}", "--set", "run_name=mismatch", "--set", "epochs=1",
                 "--set", "width=0.25", "--no-progress"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and "cropped another way" in error and len(error.splitlines()) == 1, error
    code = main(["--data", str(other), "--set", f"other_crops={other}", "--set", f"runs_dir={tmp_path / 'runs'}",
                 "--set", "run_name=same", "--no-progress"])  # --data is data_dir, checked like it
    assert code == 2 and "other than data_dir" in capsys.readouterr().err


def test_the_training_input_benchmark_times_network_loader_and_both(tiny_dataset, tmp_path, capsys, monkeypatch):
    import re

    from conftest import load_benchmark

    benchmark = load_benchmark("training_input")
    config = tmp_path / "small.toml"
    config.write_text('width = 0.25\nbatch_size = 2\nbf16 = false\nnum_workers = 1\naugmentation = "strong"\n')
    monkeypatch.setattr("sys.argv", ["training_input.py", "--config", str(config), "--data", str(tiny_dataset),
                                     "--batches", "2"])
    benchmark.main()
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "faces/s" not in line
            and "---" not in line]
    assert len(rows) == 7 and sum("**together**" in row for row in rows) == 2
    assert all(float(re.search(r"\| ([\d,.]+) \|$", row).group(1).replace(",", "")) > 0 for row in rows)


def test_mixup_blends_faces_and_targets_by_one_share_and_trains_and_resumes(tiny_dataset, tmp_path):
    from ferlib.train import mixed_up

    torch.manual_seed(0)
    images, labels = torch.randn(6, 1, 48, 48), torch.arange(6)  # face i of class i: a target names its faces
    mixed, targets = mixed_up(images, labels, alpha=0.4)
    assert targets.shape == (6, 8) and torch.allclose(targets.sum(dim=1), torch.ones(6))
    own = targets[torch.arange(6), labels]
    share = float(own.min())  # one share for the batch; a face paired with itself keeps all of its own
    assert 0 < share < 1
    partner = [next((c for c in range(6) if c != i and targets[i, c] > 0), i) for i in range(6)]
    assert sorted(partner) == list(range(6))  # a permutation of the batch
    for i in range(6):
        assert float(own[i]) == pytest.approx(share if partner[i] != i else 1.0)
        torch.testing.assert_close(mixed[i], share * images[i] + (1 - share) * images[partner[i]])
    with pytest.raises(ValueError, match="mixup_alpha = -1.0: expected a number >= 0"):
        load_config(None, ["mixup_alpha=-1"])
    with pytest.raises(ValueError, match="mixup_alpha = 0.2: .*multi_target"):
        load_config(None, ["mixup_alpha=0.2", "label_mode=multi_target"])
    straight = tiny_config(tiny_dataset, tmp_path, run_name="straight", mixup_alpha=0.4)
    train(straight, progress=False)
    interrupted = tiny_config(tiny_dataset, tmp_path, run_name="interrupted", mixup_alpha=0.4)
    train(interrupted, progress=False, stop_after_epochs=1)
    train(interrupted, resume=True, progress=False)
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "interrupted" / "last.pt", weights_only=True)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def test_the_mixup_finetune_config_is_robust_s_finetune_with_mixup_only():
    mixup = load_config(REPO_ROOT / "configs" / "finetune_app_mixup.toml")
    app = load_config(REPO_ROOT / "configs" / "finetune_app.toml")
    assert mixup.mixup_alpha == 0.2 and app.mixup_alpha == 0
    assert {**vars(mixup), "mixup_alpha": 0, "run_name": app.run_name} == vars(app)


def test_the_original_label_configs_are_robust_s_finetune_with_fer2013_s_labels_mixed_in():
    app = load_config(REPO_ROOT / "configs" / "finetune_app.toml")
    original = load_config(REPO_ROOT / "configs" / "finetune_app_original.toml")
    shuffled = load_config(REPO_ROOT / "configs" / "finetune_app_original_shuffled.toml")
    assert (original.teacher_targets, original.distill_weight) == ("runs/teacher_targets/fer2013_original.npz", 0.3)
    assert {**vars(original), "teacher_targets": None, "distill_weight": app.distill_weight,
            "run_name": app.run_name} == vars(app)
    assert original.oversample and not shuffled.oversample
    assert {**vars(shuffled), "oversample": True, "run_name": original.run_name} == vars(original)
    heavier = load_config(REPO_ROOT / "configs" / "finetune_app_original_w05.toml")
    assert {**vars(heavier), "distill_weight": 0.3, "run_name": original.run_name} == vars(original)
