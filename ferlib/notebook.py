"""What every notebook does before its story starts: pick the mode, find (or make) the data, and get a trained model.

    from ferlib.notebook import setup, train_or_load
    nb = setup()                       # FERLIB_NOTEBOOK_MODE=full|smoke, FERLIB_RETRAIN=1 from the environment
    model = train_or_load(config, "models/ferplus_cnn.safetensors", retrain=nb.retrain)

Two modes. **full**: the real FER+ folders in ``data/`` (generated here from fer2013.csv / fer2013new.csv when they
are missing and the CSVs can be found), the shipped models and the committed reports. **smoke**: a tiny synthetic
dataset made in a temporary folder (removed when the kernel exits) and one epoch of a small model, in seconds; the
tests run every notebook so.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

MODES = ("full", "smoke")
MODE_VARIABLE, RETRAIN_VARIABLE = "FERLIB_NOTEBOOK_MODE", "FERLIB_RETRAIN"
# smoke mode's training settings: one epoch of a quarter-width network, no worker processes, float32
SMOKE_SETTINGS = dict(epochs=1, batch_size=16, width=0.25, num_workers=0, bf16=False)


@dataclass
class NotebookSetup:
    """Where a notebook's inputs and outputs are, in the mode it runs in."""

    mode: str  # "full" or "smoke"
    retrain: bool  # full mode: train instead of loading the shipped models and committed reports
    root: Path  # the repository (the working directory after ``setup``)
    data: Path  # the generated FER+ folders
    runs: Path  # training runs
    work: Path | None  # smoke mode's temporary folder (None in full mode)
    fer_csv: Path | None  # fer2013.csv(.gz), when found
    ferplus_csv: Path | None  # fer2013new.csv, when found
    media: Path | None  # the sample videos and photos (full mode, when found)

    @property
    def smoke(self) -> bool:
        return self.mode == "smoke"

    @property
    def models(self) -> Path:
        """Where model files are: the shipped ones in full mode, a fresh folder in smoke mode."""
        return self.work / "models" if self.smoke else Path("models")

    def training_settings(self) -> dict:
        """TrainConfig overrides for this mode: none in full mode; smoke mode's tiny budget and its folders."""
        return {**SMOKE_SETTINGS, "data_dir": str(self.data), "runs_dir": str(self.runs)} if self.smoke else {}

    def config_for_mode(self, config):
        """``config`` (a ``ferlib.train.TrainConfig``) with this mode's training settings."""
        return dataclasses.replace(config, **self.training_settings())


def repository_root(start: Path | None = None) -> Path:
    """The folder holding ``ferlib/`` and ``configs/``: the working directory, or a parent of it (a notebook runs
    in ``notebooks/``)."""
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "ferlib").is_dir() and (folder / "configs").is_dir():
            return folder
    raise FileNotFoundError(f"{start}: not inside the ferlib repository (no folder above holds ferlib/ and configs/)")


def find_input_csvs(root: Path) -> tuple[Path | None, Path | None]:
    """fer2013.csv(.gz) and fer2013new.csv: from $FER2013 / $FERPLUS, fer_generator/, or ../shared/data."""
    shared = Path(os.environ.get("FERLIB_SHARED", root.parent / "shared")) / "data"

    def first_file(*candidates):
        return next((Path(c) for c in candidates if c and Path(c).is_file()), None)

    fer = first_file(os.environ.get("FER2013"), root / "fer_generator/fer2013.csv",
                     root / "fer_generator/fer2013.csv.gz", shared / "fer2013.csv.gz", shared / "fer2013.csv")
    ferplus = first_file(os.environ.get("FERPLUS"), root / "fer_generator/fer2013new.csv", shared / "fer2013new.csv")
    return fer, ferplus


def find_media(root: Path) -> Path | None:
    """The sample media folder ($FERLIB_SHARED/media or ../shared/media) when it holds the sample videos."""
    media = Path(os.environ.get("FERLIB_SHARED", root.parent / "shared")) / "media"
    return media if (media / "single_face.mp4").is_file() else None


def read_mode(mode: str | None = None, retrain: bool | None = None) -> tuple[str, bool]:
    """The mode and retrain flag: the arguments when given, else $FERLIB_NOTEBOOK_MODE (default full) and
    $FERLIB_RETRAIN ("1" trains)."""
    mode = os.environ.get(MODE_VARIABLE, "full") if mode is None else mode
    if mode not in MODES:
        raise ValueError(f"notebook mode {mode!r} (argument or ${MODE_VARIABLE}): expected 'full' or 'smoke'")
    retrain = os.environ.get(RETRAIN_VARIABLE, "0") == "1" if retrain is None else retrain
    return mode, retrain


def setup(mode: str | None = None, retrain: bool | None = None, seed: int = 0, progress: bool = True) -> NotebookSetup:
    """Pick the mode, move to the repository root (paths are relative to it, as in the README), seed torch, and
    make sure the FER+ folders exist: smoke mode writes synthetic ones to a temporary folder; full mode uses
    ``data/``, generating it from the input CSVs if it is missing (FileNotFoundError when they cannot be found)."""
    import torch

    from ferlib.generate import generate_dataset
    from ferlib.synthetic import write_synthetic_csvs

    mode, retrain = read_mode(mode, retrain)
    root = repository_root()
    os.chdir(root)
    torch.manual_seed(seed)
    if mode == "smoke":
        work = Path(tempfile.mkdtemp(prefix="ferlib-smoke-"))
        atexit.register(shutil.rmtree, work, ignore_errors=True)  # each run's tens of MB, gone with the kernel
        fer, ferplus = write_synthetic_csvs(work / "csv")
        generate_dataset(fer, ferplus, work / "data", log=lambda message: None, progress=False)
        print(f"mode smoke: synthetic data in {work / 'data'}")
        return NotebookSetup(mode, retrain, root, work / "data", work / "runs", work, fer, ferplus, None)
    data = Path("data")
    fer, ferplus = find_input_csvs(root)
    if not (data / "FER2013Test" / "label.csv").is_file():
        if fer is None or ferplus is None:
            raise FileNotFoundError(
                "data/ holds no generated FER+ folders and fer2013.csv / fer2013new.csv were not found (put them in "
                "fer_generator/ or set FER2013 and FERPLUS); or run ./run.sh from the repository root")
        print(f"data/ holds no FER+ folders: generating them from {fer} and {ferplus}")
        generate_dataset(fer, ferplus, data, progress=progress)
    print(f"mode {mode}: data from {data}")
    return NotebookSetup(mode, retrain, root, data, Path("runs"), None, fer, ferplus, find_media(root))


@dataclass
class TrainedModel:
    """A model file and the training run behind it."""

    weights: Path
    summary: dict  # the run's summary (epochs, best_epoch, train_minutes, device, valid_accuracy, history, ...)
    trained: bool  # True: trained by this call; False: loaded

    @property
    def history(self) -> list[dict]:
        return self.summary["history"]


def train_or_load(config, weights: Path | str, retrain: bool = False, training_report: Path | str | None = None,
                  progress: bool = True) -> TrainedModel:
    """The model at ``weights`` with its training summary: loaded when the file is there (the summary from
    ``training_report``, by default ``reports/<weights stem>_training.json``), otherwise, or with ``retrain``,
    trained with ``config`` (a ``ferlib.train.TrainConfig``) and exported to ``weights``."""
    from ferlib.train import train

    weights = Path(weights)
    report = Path(training_report) if training_report else Path("reports") / f"{weights.stem}_training.json"
    if weights.is_file() and not retrain:
        if not report.is_file():
            raise FileNotFoundError(f"{report}: the training report of {weights} is missing")
        summary = json.loads(report.read_text())
        print(f"loaded {weights}: trained {summary['epochs']} epochs in {summary['train_minutes']:.0f} min on "
              f"{summary['device']}; best epoch {summary['best_epoch']} "
              f"(validation accuracy {summary['valid_accuracy']:.2%}, majority protocol)")
        return TrainedModel(weights, summary, trained=False)
    weights.parent.mkdir(parents=True, exist_ok=True)
    summary = train(config, progress=progress, export=weights)
    history = json.loads((Path(summary["run_dir"]) / "summary.json").read_text())["history"]
    return TrainedModel(weights, {**summary, "history": history}, trained=True)
