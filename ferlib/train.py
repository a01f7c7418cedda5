"""Training: the configuration, the loop, checkpoints, early stopping and TensorBoard logging.

    python -m ferlib.train --config configs/default.toml            # the project's best recipe
    python -m ferlib.train --config configs/seed.toml               # the seed's recipe
    python -m ferlib.train --config configs/default.toml --resume   # continue an interrupted run
    python -m ferlib.train --config configs/seed.toml --set epochs=2 --set max_faces=2000   # override any field

Each run writes ``runs/<run_name>/``: TensorBoard events (losses, accuracy, F1, learning rate, augmented faces,
validation confusion matrix, model graph, hyperparameters with final metrics), ``last.pt`` (everything needed to
resume, written every epoch) and ``best.safetensors`` (the weights with the lowest validation loss). Validation
uses the FER+ majority protocol on FER2013Valid; the test split is never touched here (see ``ferlib.evaluate``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
import tomllib
import warnings
from dataclasses import dataclass, asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, RandomSampler, WeightedRandomSampler
from torchvision.utils import make_grid
from tqdm.auto import tqdm

from ferlib.data import CLASS_NAMES, NUM_CLASSES, FerPlusDataset, load_split
from ferlib.evaluate import classification_metrics, dataset_images, predict_probabilities
from ferlib.files import atomic_path, write_json
from ferlib.models import build_model, export_model, save_model
from ferlib.plots import confusion_figure
from ferlib.transforms import build_transform, denormalize


@dataclass
class TrainConfig:
    """Every knob of a training run. The defaults are the project's headline recipe (configs/default.toml)."""

    # data
    data_dir: str = "data"
    labels: str | None = None  # another folder of FER2013*/label.csv files to take votes from
    label_mode: str = "crossentropy"  # how training faces are chosen and labelled (see ferlib.data)
    max_faces: int | None = None  # use only the first N training faces (smoke runs)
    # model
    model: str = "seed_cnn"
    width: float = 1.0
    in_channels: int = 1
    dropout: float = 0.4
    # optimisation
    optimizer: str = "adamw"  # "adam" (L2 added to the gradient) or "adamw" (decoupled weight decay)
    lr: float = 0.002
    weight_decay: float = 0.05
    batch_size: int = 64
    epochs: int = 40
    patience: int = 10  # early stopping: epochs without a better validation loss
    scheduler: str = "onecycle"  # "onecycle", "cosine" or "none"
    label_smoothing: float = 0.0
    ema_decay: float = 0.999  # exponential moving average of the weights; 0 turns it off
    class_weighted_loss: bool = False
    oversample: bool = False  # draw rare classes more often
    augmentation: str = "strong"
    augment_p: float = 0.5  # probability of the seed augmentation
    # speed
    bf16: bool = True  # bfloat16 autocast (fast on CPUs with AVX-512 BF16 and on recent GPUs)
    channels_last: bool = True
    num_workers: int = 1
    device: str = "auto"  # "auto" picks cuda, then mps, then cpu
    max_minutes: float | None = None  # stop after this much training time
    seed: int = 0
    # bookkeeping
    run_name: str = "default"
    runs_dir: str = "runs"

    def model_kwargs(self) -> dict:
        return {"num_classes": NUM_CLASSES, "in_channels": self.in_channels, "width": self.width,
                "dropout": self.dropout}


def load_config(path: Path | str | None = None, overrides: list[str] | dict | None = None) -> TrainConfig:
    """A TrainConfig from a TOML file (any subset of fields) and ``key=value`` overrides."""
    values: dict = {}
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: config file not found")
        with open(path, "rb") as handle:
            try:
                values = tomllib.load(handle)
            except tomllib.TOMLDecodeError as error:
                raise ValueError(f"{path}: not valid TOML ({error})") from None
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ValueError(f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    items = overrides.items() if isinstance(overrides, dict) else [_split_override(o) for o in overrides or []]
    for key, value in items:
        if key not in fields:
            raise ValueError(f"--set {key}=...: unknown setting; known: {', '.join(fields)}")
        values[key] = _parse_value(value) if isinstance(value, str) else value
    return TrainConfig(**values)


def _split_override(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise ValueError(f"--set {text!r}: expected key=value")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def _parse_value(text: str):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return None if text in ("none", "None", "null") else text


def pick_device(name: str = "auto") -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def class_weights(labels: torch.Tensor) -> torch.Tensor:
    """Weights inversely proportional to class frequency (scikit-learn's "balanced"), for rare-class emphasis."""
    counts = torch.bincount(labels, minlength=NUM_CLASSES).float().clamp(min=1)
    return len(labels) / (NUM_CLASSES * counts)


def loss_function(config: TrainConfig, weights: torch.Tensor | None):
    """The training loss for a label mode (the FER+ reference code's choice per mode)."""
    if config.label_mode == "multi_target":
        if weights is not None:
            raise ValueError("class_weighted_loss: not defined for label_mode 'multi_target', whose targets accept "
                             "several emotions; use it with majority, probability or crossentropy")

        def multi_target_loss(logits, target):
            # the reference code's multi-label loss: -log of the largest probability on an accepted emotion
            probabilities = logits.float().softmax(dim=1)
            return -torch.log((probabilities * target).amax(dim=1).clamp(min=1e-8)).mean()
        return multi_target_loss

    def cross_entropy(logits, target):
        losses = F.cross_entropy(logits.float(), target, reduction="none", label_smoothing=config.label_smoothing)
        if weights is None:
            return losses.mean()
        # Each face is weighted by its own (most-voted) class, the class the weights were counted by. Weighting the
        # entries of a vote distribution instead would let every face's stray contempt or disgust vote, weighted
        # ~100x, outweigh its majority emotion: the network then learns to answer contempt for everything.
        sample_weights = weights[target if target.ndim == 1 else target.argmax(dim=1)]
        return (losses * sample_weights).sum() / sample_weights.sum()
    return cross_entropy


def _build_scheduler(config: TrainConfig, optimizer, steps_per_epoch: int):
    total = config.epochs * steps_per_epoch
    if config.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total, pct_start=0.15)
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if config.scheduler == "none":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    raise ValueError(f"scheduler {config.scheduler!r}: expected onecycle, cosine or none")


def _build_optimizer(config: TrainConfig, model: torch.nn.Module):
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    raise ValueError(f"optimizer {config.optimizer!r}: expected adam or adamw")


def train(config: TrainConfig, resume: bool = False, progress: bool = True, stop_after_epochs: int | None = None,
          export: Path | str | None = None) -> dict:
    """Train one run; returns its summary (best epoch, validation metrics, time). Also callable from notebooks.

    ``stop_after_epochs`` ends this call early as if interrupted (``resume=True`` continues the run).
    ``export`` copies the best weights to that path (a safetensors model file) when the run ends.
    """
    from torch.utils.tensorboard import SummaryWriter

    run_dir = Path(config.runs_dir) / config.run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    loader_generator = torch.Generator().manual_seed(config.seed)

    train_split = load_split(config.data_dir, "train", config.labels)
    valid_split = load_split(config.data_dir, "valid", config.labels)
    train_set = FerPlusDataset(train_split, config.label_mode,
                               build_transform(True, config.augmentation, augment_p=config.augment_p),
                               config.in_channels)
    if config.max_faces is not None:
        train_set = torch.utils.data.Subset(train_set, range(min(config.max_faces, len(train_set))))
        train_labels = train_set.dataset.labels[: len(train_set)]
    else:
        train_labels = train_set.labels
    valid_set = FerPlusDataset(valid_split, "majority", build_transform(False), config.in_channels)
    valid_images = dataset_images(valid_set)
    valid_labels = valid_set.labels.numpy()
    if config.channels_last:
        valid_images = valid_images.contiguous(memory_format=torch.channels_last)

    if config.oversample:
        sample_weights = (1.0 / torch.bincount(train_labels, minlength=NUM_CLASSES).clamp(min=1).float())[train_labels]
        sampler = WeightedRandomSampler(sample_weights, len(train_labels), replacement=True, generator=loader_generator)
    else:
        sampler = RandomSampler(train_set, generator=loader_generator)
    loader = DataLoader(train_set, batch_size=config.batch_size, sampler=sampler, drop_last=len(train_set) > config.batch_size,
                        num_workers=config.num_workers, generator=loader_generator)
    # Workers are started afresh each epoch (not persistent) and seeded from loader_generator, whose state the
    # checkpoint keeps, so a resumed run draws exactly the augmentations an uninterrupted one would.

    model = build_model(config.model, **config.model_kwargs()).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True)
           if config.ema_decay > 0 else None)
    total_steps = len(loader) * config.epochs
    initial_share = config.ema_decay ** total_steps if ema is not None else 0.0
    if initial_share > 0.05:
        # A short run (a search trial, a smoke run) would evaluate and save weights that are mostly the random
        # initial ones: every prediction then comes out as one class, whatever the hyperparameters.
        warnings.warn(f"ema_decay={config.ema_decay} over only {total_steps} steps: the averaged "
                      f"weights would still be {initial_share:.0%} the initial ones; set ema_decay=0 or train longer",
                      stacklevel=2)
    optimizer = _build_optimizer(config, model)
    scheduler = _build_scheduler(config, optimizer, len(loader))
    weights = class_weights(train_labels).to(device) if config.class_weighted_loss else None
    criterion = loss_function(config, weights)

    state = {"epoch": 0, "best_loss": math.inf, "best_epoch": 0, "bad_epochs": 0, "history": [], "train_seconds": 0.0}
    checkpoint_path = run_dir / "last.pt"
    if resume and checkpoint_path.is_file():
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        saved = checkpoint["config"]
        differing = sorted(k for k in asdict(config) if saved.get(k) != asdict(config)[k])
        if differing:
            raise ValueError(f"{checkpoint_path}: saved with different settings ({', '.join(differing)}); "
                             "resume with the same config or choose another run_name")
        model.load_state_dict(checkpoint["model"])
        if ema is not None:
            ema.load_state_dict(checkpoint["ema"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        state = checkpoint["state"]
        torch.set_rng_state(checkpoint["rng"]["torch"])
        loader_generator.set_state(checkpoint["rng"]["loader"])
    elif resume:
        print(f"no checkpoint at {checkpoint_path}; starting a new run", file=sys.stderr)

    writer = SummaryWriter(str(run_dir), purge_step=state["epoch"] + 1 if state["epoch"] else None)
    if state["epoch"] == 0:
        example = valid_images[:2].to(device) if len(valid_images) else torch.zeros(2, config.in_channels, 48, 48)
        model.eval()  # trace without touching BatchNorm statistics or drawing dropout masks
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # add_graph still traces with torch.jit
                writer.add_graph(model, example)
        except Exception as error:  # tracing is a nicety; never let it stop training
            print(f"note: model graph not logged ({error})", file=sys.stderr)
        model.train()
    evaluated = ema.module if ema is not None else model
    autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=config.bf16 and device.type in ("cpu", "cuda"))
    stopped_because = "finished all epochs"
    epochs_this_call = 0
    while state["epoch"] < config.epochs:
        epoch = state["epoch"] + 1
        started = time.perf_counter()
        model.train()
        seen, loss_sum, correct = 0, 0.0, 0
        epoch_targets, epoch_predictions = [], []
        bar = tqdm(loader, desc=f"epoch {epoch}/{config.epochs}", disable=not progress, leave=False)
        for step, (images, targets) in enumerate(bar):
            images, targets = images.to(device), targets.to(device)
            if config.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            if epoch == 1 and step == 0:
                writer.add_image("train/augmented_faces", make_grid(denormalize(images[:64].float().cpu()), nrow=8), 0)
            with torch.autocast(**autocast):
                logits = model(images)
            loss = criterion(logits, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(model)
            hard_targets = targets if targets.ndim == 1 else targets.argmax(dim=1)
            seen += len(images)
            loss_sum += loss.item() * len(images)
            predictions = logits.argmax(dim=1)
            correct += (predictions == hard_targets).sum().item()
            epoch_targets.append(hard_targets.cpu())
            epoch_predictions.append(predictions.cpu())
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        state["train_seconds"] += time.perf_counter() - started

        with torch.autocast(**autocast):
            probabilities = predict_probabilities(evaluated, valid_images, device=device)
        valid_loss = float(F.nll_loss(probabilities.clamp(min=1e-8).log(), torch.from_numpy(valid_labels)))
        metrics = classification_metrics(valid_labels, probabilities.argmax(dim=1).numpy())
        train_f1 = (f1_score(torch.cat(epoch_targets), torch.cat(epoch_predictions), labels=list(range(NUM_CLASSES)),
                             average="macro", zero_division=0) if seen else 0.0)
        record = {"epoch": epoch, "train_loss": loss_sum / max(seen, 1), "train_accuracy": correct / max(seen, 1),
                  "train_f1_macro": float(train_f1),
                  "valid_loss": valid_loss, "valid_accuracy": metrics["accuracy"], "valid_f1_macro": metrics["f1_macro"],
                  "valid_f1_weighted": metrics["f1_weighted"], "lr": optimizer.param_groups[0]["lr"],
                  "seconds": time.perf_counter() - started}
        state["history"].append(record)
        for name, value in (("loss/train", record["train_loss"]), ("loss/valid", valid_loss),
                            ("accuracy/train", record["train_accuracy"]), ("accuracy/valid", metrics["accuracy"]),
                            ("f1_macro/train", record["train_f1_macro"]),
                            ("f1_macro/valid", metrics["f1_macro"]), ("f1_weighted/valid", metrics["f1_weighted"]),
                            ("lr", record["lr"])):
            writer.add_scalar(name, value, epoch)
        writer.add_figure("valid/confusion_matrix",
                          confusion_figure(metrics["confusion"], f"validation, epoch {epoch}", normalize=True), epoch)
        improved = valid_loss < state["best_loss"]
        if improved:
            state.update(best_loss=valid_loss, best_epoch=epoch, bad_epochs=0, best_metrics=record)
            save_model(evaluated, run_dir / "best.safetensors", config.model, config.model_kwargs(),
                       extra={"class_names": list(CLASS_NAMES), "epoch": epoch, "config": asdict(config),
                              "valid": {k: record[k] for k in ("valid_loss", "valid_accuracy", "valid_f1_macro")}})
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch
        with atomic_path(checkpoint_path) as temporary:
            torch.save({"config": asdict(config), "model": model.state_dict(),
                        "ema": ema.state_dict() if ema is not None else None,
                        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "state": state,
                        "rng": {"torch": torch.get_rng_state(), "loader": loader_generator.get_state()}},
                       temporary)
        print(f"epoch {epoch}: train loss {record['train_loss']:.4f} acc {record['train_accuracy']:.4f} | valid loss "
              f"{valid_loss:.4f} acc {metrics['accuracy']:.4f} F1 macro {metrics['f1_macro']:.4f} | "
              f"{record['seconds']:.0f} s{' *' if improved else ''}", flush=True)
        epochs_this_call += 1
        if state["bad_epochs"] >= config.patience:
            stopped_because = f"early stopping: no better validation loss for {config.patience} epochs"
            break
        if config.max_minutes is not None and state["train_seconds"] > 60 * config.max_minutes:
            stopped_because = f"time budget of {config.max_minutes} minutes reached"
            break
        if stop_after_epochs is not None and epochs_this_call >= stop_after_epochs:
            writer.close()
            return {"interrupted": True, "epoch": epoch, "run_dir": str(run_dir)}

    best = state.get("best_metrics", {})
    summary = {"run_dir": str(run_dir), "epochs": state["epoch"], "best_epoch": state["best_epoch"],
               "stopped": stopped_because, "train_minutes": state["train_seconds"] / 60, "device": str(device),
               **{k: best.get(k) for k in ("valid_loss", "valid_accuracy", "valid_f1_macro", "valid_f1_weighted")}}
    hparams = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in asdict(config).items()}
    writer.add_hparams(hparams, {f"hparam/{k}": summary[k] for k in ("valid_loss", "valid_accuracy", "valid_f1_macro")
                                 if summary[k] is not None}, run_name=".")
    writer.close()
    write_json(run_dir / "summary.json", {**summary, "config": asdict(config), "history": state["history"]})
    if export is not None:
        export_model(run_dir / "best.safetensors", export)
    print(f"done: {stopped_because}; best epoch {summary['best_epoch']} (valid accuracy "
          f"{summary['valid_accuracy']:.4f}, majority protocol) in {summary['train_minutes']:.1f} min on {device}")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train a FER+ emotion classifier.")
    parser.add_argument("--config", type=Path, help="TOML file of TrainConfig fields (configs/default.toml, configs/seed.toml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    parser.add_argument("--run-name", help="name of the run folder under runs/ (default: the config's run_name)")
    parser.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    parser.add_argument("--export", type=Path, help="copy the best weights here when done (.safetensors)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        overrides = list(args.set) + ([f"run_name={json.dumps(args.run_name)}"] if args.run_name else [])
        config = load_config(args.config, overrides)
        train(config, resume=args.resume, progress=not args.no_progress, export=args.export)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
