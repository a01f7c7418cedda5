"""Training: the configuration, the loop, checkpoints, early stopping and TensorBoard logging.

    python -m ferlib.train --config configs/default.toml            # the project's best recipe
    python -m ferlib.train --config configs/seed.toml               # the seed's recipe
    python -m ferlib.train --config configs/default.toml --resume   # continue an interrupted run
    python -m ferlib.train --config configs/seed.toml --set epochs=2 --set max_faces=2000   # override any field
    torchrun --standalone --nproc_per_node=4 -m ferlib.train --config configs/default.toml  # one model, 4 GPUs

Each run writes ``runs/<run_name>/``: TensorBoard events (losses, accuracy, F1, learning rate, augmented faces,
validation confusion matrix, model graph, hyperparameters with final metrics), ``last.pt`` (everything needed to
resume, written every epoch) and ``best.safetensors`` (the weights with the lowest validation loss). Validation
uses the FER+ majority protocol on FER2013Valid; the test split is never touched here (see ``ferlib.evaluate``).

Settings are checked (type and range) before anything is read or written. A run folder that holds a run is only
continued (``--resume``), never replaced, and is locked (``train.lock``) while a training writes it. Bad input
ends in one line on stderr and exit status 2, a failed write (a full disk) in exit status 1, Ctrl-C in 130 with
the last completed epoch kept in ``last.pt``.

The run is built from phases a test can call alone (``build_loaders``, ``build_training``, ``train_one_epoch``,
``validate``, ``log_epoch``, ``save_checkpoint`` / ``restore_checkpoint``), joined by the epoch loop ``fit``.
Launched by torchrun, every process trains the same model in DistributedDataParallel on its own share of the
faces, and rank 0 alone writes the run folder (see ``ferlib.distributed``). With ``teachers`` set, each batch's
targets mix in the teachers' predictions on the same faces (distillation, see ``ferlib.distill``); with
``teacher_targets``, their predictions on the unaugmented faces, read from a file.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import itertools
import json
import math
import os
import pickle
import signal
import socket
import sys
import threading
import time
import tomllib
import typing
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from sklearn.metrics import f1_score
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, WeightedRandomSampler
from torchvision.utils import make_grid
from tqdm.auto import tqdm

from ferlib import distributed
from ferlib.data import CLASS_NAMES, LABEL_MODES, NUM_CLASSES, FerPlusDataset, load_split, same_faces
from ferlib.distill import (WithTeacherTargets, distillation_targets, load_teacher_targets, load_teachers,
                            teacher_probabilities)
from ferlib.distributed import SINGLE, World
from ferlib.evaluate import classification_metrics, dataset_images, predict_probabilities
from ferlib.files import atomic_path, check_writable, write_json
from ferlib.models import MODEL_ARGUMENTS, MODELS, build_model, export_model, load_model_for, save_model
from ferlib.plots import confusion_figure
from ferlib.transforms import AUGMENTATIONS, build_transform, denormalize, downscaled, strong_augmentation_batch

WIDTH_RANGE = MODEL_ARGUMENTS["seed_cnn"]["width"][1:]


@dataclass
class TrainConfig:
    """Every knob of a training run. The defaults are the project's headline recipe (configs/default.toml)."""

    # data
    data_dir: str = "data"
    labels: str | None = None  # another folder of FER2013*/label.csv files to take votes from
    label_mode: str = "crossentropy"  # how training faces are chosen and labelled (see ferlib.data)
    max_faces: int | None = None  # use only the first N training faces (smoke runs)
    other_crops: str | None = None  # a folder of the same faces cropped another way: each face drawn from either
    # model
    model: str = "seed_cnn"
    width: float = 1.0
    in_channels: int = 1
    dropout: float = 0.4
    init_weights: str | None = None  # start from this saved model's weights (fine-tuning); same model and width
    # optimisation
    optimizer: str = "adamw"  # "adam" (L2 added to the gradient) or "adamw" (decoupled weight decay)
    lr: float = 0.002
    weight_decay: float = 0.05
    batch_size: int = 64
    epochs: int = 40
    patience: int = 10  # early stopping: epochs without a better validation loss
    scheduler: str = "onecycle"  # "onecycle", "cosine" or "none"
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0  # MixUp: each batch's faces and targets blended pairwise by a Beta(a, a) share; 0 is off
    ema_decay: float = 0.999  # exponential moving average of the weights; 0 turns it off
    ema_warmup: bool = False  # the average's decay grows with the step count (see ema_decay_at)
    class_weighted_loss: bool = False
    oversample: bool = False  # draw rare classes more often
    augmentation: str = "strong"
    augment_p: float = 0.5  # probability of the seed augmentation
    damage_share: float = 1.0  # with augmentation "real": each kind of damage's probability times this
    augment_on_device: bool = False  # "strong" drawn per batch on the training device, not per face in the loader
    # progressive resizing: the first small_size_epochs epochs train on faces downscaled to small_size pixels a side
    # (about half the network's work per face at 32), the rest at the full 48; validation is always at 48
    small_size: int = 32
    small_size_epochs: int = 0
    # distillation (see ferlib.distill)
    teachers: str | None = None  # comma-separated model files whose predictions are mixed into the targets
    distill_weight: float = 0.5  # the teachers' share of each target
    distill_temperature: float = 1.0  # softens (> 1) the teachers' probabilities (the student's logits stay as they are)
    teacher_targets: str | None = None  # or a file of the teachers' probabilities per face (python -m ferlib.distill)
    # speed
    bf16: bool = True  # bfloat16 autocast where the device computes it natively (see native_bf16), else float32
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
    """A TrainConfig from a TOML file (any subset of fields, ``base`` naming a file it extends) and ``key=value``
    overrides, checked (``check_config``).

    Every value must have its field's type: a TOML file's ``bf16 = "no"`` or ``lr = "fast"`` is an error, not a
    string that happens to be true. ``--set`` values are read as TOML (``bf16=false``, ``lr=3e-4``); for string
    fields a bare word is taken as is (``label_mode=no_unknown``), and ``none`` unsets an optional field.
    """
    values = _config_file_values(Path(path)) if path is not None else {}
    items = overrides.items() if isinstance(overrides, dict) else [_split_override(o) for o in overrides or []]
    for key, value in items:
        if key not in FIELD_TYPES:
            raise ValueError(f"--set {key}=...: unknown setting{_did_you_mean(key)}; known: {', '.join(FIELD_TYPES)}")
        if isinstance(value, str):
            values[key] = _typed_value(key, _parse_value(key, value), f"--set {key}={value}", command_line=True)
        else:
            values[key] = _typed_value(key, value, f"{key} = {value!r}", command_line=True)
    config = TrainConfig(**values)
    check_config(config)
    return config


def _config_file_values(path: Path, including: tuple[Path, ...] = ()) -> dict:
    """The typed settings of a TOML config file; ``base = "other.toml"`` (beside it) supplies the ones it leaves out."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found")
    if path.resolve() in including:
        raise ValueError(f"{path}: base files include each other ({' -> '.join(str(p) for p in including)})")
    try:
        with open(path, "rb") as handle:
            loaded = tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path}: not valid TOML ({error})") from None
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or error
        raise ValueError(f"{path}: cannot read the config file ({reason})") from None
    base = loaded.pop("base", None)
    if base is not None and not isinstance(base, str):
        raise ValueError(f"{path}: base = {_toml_text(base)}: expected the name of another config file, in quotes")
    unknown = sorted(set(loaded) - set(FIELD_TYPES))
    if unknown:
        raise ValueError(f"{path}: unknown setting(s) {', '.join(unknown)}{_did_you_mean(unknown[0])}; "
                         f"known: base, {', '.join(FIELD_TYPES)}")
    values = _config_file_values(path.parent / base, including + (path.resolve(),)) if base else {}
    for key, value in loaded.items():
        values[key] = _typed_value(key, value, f"{path}: {key} = {_toml_text(value)}")
    return values


def _field_types() -> dict[str, tuple[type, bool]]:
    """Each TrainConfig field's type and whether it may be None (unset), from the dataclass annotations."""
    types = {}
    for name, hint in typing.get_type_hints(TrainConfig).items():
        union = typing.get_args(hint)  # (int, NoneType) for "int | None"; () for "int"
        types[name] = (next(a for a in union if a is not type(None)), True) if union else (hint, False)
    return types


FIELD_TYPES = _field_types()
EXPECTED = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}


def _typed_value(key: str, value, source: str, command_line: bool = False):
    """``value`` if it has field ``key``'s type (an int is taken for a float field), else a ValueError naming
    ``source``. bool is checked exactly: it is an int to Python, but ``epochs = true`` is a mistake."""
    kind, optional = FIELD_TYPES[key]
    if value is None and optional:
        return None
    if kind is float and type(value) is int:
        return float(value)
    if type(value) is not kind:
        unset = " or none" if optional and command_line else ""
        quoted = " (in quotes)" if kind is str and not command_line else ""
        raise ValueError(f"{source}: expected {EXPECTED[kind]}{quoted}{unset}")
    return value


def _toml_text(value) -> str:
    """A TOML value as it was written in the file, for messages."""
    if isinstance(value, bool):
        return str(value).lower()
    return json.dumps(value, default=str) if isinstance(value, (str, dict, list)) else str(value)


def _did_you_mean(key: str) -> str:
    close = difflib.get_close_matches(key, FIELD_TYPES, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _split_override(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise ValueError(f"--set {text!r}: expected key=value")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def _parse_value(key: str, text: str):
    """A ``--set`` value read as TOML. String fields also take bare words (``--set label_mode=no_unknown``), kept as typed:
    ``run_name=2024`` is the string "2024", not a number. ``none`` unsets an optional field."""
    kind, optional = FIELD_TYPES[key]
    if optional and text in ("none", "None", "null"):
        return None
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word: right for a string field, reported as the wrong type for any other
    return text if kind is str and not isinstance(value, str) else value


def check_config(config: TrainConfig) -> None:
    """Refuse a setting of the wrong type or out of its range, naming it, before anything is read or written
    (a bad value otherwise surfaces deep inside PyTorch under another name, e.g. epochs=0 as "total_steps")."""
    for key, value in asdict(config).items():
        _typed_value(key, value, f"{key} = {value!r}", command_line=True)
    c = config
    checks = [
        ("label_mode", c.label_mode in LABEL_MODES, f"one of {', '.join(LABEL_MODES)}"),
        ("max_faces", c.max_faces is None or c.max_faces >= 1, "a whole number >= 1, or none for all faces"),
        ("model", c.model in MODELS, f"one of {', '.join(MODELS)}"),
        # the range ferlib.models accepts when it loads a model: a run must not save what cannot be loaded
        ("width", math.isfinite(c.width) and WIDTH_RANGE[0] <= c.width <= WIDTH_RANGE[1],
         f"a number from {WIDTH_RANGE[0]} to {WIDTH_RANGE[1]} (1.0 is the seed's size)"),
        ("in_channels", c.in_channels in (1, 3), "1 (grayscale) or 3 (grayscale repeated as RGB)"),
        ("dropout", 0 <= c.dropout < 1, "a number in [0, 1)"),
        ("optimizer", c.optimizer in ("adam", "adamw"), "adam or adamw"),
        ("lr", math.isfinite(c.lr) and c.lr > 0, "a number > 0"),
        ("weight_decay", math.isfinite(c.weight_decay) and c.weight_decay >= 0, "a number >= 0"),
        ("batch_size", c.batch_size >= 1, "a whole number >= 1"),
        ("epochs", c.epochs >= 1, "a whole number >= 1"),
        ("patience", c.patience >= 1, "a whole number >= 1"),
        ("scheduler", c.scheduler in ("onecycle", "cosine", "none"), "onecycle, cosine or none"),
        ("label_smoothing", 0 <= c.label_smoothing < 1, "a number in [0, 1)"),
        ("mixup_alpha", math.isfinite(c.mixup_alpha) and c.mixup_alpha >= 0
         and (c.mixup_alpha == 0 or c.label_mode != "multi_target"),
         "a number >= 0 (0: off), and 0 with label_mode 'multi_target' (its targets are sets, not distributions)"),
        ("ema_decay", 0 <= c.ema_decay < 1, "a number in [0, 1) (0 turns averaging off)"),
        ("augmentation", c.augmentation in AUGMENTATIONS, f"one of {', '.join(AUGMENTATIONS)}"),
        ("augment_p", 0 <= c.augment_p <= 1, "a probability in [0, 1]"),
        ("damage_share", 0 <= c.damage_share <= 1 and (c.damage_share == 1 or c.augmentation == "real"),
         "a number in [0, 1] with augmentation = 'real' (1: its full damage), and 1 with any other augmentation"),
        ("augment_on_device", not c.augment_on_device or c.augmentation == "strong",
         "false unless augmentation = 'strong' (the one augmentation drawn per batch)"),
        ("teachers", not c.teachers or c.label_mode != "multi_target",
         "none with label_mode 'multi_target' (its targets are sets of emotions, not distributions to mix)"),
        ("teacher_targets", not c.teacher_targets or (not c.teachers and c.label_mode != "multi_target"
                                                      and c.distill_temperature == 1),
         "none with teachers, with label_mode 'multi_target' or with a distill_temperature other than 1 (the file "
         "holds the teachers' probabilities as they are)"),
        # class weights go by each target's most-voted class, which the teachers' share would then decide
        ("class_weighted_loss", not (c.class_weighted_loss and (c.teachers or c.teacher_targets)),
         "false when teachers or teacher_targets are set"),
        ("distill_weight", 0 <= c.distill_weight <= 1, "a number in [0, 1]"),
        ("distill_temperature", math.isfinite(c.distill_temperature) and c.distill_temperature > 0, "a number > 0"),
        ("small_size", 16 <= c.small_size <= 48, "a whole number of pixels from 16 to 48 (the faces' full size)"),
        ("small_size_epochs", 0 <= c.small_size_epochs <= c.epochs,
         f"a whole number of epochs from 0 (off) to epochs ({c.epochs})"),
        ("num_workers", c.num_workers >= 0, "a whole number >= 0 (0 loads in the main process)"),
        ("max_minutes", c.max_minutes is None or (math.isfinite(c.max_minutes) and c.max_minutes > 0),
         "a number > 0, or none for no limit"),
        ("seed", 0 <= c.seed < 2 ** 64, "a whole number in [0, 2**64)"),
        ("runs_dir", c.runs_dir != "", "a folder"),
        ("other_crops", c.other_crops is None or (c.other_crops != "" and Path(c.other_crops) != Path(c.data_dir)),
         "none, or a generated folder other than data_dir holding the same faces cropped another way"),
    ]
    for key, valid, expected in checks:
        if not valid:
            raise ValueError(f"{key} = {getattr(config, key)!r}: expected {expected}")
    check_run_name(config.run_name, nested=True)


def check_run_name(name: str, nested: bool = False) -> None:
    """A run folder must stay inside runs_dir: ``../x`` or an absolute path would write, and replace files, elsewhere.
    The command line takes a single folder name; ``nested`` also allows ``group/name`` (notebooks and
    ferlib.tune group their runs so)."""
    parts = name.replace("\\", "/").split("/")
    inside = (all(part not in ("", ".", "..") for part in parts) and "\0" not in name
              and not Path(name).is_absolute() and not Path(name).drive)
    if nested and not inside:
        raise ValueError(f"run_name {name!r}: expected a folder name inside runs_dir (no .., no absolute path)")
    if not nested and (not inside or len(parts) > 1):
        raise ValueError(f"run_name {name!r}: expected a single folder name (no / or \\, not . or ..)")


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




def build_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    """The learning-rate schedule, stepped once per batch over the whole run (``epochs * steps_per_epoch``)."""
    total = config.epochs * steps_per_epoch
    if config.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total, pct_start=0.15)
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if config.scheduler == "none":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    raise ValueError(f"scheduler {config.scheduler!r}: expected onecycle, cosine or none")


def build_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    raise ValueError(f"optimizer {config.optimizer!r}: expected adam or adamw")


LOCK_NAME = "train.lock"
RUN_FILES = ("last.pt", "best.safetensors", "summary.json")  # what a run writes, besides its TensorBoard events


def train(config: TrainConfig, resume: bool = False, progress: bool = True, stop_after_epochs: int | None = None,
          export: Path | str | None = None) -> dict:
    """Train one run; returns its summary (best epoch, validation metrics, time). Also callable from notebooks.

    ``stop_after_epochs`` ends this call early as if interrupted (``resume=True`` continues the run).
    ``export`` copies the best weights to that path (a safetensors model file) when the run ends.
    A folder that already holds a run is refused unless ``resume``; the folder is locked while training.
    Launched by torchrun, every process calls this and together they train one model (see ``ferlib.distributed``).
    """
    # Everything that can be checked is checked before the run folder is touched or the data is read.
    check_config(config)
    with distributed.process_group(config.device) as (world, device):
        if export is not None:
            check_export_path(export)
        run_dir = Path(config.runs_dir) / config.run_name
        created = distributed.on_main(world, lambda: prepare_run_dir(run_dir, config, resume))
        try:
            with ctrl_c_stops_between_batches() as ctrl_c:
                run = Run(config, run_dir, device, world, ctrl_c, progress and world.is_main)
                return _train_in(run, resume, stop_after_epochs, export)
        finally:
            if world.is_main:
                release_run_dir(run_dir, created)


def prepare_run_dir(run_dir: Path, config: TrainConfig, resume: bool) -> bool:
    """Make and lock the run folder; refuse one holding an earlier run unless ``resume``; remove what a killed
    training left half-written. Returns whether the folder was made here (``release_run_dir`` then removes it if
    the run wrote nothing)."""
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"runs_dir {config.runs_dir}: cannot make the run folder {run_dir} "
                         f"({error.strerror or error})") from None
    take_run_lock(run_dir)
    try:
        if not resume:
            refuse_earlier_run(run_dir)
        remove_partial_files(run_dir)
    except BaseException:
        release_run_dir(run_dir, created)
        raise
    return created


def release_run_dir(run_dir: Path, created: bool) -> None:
    (run_dir / LOCK_NAME).unlink(missing_ok=True)
    if created:
        with contextlib.suppress(OSError):
            run_dir.rmdir()  # only if empty: a run that failed before writing anything leaves no folder


def check_export_path(path: Path | str) -> None:
    """Find out before training, not after hours of it, that the exported model could not be written there."""
    try:
        check_writable(path)
    except OSError as error:
        raise ValueError(f"--export {error}") from None


def take_run_lock(run_dir: Path) -> Path:
    """Create ``run_dir/train.lock`` holding this process's id and host, so that two trainings never write one run
    folder at once. O_EXCL makes the creation atomic. A lock whose process no longer runs (killed with kill -9, or
    the machine restarted) is stale and taken over with a warning."""
    path = run_dir / LOCK_NAME
    for _attempt in range(3):
        try:
            handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                owner = path.read_text().split()
            except FileNotFoundError:
                continue  # released meanwhile
            if len(owner) == 2 and owner[0].isdigit() and owner[1] == socket.gethostname() \
                    and not _process_runs(int(owner[0])):
                print(f"warning: {path}: taking over the lock of process {owner[0]}, which no longer runs",
                      file=sys.stderr)
                path.unlink(missing_ok=True)
                continue
            raise FileExistsError(f"{run_dir}: in use by another training (process {' on '.join(owner) or '?'}, "
                                  f"lock {path}); wait for it to end, or delete the lock if no training runs") from None
        with os.fdopen(handle, "w") as lock:
            lock.write(f"{os.getpid()} {socket.gethostname()}\n")
        return path
    raise FileExistsError(f"{path}: could not take the run's lock; try again")


def _process_runs(pid: int) -> bool:
    if os.name == "nt":
        return True  # os.kill(pid, 0) would end the process on Windows: never take a lock over there
    try:
        os.kill(pid, 0)  # signal 0 only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    except (OverflowError, ValueError):
        return False
    return True


def refuse_earlier_run(run_dir: Path) -> None:
    """A new run must not replace an earlier run's checkpoint, weights and summary, nor mix TensorBoard events
    with it."""
    found = [name for name in RUN_FILES if (run_dir / name).exists()]
    found += ["TensorBoard events"] if any(run_dir.glob("events.out.tfevents.*")) else []
    if found:
        raise ValueError(f"{run_dir}: holds an earlier run ({', '.join(found)}); use --resume to continue it, or "
                         "another --run-name (or --set run_name=...) for a new run")


def remove_partial_files(run_dir: Path) -> None:
    """Remove the hidden temporary files (see ferlib.files.atomic_path) of a training killed while saving (kill -9
    cannot clean up): never complete, 14-52 MB each, and nothing else would remove them. Under the run's lock no
    other training writes here, so every one of them is stale."""
    stale = [p for name in RUN_FILES for p in run_dir.glob(f".{Path(name).stem}.*.partial{Path(name).suffix}")]
    if not stale:
        return
    size = 0
    for partial in stale:
        with contextlib.suppress(OSError):
            size += partial.stat().st_size
            partial.unlink()
    print(f"removed {len(stale)} unfinished file(s) ({size / 1e6:.1f} MB) left in {run_dir} by a training that "
          f"was killed: {', '.join(p.name for p in stale)}", file=sys.stderr)


@contextlib.contextmanager
def reported_write(path: Path | str):
    """Turn a failed write into one line naming the file. A full disk is an OSError from Python, but torch says
    only "unexpected pos 42600320 vs 42600208" (a RuntimeError) and safetensors raises its own error."""
    try:
        yield
    except (OSError, RuntimeError, SafetensorError) as error:
        reason = getattr(error, "strerror", None) or _reason(error)
        hint = "" if isinstance(error, PermissionError) else " (is the disk full?)"
        raise OSError(f"cannot write {path}: {reason}{hint}") from error


def _reason(error: BaseException) -> str:
    """A library's error message cut to fit one line: its first line, and of a long one its first sentence
    (torch follows "failed finding central directory" with four sentences of advice)."""
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    end = text.find(". ", 20)
    return text[:end] if len(text) > 150 and end > 0 else text


def _flush_to_disk(path: Path) -> None:
    """fsync a finished temporary file before it is renamed into place: the rename then never publishes a file
    whose bytes a crash could still lose, and a write error that a file system reports only now is not missed."""
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


CHECKPOINT_KEYS = {"config", "model", "ema", "optimizer", "scheduler", "state", "rng"}


def load_checkpoint(path: Path) -> dict:
    """A run's ``last.pt``, loaded without running code; a damaged or foreign file is one ValueError naming it."""
    advice = "this run cannot be resumed; start a new one under another run_name"
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # weights_only refuses anything but tensors and plain data
        raise ValueError(f"{path}: holds Python objects that are not loaded because they could run code; "
                         f"not a checkpoint written by ferlib.train: {advice}") from None
    except OSError as error:
        raise ValueError(f"{path}: cannot read the checkpoint ({error.strerror or error})") from None
    except Exception as error:  # torch reports a truncated or damaged file as RuntimeError, EOFError, ...
        raise ValueError(f"{path}: truncated or damaged checkpoint ({_reason(error)}); {advice}") from None
    if (not isinstance(checkpoint, dict) or not CHECKPOINT_KEYS <= checkpoint.keys()
            or not isinstance(checkpoint["config"], dict)):
        raise ValueError(f"{path}: not a checkpoint written by ferlib.train (expected the entries "
                         f"{', '.join(sorted(CHECKPOINT_KEYS))}); {advice}")
    return checkpoint


def _saved_epoch(checkpoint_path: Path) -> int | None:
    """The last completed epoch kept in a checkpoint, or None when it cannot be read."""
    try:
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True, mmap=True)
        return int(checkpoint["state"]["epoch"])
    except Exception:  # only for a message: any failure means "not known"
        return None


@contextlib.contextmanager
def ctrl_c_stops_between_batches():
    """Make Ctrl-C ask the training to stop at the next batch (or once the epoch being validated is saved): yields a
    list that is non-empty once it was pressed. A KeyboardInterrupt raised wherever the signal lands can be lost
    in a __del__ method (a DataLoader iterator's, which then leaves its workers running and the process hanging at
    exit), so it is raised only where the loop looks. A second Ctrl-C interrupts at once."""
    pressed = []
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield pressed  # someone else handles Ctrl-C here (a notebook kernel, a thread)
        return

    def on_ctrl_c(number, frame):
        if pressed:
            raise KeyboardInterrupt
        pressed.append(number)

    signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        yield pressed
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _batches(loader: DataLoader):
    """The loader's iterator, its worker processes started with SIGINT blocked. Ctrl-C signals the whole process
    group, and a worker it reaches dies (with a traceback of its own when it was starting); blocked, it reaches
    only this process, which stops the workers. (Forked workers would also inherit the handler above; workers
    started by spawn or forkserver do not, but a blocked signal stays blocked in a new program.)"""
    if loader.num_workers == 0 or not hasattr(signal, "pthread_sigmask"):
        return iter(loader)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        return iter(loader)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # a Ctrl-C meanwhile is delivered now



# The phases of a run, each callable alone: build_loaders, build_training, restore_checkpoint, train_one_epoch,
# validate, log_epoch, save_checkpoint; fit is the epoch loop that joins them.

RECORD_SAMPLES = "FERLIB_RECORD_SAMPLES"  # set to 1: a data-parallel run writes which faces each rank read


@dataclass
class LoopState:
    """Where a run stands between epochs; saved in ``last.pt`` (as a dict) so that ``--resume`` continues it."""

    epoch: int = 0  # the last completed epoch
    best_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the best validation loss (early stopping counts them)
    history: list[dict] = field(default_factory=list)  # one record per epoch, as summary.json keeps them
    train_seconds: float = 0.0  # time spent in training epochs (max_minutes counts it), without validation
    best_metrics: dict | None = None  # the record of the best epoch

    def end_epoch(self, record: dict) -> bool:
        """Count a finished epoch; True if its validation loss is the best so far."""
        self.epoch = record["epoch"]
        improved = record["valid_loss"] < self.best_loss
        if improved:
            self.best_loss, self.best_epoch, self.bad_epochs, self.best_metrics = \
                record["valid_loss"], record["epoch"], 0, record
        else:
            self.bad_epochs += 1
        return improved


@dataclass
class TrainData:
    """What a run reads: the training loader and the validation faces, transformed once."""

    loader: DataLoader
    train_labels: torch.Tensor  # each training face's most-voted class (class weights)
    valid_images: torch.Tensor
    valid_labels: np.ndarray
    generator: torch.Generator  # draws the shuffling and the workers' seeds; its state is checkpointed


@dataclass
class TrainingParts:
    """The network and what trains it."""

    model: torch.nn.Module  # the network whose weights are saved
    step_model: torch.nn.Module  # what a training step calls: the model, or it in DistributedDataParallel
    ema: AveragedModel | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    criterion: typing.Callable
    teachers: list[torch.nn.Module] = field(default_factory=list)  # frozen models distilled into this one

    @property
    def evaluated(self) -> torch.nn.Module:
        """The weights that are validated and saved as the best: the average when there is one."""
        return self.ema.module if self.ema is not None else self.model


@dataclass
class Run:
    """One run being trained: its settings, folder, device, processes and outputs."""

    config: TrainConfig
    run_dir: Path
    device: torch.device
    world: World = SINGLE
    ctrl_c: list = field(default_factory=list)  # non-empty once Ctrl-C was pressed
    progress: bool = False
    writer: typing.Any = None  # rank 0's TensorBoard SummaryWriter; None elsewhere

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "last.pt"


def _train_in(run: Run, resume: bool, stop_after_epochs: int | None, export: Path | str | None) -> dict:
    """The training itself, in a run folder ``train`` has checked and locked; stops when ``run.ctrl_c`` fills."""
    config, world = run.config, run.world
    checkpoint = checkpoint_to_resume(run.checkpoint_path, config, resume, world)
    torch.manual_seed(config.seed)
    data = build_loaders(config, world)
    if run.ctrl_c:
        raise KeyboardInterrupt  # pressed while the faces were read
    parts = build_training(config, run.device, len(data.loader), data.train_labels, world)
    if world.distributed:  # the ranks start from one model (DDP copies rank 0's) but draw their own augmentations
        torch.manual_seed((config.seed + world.rank) % 2 ** 64)
    state = LoopState()
    if checkpoint is not None:
        state = restore_checkpoint(checkpoint, run.checkpoint_path, parts, data.generator, world)
    if world.is_main:
        run.writer = open_writer(run, resume, state, parts.model, data.valid_images)
        print(f"{world.describe(run.device)}, {precision_note(config, run.device)}", flush=True)
    stopped = fit(run, parts, data, state, stop_after_epochs)
    if stopped is None:
        if run.writer is not None:
            run.writer.close()
        return {"interrupted": True, "epoch": state.epoch, "run_dir": str(run.run_dir)}
    return distributed.on_main(world, lambda: finish_run(run, state, stopped, export))


def fit(run: Run, parts: TrainingParts, data: TrainData, state: LoopState,
        stop_after_epochs: int | None = None) -> str | None:
    """The epoch loop: train, validate, log, keep the best weights and a checkpoint, stop early. Returns why it
    stopped, or None when ``stop_after_epochs`` ended this call as if interrupted."""
    config, world = run.config, run.world
    autocast = autocast_settings(config, run.device)
    for epochs_this_call in itertools.count(1):
        if state.epoch >= config.epochs:
            return "finished all epochs"
        epoch = state.epoch + 1
        started = time.monotonic()
        start_epoch(run, data.loader, epoch)
        train_metrics = train_one_epoch(parts, data.loader, config, run.device, epoch, run.writer, run.ctrl_c,
                                        run.progress, world)
        state.train_seconds += time.monotonic() - started
        valid = distributed.on_main(world, lambda: validate(parts.evaluated, data.valid_images, data.valid_labels,
                                                            run.device, autocast))
        record = epoch_record(epoch, train_metrics, valid, parts.optimizer, time.monotonic() - started)
        log_epoch(run.writer, state.history, record, valid["confusion"])
        improved = state.end_epoch(record)
        rng_states = distributed.gather_objects(world, rng_state(data.generator))
        distributed.on_main(world, lambda: save_epoch(run, parts, state, rng_states, improved))
        if world.is_main:
            print(epoch_line(record, improved), flush=True)
        if run.ctrl_c:
            raise KeyboardInterrupt  # pressed while this epoch was validated or saved: it is kept
        stopped = stop_reason(config, state)
        if stopped is not None:
            return stopped
        if stop_after_epochs is not None and epochs_this_call >= stop_after_epochs:
            return None


def checkpoint_to_resume(path: Path, config: TrainConfig, resume: bool, world: World = SINGLE) -> dict | None:
    """The checkpoint ``--resume`` continues, read and compared first: a damaged file, other settings or another
    number of processes are reported before the data is loaded."""
    if not resume:
        return None
    if not path.is_file():
        if world.is_main:
            print(f"no checkpoint at {path}; starting a new run", file=sys.stderr)
        return None
    checkpoint = load_checkpoint(path)
    defaults = asdict(TrainConfig())  # a checkpoint from before a setting existed ran with its default
    differing = sorted(k for k, v in asdict(config).items() if checkpoint["config"].get(k, defaults[k]) != v)
    if differing:
        raise ValueError(f"{path}: saved with different settings ({', '.join(differing)}); "
                         "resume with the same config or choose another run_name")
    processes = checkpoint.get("processes", 1)
    if processes != world.size:
        # each process's share of the data, and so the steps per epoch and the schedule, depend on their number
        raise ValueError(f"{path}: saved by a run on {processes} process(es), resumed on {world.size}; resume it "
                         f"with {'torchrun --nproc_per_node=' + str(processes) if processes > 1 else 'one process (no torchrun)'}")
    return checkpoint


def build_loaders(config: TrainConfig, world: World = SINGLE) -> TrainData:
    """The training faces (label mode, augmentation, max_faces) in a loader that gives this process its share of
    each epoch, and the validation faces (majority protocol) transformed once."""
    generator = torch.Generator().manual_seed((config.seed + world.rank) % 2 ** 64)
    train_split = load_split(config.data_dir, "train", config.labels)
    valid_split = load_split(config.data_dir, "valid", config.labels)
    # augment_on_device leaves the loader only the evaluation transform; train_one_epoch augments the batch
    train_transform = (build_transform(False) if config.augment_on_device
                       else build_transform(True, config.augmentation, augment_p=config.augment_p,
                                            damage_share=config.damage_share))
    other_crops = same_faces(train_split, config.other_crops, config.labels) if config.other_crops else None
    train_set = FerPlusDataset(train_split, config.label_mode, train_transform, config.in_channels, other_crops)
    if config.teacher_targets:
        train_set = WithTeacherTargets(train_set, load_teacher_targets(config.teacher_targets,
                                                                       train_set.image_names.tolist()))
    if config.max_faces is not None:
        train_set = torch.utils.data.Subset(train_set, range(min(config.max_faces, len(train_set))))
        train_labels = train_set.dataset.labels[: len(train_set)]
    else:
        train_labels = train_set.labels
    valid_set = FerPlusDataset(valid_split, "majority", build_transform(False), config.in_channels)
    valid_images = dataset_images(valid_set)
    if config.channels_last:
        valid_images = valid_images.contiguous(memory_format=torch.channels_last)
    sampler = train_sampler(config, train_labels, generator, world)
    loader = DataLoader(train_set, batch_size=config.batch_size, sampler=sampler,
                        drop_last=len(sampler) > config.batch_size, num_workers=config.num_workers,
                        generator=generator)
    # Workers are started afresh each epoch (not persistent) and seeded from the generator, whose state the
    # checkpoint keeps, so a resumed run draws exactly the augmentations an uninterrupted one would.
    return TrainData(loader, train_labels, valid_images, valid_set.labels.numpy(), generator)


def train_sampler(config: TrainConfig, train_labels: torch.Tensor, generator: torch.Generator,
                  world: World = SINGLE) -> torch.utils.data.Sampler:
    """The order of one epoch's faces: shuffled, or with ``oversample`` drawn with replacement, rare classes more
    often. In a data-parallel run each rank draws its own share, different faces from the other ranks', and the
    draw depends on the epoch (``set_epoch``), not on a generator."""
    weights = None
    if config.oversample:
        weights = (1.0 / torch.bincount(train_labels, minlength=NUM_CLASSES).clamp(min=1).float())[train_labels]
    if world.distributed and weights is not None:
        return distributed.WeightedShardSampler(weights, world, seed=config.seed)
    if world.distributed:
        return DistributedSampler(range(len(train_labels)), num_replicas=world.size, rank=world.rank, shuffle=True,
                                  seed=config.seed)
    if weights is not None:
        return WeightedRandomSampler(weights, len(train_labels), replacement=True, generator=generator)
    return RandomSampler(range(len(train_labels)), generator=generator)


def ema_decay_at(updates: int, decay: float, warmup: bool) -> float:
    """The weight average's decay after ``updates`` averaging steps. With ``warmup`` it is min(decay, (1 + n) /
    (10 + n)) (TensorFlow's ExponentialMovingAverage with num_updates): the average spans about the last tenth of
    the steps so far, so a short or large-batch run's average is never mostly its random initial weights."""
    return min(decay, (1 + updates) / (10 + updates)) if warmup else decay


def ema_update(decay: float, warmup: bool):
    """AveragedModel's ``multi_avg_fn``: an exponential moving average whose decay follows ``ema_decay_at``."""
    if not warmup:
        return get_ema_multi_avg_fn(decay)

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], updates: torch.Tensor) -> None:
        weight = 1 - ema_decay_at(int(updates), decay, True)
        floats = [(a, c) for a, c in zip(averaged, current) if a.is_floating_point()]
        if floats:
            torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], weight)
        for a, c in zip(averaged, current):
            if not a.is_floating_point():  # BatchNorm's batch counter: lerp is for floats only
                a.copy_(c)

    return update


def build_training(config: TrainConfig, device: torch.device, steps_per_epoch: int, train_labels: torch.Tensor,
                   world: World = SINGLE) -> TrainingParts:
    """The network (in DistributedDataParallel when several processes train it), its weight average, optimizer,
    schedule and loss."""
    model = build_model(config.model, **config.model_kwargs())
    if config.init_weights:
        load_initial_weights(model, Path(config.init_weights))
    model = model.to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = (AveragedModel(model, multi_avg_fn=ema_update(config.ema_decay, config.ema_warmup), use_buffers=True)
           if config.ema_decay > 0 else None)
    total_steps = steps_per_epoch * config.epochs
    initial_share = config.ema_decay ** total_steps if ema is not None and not config.ema_warmup else 0.0
    if initial_share > 0.05:
        # A short run (a search trial, a smoke run) would evaluate and save weights that are mostly the random
        # initial ones: every prediction then comes out as one class, whatever the hyperparameters.
        warnings.warn(f"ema_decay={config.ema_decay} over only {total_steps} steps: the averaged "
                      f"weights would still be {initial_share:.0%} the initial ones; set ema_decay=0 or train longer",
                      stacklevel=3)
    optimizer = build_optimizer(config, model)
    scheduler = build_scheduler(config, optimizer, steps_per_epoch)
    weights = class_weights(train_labels).to(device) if config.class_weighted_loss else None
    criterion = loss_function(config, weights)
    step_model = model
    if world.distributed:
        step_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    teachers = load_teachers(config.teachers, device, config.channels_last)
    return TrainingParts(model, step_model, ema, optimizer, scheduler, criterion, teachers)


def load_initial_weights(model: torch.nn.Module, path: Path) -> None:
    """Copy a saved model's weights into the run's new network (fine-tuning); ValueError in one line when the file
    is not a ferlib model or its network has other layers or sizes than the run's."""
    saved, metadata = load_model_for("init_weights", path)
    try:
        model.load_state_dict(saved.state_dict())
    except RuntimeError:
        raise ValueError(f"init_weights: {path}: its network ({metadata['model']}, {metadata['model_kwargs']}) is "
                         "not this run's; set model, width and in_channels to match it") from None


def restore_checkpoint(checkpoint: dict, path: Path, parts: TrainingParts, generator: torch.Generator,
                       world: World = SINGLE) -> LoopState:
    """Put a checkpoint's weights, optimizer, schedule and random states back; return its loop state. Each rank of
    a data-parallel run takes back its own random states."""
    try:
        parts.model.load_state_dict(checkpoint["model"])
        if parts.ema is not None:
            parts.ema.load_state_dict(checkpoint["ema"])
        parts.optimizer.load_state_dict(checkpoint["optimizer"])
        parts.scheduler.load_state_dict(checkpoint["scheduler"])
        state = LoopState(**checkpoint["state"])
        rng = checkpoint["rng"]["ranks"][world.rank] if world.distributed else checkpoint["rng"]
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
        generator.set_state(rng["loader"])
    except (KeyError, IndexError, RuntimeError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: does not fit this run's model or optimizer ({_reason(error)}); "
                         "this run cannot be resumed; start a new one under another run_name") from None
    return state


def open_writer(run: Run, resume: bool, state: LoopState, model: torch.nn.Module, valid_images: torch.Tensor):
    """Rank 0's TensorBoard writer; a new run's also gets the model graph."""
    from torch.utils.tensorboard import SummaryWriter

    # Events after the checkpoint's epoch were written by the interrupted process and are purged; a resumed run
    # without a checkpoint (interrupted in its first epoch) purges all of them.
    writer = SummaryWriter(str(run.run_dir), purge_step=state.epoch + 1 if state.epoch else 0 if resume else None)
    if state.epoch == 0:
        example = (valid_images[:2].to(run.device) if len(valid_images)
                   else torch.zeros(2, run.config.in_channels, 48, 48))
        model.eval()  # trace without touching BatchNorm statistics or drawing dropout masks
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # add_graph still traces with torch.jit
                writer.add_graph(model, example)
        except Exception as error:  # tracing is a nicety; never let it stop training
            print(f"note: model graph not logged ({error})", file=sys.stderr)
        model.train()
    return writer


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively: a CUDA GPU that supports it, or a CPU whose oneDNN has bfloat16
    kernels (AVX-512 BF16 or AMX). Elsewhere PyTorch emulates it: on an AVX2-only CPU (AMD Zen 3, most laptops)
    the default network trained 14 times slower under bfloat16 autocast than in float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # a build without oneDNN
            return False
    return False


def autocast_settings(config: TrainConfig, device: torch.device) -> dict:
    """``torch.autocast``'s arguments: bfloat16 when ``config.bf16`` asks for it and the device computes it natively."""
    return dict(device_type=device.type, dtype=torch.bfloat16, enabled=config.bf16 and native_bf16(device))


def precision_note(config: TrainConfig, device: torch.device) -> str:
    """The training precision, said once at the start of a run: what ``autocast_settings`` decided, and why."""
    if autocast_settings(config, device)["enabled"]:
        return "bfloat16 autocast"
    if not config.bf16:
        return "float32"
    needs = "AVX-512 BF16 or AMX" if device.type == "cpu" else "hardware support"
    return (f"float32: this {device.type} has no native bfloat16 ({needs}), which bf16 = true asks for; emulated, it "
            "is many times slower")


def start_epoch(run: Run, loader: DataLoader, epoch: int) -> None:
    """Tell a data-parallel sampler the epoch (its draw depends on it); with FERLIB_RECORD_SAMPLES=1 rank 0 writes
    the faces each rank will read (``sampled_faces.epochN.json``: one list of indices per rank)."""
    if not hasattr(loader.sampler, "set_epoch"):
        return
    loader.sampler.set_epoch(epoch)
    if os.environ.get(RECORD_SAMPLES) == "1":
        # these samplers depend only on the epoch, so listing them here yields what the loader then reads
        indices = distributed.gather_objects(run.world, list(loader.sampler))
        if run.world.is_main:
            write_json(run.run_dir / f"sampled_faces.epoch{epoch}.json", indices)


def train_one_epoch(parts: TrainingParts, loader: DataLoader, config: TrainConfig, device: torch.device,
                    epoch: int = 1, writer=None, ctrl_c: typing.Sequence = (), progress: bool = False,
                    world: World = SINGLE) -> dict:
    """One pass over ``loader``, a step per batch; returns the epoch's loss, accuracy and macro F1 over every
    process's faces. Stops (KeyboardInterrupt) before the next batch once ``ctrl_c`` fills."""
    parts.step_model.train()
    autocast = autocast_settings(config, device)
    seen, loss_sum, correct = 0, 0.0, 0
    epoch_targets, epoch_predictions = [], []
    bar = tqdm(_batches(loader), total=len(loader), desc=f"epoch {epoch}/{config.epochs}", disable=not progress,
               leave=False)
    for step, (images, targets) in enumerate(bar):
        if ctrl_c:
            raise KeyboardInterrupt
        teacher_probs = None
        if isinstance(targets, (list, tuple)):  # teacher_targets: the teachers' probabilities come with the faces
            targets, teacher_probs = targets[0], targets[1].to(device)
        images, targets = images.to(device), targets.to(device)
        if config.augment_on_device:
            images = strong_augmentation_batch(images)
        if epoch <= config.small_size_epochs:
            images = downscaled(images, config.small_size)
        if config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if writer is not None and epoch == 1 and step == 0:
            writer.add_image("train/augmented_faces", make_grid(denormalize(images[:64].float().cpu()), nrow=8), 0)
        labels = targets  # the face's own: the epoch's accuracy and F1 are measured against them, not the teachers'
        if parts.teachers:
            teacher_probs = teacher_probabilities(parts.teachers, images, config.distill_temperature, autocast)
        if teacher_probs is not None:
            targets = distillation_targets(targets, teacher_probs, config.distill_weight)
        if config.mixup_alpha > 0:
            images, targets = mixed_up(images, targets, config.mixup_alpha)
        with torch.autocast(**autocast):
            logits = parts.step_model(images)
        loss = parts.criterion(logits, targets)
        parts.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        parts.optimizer.step()
        parts.scheduler.step()
        if parts.ema is not None:
            parts.ema.update_parameters(parts.model)
        hard_targets = labels if labels.ndim == 1 else labels.argmax(dim=1)
        predictions = logits.argmax(dim=1)
        seen += len(images)
        # summed where they lie: reading them each step would make a GPU wait for every batch
        loss_sum = loss_sum + loss.detach().float() * len(images)
        correct = correct + (predictions == hard_targets).sum()
        epoch_targets.append(hard_targets)
        epoch_predictions.append(predictions)
        if progress and step % 20 == 0:
            bar.set_postfix(loss=f"{float(loss_sum) / seen:.3f}", acc=f"{int(correct) / seen:.3f}")
    epoch_targets = [torch.cat(epoch_targets).cpu()] if epoch_targets else []
    epoch_predictions = [torch.cat(epoch_predictions).cpu()] if epoch_predictions else []
    return _epoch_totals(world, seen, float(loss_sum), int(correct), epoch_targets, epoch_predictions)


def mixed_up(images: torch.Tensor, targets: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """MixUp (Zhang et al., ICLR 2018): each face blended with another face of the batch, and its target with that
    face's, by one share drawn from Beta(alpha, alpha). torchvision's ``v2.MixUp`` takes class indices only; here a
    target may be a vote distribution or a teacher's mix. Draws from torch's global generator, which checkpoints
    keep, so a resumed run draws as an uninterrupted one."""
    if targets.ndim == 1:
        targets = F.one_hot(targets, NUM_CLASSES).float()
    share = float(torch.distributions.Beta(alpha, alpha).sample())
    partner = torch.randperm(len(images)).to(images.device)
    return (share * images + (1 - share) * images[partner],
            share * targets + (1 - share) * targets[partner])


def _epoch_totals(world: World, seen: int, loss_sum: float, correct: int, targets: list, predictions: list) -> dict:
    """The training metrics of an epoch, over the faces of every process."""
    targets = torch.cat(targets) if targets else torch.empty(0, dtype=torch.long)
    predictions = torch.cat(predictions) if predictions else torch.empty(0, dtype=torch.long)
    if world.distributed:
        shares = distributed.gather_objects(world, (seen, loss_sum, correct, targets, predictions))
        seen, loss_sum, correct = (sum(share[i] for share in shares) for i in range(3))
        targets, predictions = (torch.cat([share[i] for share in shares]) for i in (3, 4))
    f1 = (f1_score(targets, predictions, labels=list(range(NUM_CLASSES)), average="macro", zero_division=0)
          if seen else 0.0)
    return {"train_loss": loss_sum / max(seen, 1), "train_accuracy": correct / max(seen, 1),
            "train_f1_macro": float(f1)}


def validate(model: torch.nn.Module, images: torch.Tensor, labels: np.ndarray, device: torch.device,
             autocast: dict | None = None) -> dict:
    """``model`` on the validation faces: the loss (negative log-likelihood of the right class) and
    ``ferlib.evaluate.classification_metrics`` (accuracy, F1, confusion matrix, ...)."""
    with torch.autocast(**(autocast or dict(device_type=device.type, enabled=False))):
        probabilities = predict_probabilities(model, images, device=device)
    loss = float(F.nll_loss(probabilities.clamp(min=1e-8).log(), torch.from_numpy(labels)))
    return {"valid_loss": loss, **classification_metrics(labels, probabilities.argmax(dim=1).numpy())}


def epoch_record(epoch: int, train_metrics: dict, valid: dict, optimizer: torch.optim.Optimizer,
                 seconds: float) -> dict:
    """One epoch's line of the history (summary.json, TensorBoard)."""
    return {"epoch": epoch, **train_metrics, "valid_loss": valid["valid_loss"], "valid_accuracy": valid["accuracy"],
            "valid_f1_macro": valid["f1_macro"], "valid_f1_weighted": valid["f1_weighted"],
            "lr": optimizer.param_groups[0]["lr"], "seconds": seconds}


SCALARS = {"loss/train": "train_loss", "loss/valid": "valid_loss", "accuracy/train": "train_accuracy",
           "accuracy/valid": "valid_accuracy", "f1_macro/train": "train_f1_macro",
           "f1_macro/valid": "valid_f1_macro", "f1_weighted/valid": "valid_f1_weighted", "lr": "lr"}


def log_epoch(writer, history: list[dict], record: dict, confusion) -> None:
    """Add an epoch's record to the history and, on the process that writes, to TensorBoard (scalars and the
    validation confusion matrix)."""
    history.append(record)
    if writer is None:
        return
    for tag, key in SCALARS.items():
        writer.add_scalar(tag, record[key], record["epoch"])
    writer.add_figure("valid/confusion_matrix",
                      confusion_figure(confusion, f"validation, epoch {record['epoch']}", normalize=True),
                      record["epoch"])


def epoch_line(record: dict, improved: bool) -> str:
    return (f"epoch {record['epoch']}: train loss {record['train_loss']:.4f} acc {record['train_accuracy']:.4f} | "
            f"valid loss {record['valid_loss']:.4f} acc {record['valid_accuracy']:.4f} F1 macro "
            f"{record['valid_f1_macro']:.4f} | {record['seconds']:.0f} s{' *' if improved else ''}")


def stop_reason(config: TrainConfig, state: LoopState) -> str | None:
    """Why the run stops after this epoch (early stopping, the time budget), or None."""
    if state.bad_epochs >= config.patience:
        return f"early stopping: no better validation loss for {config.patience} epochs"
    if config.max_minutes is not None and state.train_seconds > 60 * config.max_minutes:
        return f"time budget of {config.max_minutes} minutes reached"
    return None


def rng_state(generator: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "loader": generator.get_state()}
    if torch.cuda.is_initialized():  # dropout and augment_on_device draw there
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def save_epoch(run: Run, parts: TrainingParts, state: LoopState, rng_states: list[dict], improved: bool) -> None:
    """What the writing process keeps after an epoch: the best weights when they improved, the epoch's
    TensorBoard events and the checkpoint."""
    if improved:
        save_best(run.run_dir / "best.safetensors", run.config, parts.evaluated, state.best_metrics)
    if run.writer is not None:
        run.writer.flush()  # the epoch's events reach the disk with its checkpoint, even if the process is killed next
    save_checkpoint(run.checkpoint_path, run.config, parts, state, rng_states)


def save_best(path: Path, config: TrainConfig, model: torch.nn.Module, record: dict) -> None:
    with reported_write(path):
        save_model(model, path, config.model, config.model_kwargs(),
                   extra={"class_names": list(CLASS_NAMES), "epoch": record["epoch"], "config": asdict(config),
                          "valid": {k: record[k] for k in ("valid_loss", "valid_accuracy", "valid_f1_macro")}})


def save_checkpoint(path: Path, config: TrainConfig, parts: TrainingParts, state: LoopState,
                    rng_states: list[dict]) -> None:
    """Everything ``--resume`` needs, with the random states of every process (``rng_states``, in rank order).
    Written to a hidden temporary file and renamed over ``path`` only when complete: a full disk, Ctrl-C or
    kill -9 while saving leaves the previous epoch's checkpoint as it was."""
    rng = rng_states[0] if len(rng_states) == 1 else {**rng_states[0], "ranks": rng_states}
    with reported_write(path), atomic_path(path) as temporary:
        torch.save({"config": asdict(config), "model": parts.model.state_dict(),
                    "ema": parts.ema.state_dict() if parts.ema is not None else None,
                    "optimizer": parts.optimizer.state_dict(), "scheduler": parts.scheduler.state_dict(),
                    "state": asdict(state), "rng": rng, "processes": len(rng_states)}, temporary)
        _flush_to_disk(temporary)


def finish_run(run: Run, state: LoopState, stopped: str, export: Path | str | None) -> dict:
    """The writing process's end of a run: hyperparameters with the final metrics in TensorBoard, summary.json,
    the exported model; returns the summary."""
    config, best = run.config, state.best_metrics or {}
    summary = {"run_dir": str(run.run_dir), "epochs": state.epoch, "best_epoch": state.best_epoch,
               "stopped": stopped, "train_minutes": state.train_seconds / 60, "device": str(run.device),
               "processes": run.world.size, "bf16_autocast": autocast_settings(config, run.device)["enabled"],
               **{k: best.get(k) for k in ("valid_loss", "valid_accuracy", "valid_f1_macro", "valid_f1_weighted")}}
    hparams = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in asdict(config).items()}
    run.writer.add_hparams(hparams, {f"hparam/{k}": summary[k] for k in ("valid_loss", "valid_accuracy",
                                                                         "valid_f1_macro") if summary[k] is not None},
                           run_name=".")
    run.writer.close()
    with reported_write(run.run_dir / "summary.json"):
        write_json(run.run_dir / "summary.json", {**summary, "config": asdict(config), "history": state.history})
    if export is not None:
        if not (run.run_dir / "best.safetensors").is_file():
            raise ValueError(f"--export {export}: no epoch had a finite validation loss (training diverged?), so "
                             "there are no best weights to export")
        with reported_write(export):
            export_model(run.run_dir / "best.safetensors", export)
    accuracy = "none" if summary["valid_accuracy"] is None else f"{summary['valid_accuracy']:.4f}"
    print(f"done: {stopped}; best epoch {summary['best_epoch']} (valid accuracy {accuracy}, majority protocol) in "
          f"{summary['train_minutes']:.1f} min on {run.world.describe(run.device).removeprefix('training on ')}")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train a FER+ emotion classifier (under torchrun: on several "
                                                 "processes, one model).")
    parser.add_argument("--config", type=Path, help="TOML file of TrainConfig fields (configs/default.toml, configs/seed.toml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    parser.add_argument("--data", type=Path, help="folder holding FER2013Train/Valid/Test, as for ferlib.evaluate "
                                                  "(default: the config's data_dir, data)")
    parser.add_argument("--run-name", help="name of the run folder under runs/ (default: the config's run_name)")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (default: the config's device, auto)")
    parser.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    parser.add_argument("--export", type=Path, help="copy the best weights here when done (.safetensors)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    config = None
    # Under torchrun every process meets the same bad input (and the same Ctrl-C): only rank 0 reports it.
    quiet = not distributed.is_main_process()
    try:
        config = load_config(args.config, args.set)
        if args.data is not None:
            config = dataclasses.replace(config, data_dir=str(args.data))
        if args.run_name is not None:
            config = dataclasses.replace(config, run_name=args.run_name)
        if args.device is not None:
            config = dataclasses.replace(config, device=args.device)
        check_run_name(config.run_name)  # here a single folder name, right under runs_dir
        train(config, resume=args.resume, progress=not args.no_progress, export=args.export)
    except (FileNotFoundError, ValueError) as error:  # bad input: a setting, a file, a name
        if not quiet:
            print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a write that failed (a full disk), a run folder in use by another training
        if not quiet:
            print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if not quiet:
            print(interrupted_message(config), file=sys.stderr)
        return 130
    return 0


def interrupted_message(config: TrainConfig | None) -> str:
    """What Ctrl-C kept and how to go on (the checkpoint is only ever replaced whole, so it is safe)."""
    if config is None:
        return "interrupted"
    checkpoint = Path(config.runs_dir) / config.run_name / "last.pt"
    if not checkpoint.is_file():
        return ("interrupted before the first epoch ended: no checkpoint to keep; run the same command with "
                "--resume to start the run again")
    epoch = _saved_epoch(checkpoint)
    kept = f"epoch {epoch} of {config.epochs}" if epoch is not None else "the last completed epoch"
    return f"interrupted: {checkpoint} keeps {kept}; run the same command with --resume to continue"


if __name__ == "__main__":
    sys.exit(main())
