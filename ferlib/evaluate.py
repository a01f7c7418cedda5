"""Evaluation: predictions, metrics per test protocol, plots, and the ``python -m ferlib.evaluate`` command.

Protocols: ``majority`` (the FER+ paper's standard: 3,152 test faces with fer2013new.csv's votes) and ``no_unknown``
(the seed project's filter: no unknown / NF vote; 2,091 faces). For each: accuracy, weighted precision / recall
/ F1 (as the seed reports them), macro F1, per-class precision and recall, and the 8x8 confusion matrix
(rows: true class, columns: predicted), plus accuracy on the faces with no pixel-identical copy in the training
split (FER2013's test sets leak about 290 faces each into training).

One pass: the evaluated split is decoded once, each face a protocol keeps is predicted once, and the training
split's image keys (for "unseen in training") are computed once per process and data folder. Several
``--weights`` are scored as one ensemble: the mean of their probabilities (``ferlib.engine.EnsembleEngine``). With
one ``--data`` folder per model, each model reads the same faces from its own folder (``data/aligned`` for the
face-aligned model, say); the votes come from the first.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support
from tqdm.auto import tqdm

from ferlib.data import (CLASS_NAMES, NUM_CLASSES, SPLIT_FOLDERS, FerPlusDataset, FerPlusSplit, label_targets,
                         load_split, same_faces)
from ferlib.engine import flip_averaged
from ferlib.files import check_writable, check_writable_folder, write_json

PROTOCOLS = ("majority", "no_unknown")


def classification_metrics(labels: np.ndarray, predictions: np.ndarray) -> dict:
    """Accuracy, weighted and macro scores, per-class precision / recall and the confusion matrix."""
    classes = list(range(NUM_CLASSES))
    precision, recall, _, support = precision_recall_fscore_support(labels, predictions, labels=classes,
                                                                    zero_division=0)
    weighted = precision_recall_fscore_support(labels, predictions, labels=classes, average="weighted",
                                               zero_division=0)
    return {
        "n": int(len(labels)),
        "accuracy": float(accuracy_score(labels, predictions)),
        "precision_weighted": float(weighted[0]),
        "recall_weighted": float(weighted[1]),
        "f1_weighted": float(weighted[2]),
        "f1_macro": float(f1_score(labels, predictions, labels=classes, average="macro", zero_division=0)),
        "per_class": {name: {"precision": float(p), "recall": float(r), "support": int(s)}
                      for name, p, r, s in zip(CLASS_NAMES, precision, recall, support)},
        "confusion": confusion_matrix(labels, predictions, labels=classes).tolist(),
    }


def predict_in_batches(predict, images, batch_size: int = 256, tta: bool = False, progress: bool = False) -> list:
    """``predict`` (a batch of faces -> probabilities (B, 8)) over ``images`` in batches of ``batch_size``; with
    ``tta`` the mean with the mirrored faces' probabilities (``ferlib.engine.flip_averaged``). The one prediction
    loop of torch models and engines."""
    if tta:
        predict = flip_averaged(predict)
    return [predict(images[start:start + batch_size])
            for start in tqdm(range(0, len(images), batch_size), desc="predicting", disable=not progress, leave=False)]


@torch.no_grad()
def predict_probabilities(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 256, tta: bool = False,
                          device: torch.device | str = "cpu", progress: bool = False) -> torch.Tensor:
    """Softmax probabilities for already-transformed images (N, C, 48, 48); ``tta`` averages in the flipped face."""
    model.eval()
    outputs = predict_in_batches(lambda batch: model(batch.to(device)).float().softmax(dim=1).cpu(), images,
                                 batch_size, tta, progress)
    return torch.cat(outputs) if outputs else torch.empty(0, NUM_CLASSES)


def predict_faces(engine, images: np.ndarray, tta: bool = False, batch_size: int = 256,
                  progress: bool = False) -> np.ndarray:
    """Probabilities (N, 8) of an engine (``ferlib.engine``) for uint8 faces (N, 48, 48); ``tta`` averages in the
    mirrored face."""
    outputs = predict_in_batches(engine.predict, np.ascontiguousarray(images), batch_size, tta, progress)
    return np.concatenate(outputs) if outputs else np.zeros((0, NUM_CLASSES), np.float32)


def dataset_images(dataset: FerPlusDataset) -> torch.Tensor:
    """All of a dataset's images through its (deterministic, evaluation) transform, stacked."""
    return torch.stack([dataset[i][0] for i in range(len(dataset))]) if len(dataset) else torch.empty(0)


def image_keys(images: np.ndarray) -> list[bytes]:
    """A key per image that only a pixel-identical image of the same shape shares: a 16-byte BLAKE2 digest of
    its bytes (a set of them for the 28,709 training faces takes a megabyte, not the 66 of the pixels)."""
    return [hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).digest() for image in images]


def unseen_mask(images: np.ndarray, reference_images: np.ndarray | frozenset[bytes]) -> np.ndarray:
    """True for each image with no pixel-identical copy among ``reference_images`` (both uint8 (N, 48, 48)), or
    whose key is not in a set of ``image_keys``."""
    seen = reference_images if isinstance(reference_images, frozenset) else frozenset(image_keys(reference_images))
    return np.array([key not in seen for key in image_keys(images)], dtype=bool)


def folder_fingerprint(folder: Path) -> str:
    """A digest of a folder's file names, sizes and modification times: it changes when the generator rewrites
    the folder, or any file in it is replaced or edited. Costs one stat per file, not one decode."""
    with os.scandir(folder) as entries:
        listing = sorted((entry.name, entry.stat().st_size, entry.stat().st_mtime_ns) for entry in entries)
    return hashlib.blake2b(repr(listing).encode(), digest_size=16).hexdigest()


@functools.lru_cache(maxsize=4)
def _training_keys_of(folder: Path, fingerprint: str) -> frozenset[bytes]:
    return frozenset(image_keys(load_split(folder.parent, "train").images))


def training_image_keys(data_dir: Path | str) -> frozenset[bytes]:
    """``image_keys`` of a data folder's training split, decoded once per process for each version of the folder
    (cached by its resolved path and ``folder_fingerprint``), however many models or splits are evaluated."""
    folder = (Path(data_dir) / SPLIT_FOLDERS["train"]).resolve()
    if not folder.is_dir():
        return frozenset(image_keys(load_split(data_dir, "train").images))  # raises load_split's own message
    return _training_keys_of(folder, folder_fingerprint(folder))


def protocol_faces(loaded: FerPlusSplit, protocol: str) -> tuple[np.ndarray, np.ndarray]:
    """The faces a protocol keeps (a mask over the split) and their true classes; ValueError if it keeps none."""
    keep, targets = label_targets(loaded.votes, protocol)
    if not keep.any():
        raise ValueError(f"{loaded.folder}: the {protocol} protocol keeps none of its {len(loaded)} faces; "
                         "expected faces with a clear majority of emotion votes")
    return keep, targets.argmax(axis=1)


def ensemble_probabilities(engines: list, folders: list[Path | str], reference: FerPlusSplit, data_dir: Path | str,
                           keep: np.ndarray | None = None, labels: Path | str | None = None, tta: bool = False,
                           progress: bool = False) -> np.ndarray:
    """The engines' mean probabilities (N, 8) on the faces of ``reference`` (read from ``data_dir``; those ``keep``
    selects, every one where None), each engine reading them from its own generated folder in ``folders`` (the same
    faces cropped its way, checked by ``same_faces``)."""
    if len(folders) != len(engines) or not engines:
        raise ValueError(f"{len(folders)} folders for {len(engines)} models: expected one per model")
    keep = slice(None) if keep is None else keep
    total = 0
    for engine, folder in zip(engines, folders):
        images = reference.images if Path(folder) == Path(data_dir) else same_faces(reference, folder, labels).images
        total = total + predict_faces(engine, images[keep], tta=tta, progress=progress)
    return (total / len(engines)).astype(np.float32)


def evaluate_model(model, data_dir: Path | str, split: str = "test", labels: Path | str | None = None,
                   tta: bool = False, device: torch.device | str = "cpu", progress: bool = True,
                   crops: list[Path | str] | None = None) -> dict:
    """Metrics of a model on a generated split, for every protocol (see module docstring). ``model`` is a torch
    model or an engine from ``ferlib.engine`` (an ONNX twin, say), or a list of them scored as an ensemble (the mean
    of their probabilities), each reading its faces from its own generated folder in ``crops`` (the same faces
    cropped its way, e.g. ``data/aligned``; ``data_dir`` where ``crops`` is None). Votes come from ``data_dir``.

    The split is decoded once and each face any protocol keeps goes through the network once (twice with
    ``tta``); the protocols' predictions are slices of those. The training split, which says which faces are
    unseen in training, is decoded once per process (``training_image_keys``)."""
    from ferlib.engine import TorchEngine

    models = model if isinstance(model, list) else [model]
    engines = [TorchEngine(m.to(device)) if isinstance(m, torch.nn.Module) else m for m in models]
    loaded = load_split(data_dir, split, labels)
    protocols = {protocol: protocol_faces(loaded, protocol) for protocol in PROTOCOLS}
    predicted = np.logical_or.reduce([keep for keep, _ in protocols.values()])
    predictions = np.full(len(loaded), -1)
    predictions[predicted] = ensemble_probabilities(engines, [data_dir] * len(engines) if crops is None else crops,
                                                    loaded, data_dir, predicted, labels, tta, progress).argmax(axis=1)
    unseen = None if split == "train" else unseen_mask(loaded.images, training_image_keys(data_dir))
    results = {}
    for protocol, (keep, labels_true) in protocols.items():
        metrics = classification_metrics(labels_true, predictions[keep])
        if unseen is not None:
            correct = (predictions[keep] == labels_true)[unseen[keep]]
            metrics["unseen_in_train"] = {"n": int(len(correct)),
                                          "accuracy": float(correct.mean()) if len(correct) else float("nan")}
        results[protocol] = metrics
    return results


def save_plots(report: dict, folder: Path | str, history: list[dict] | None = None) -> list[Path]:
    """Confusion matrices (counts and row-normalised), per-class bars and learning curves as PNGs."""
    from ferlib.plots import confusion_figure, learning_curves_figure, per_class_figure

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    figures = {}
    for protocol, metrics in report["protocols"].items():
        for normalize in (False, True):
            title = f"{protocol} protocol, {metrics['n']} faces: accuracy {metrics['accuracy']:.2%}"
            figures[f"confusion_{protocol}{'_normalized' if normalize else ''}.png"] = confusion_figure(
                metrics["confusion"], title, normalize=normalize)
        figures[f"per_class_{protocol}.png"] = per_class_figure(
            metrics, f"per-class precision and recall, {protocol} protocol (test faces per class)")
    if history:
        figures["learning_curves.png"] = learning_curves_figure(history)
    for name, figure in figures.items():
        figure.savefig(folder / name, dpi=110)
    return [folder / name for name in figures]


def most_confident_mistakes(probabilities, labels, count: int = 16) -> np.ndarray:
    """Indices of the wrong predictions the model was surest of, surest first."""
    probabilities, labels = np.asarray(probabilities), np.asarray(labels)
    predictions = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predictions != labels)
    return wrong[np.argsort(-probabilities[wrong, predictions[wrong]])][:count]


def read_history(path: Path) -> list[dict]:
    """The per-epoch history in a run's summary.json (ferlib.train writes it); ValueError if the file is not one."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: history file not found")
    try:
        summary = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not JSON ({error}); expected a run's summary.json") from None
    history = summary.get("history") if isinstance(summary, dict) else None
    if not isinstance(history, list) or not all(isinstance(epoch, dict) for epoch in history):
        raise ValueError(f"{path}: expected a run's summary.json, with a \"history\" list of epochs")
    return history


def format_report(report: dict) -> str:
    weights = report["weights"] if isinstance(report["weights"], str) else " + ".join(report["weights"])
    lines = [f"{weights} on {report['data']} ({report['split']} split, votes from {report['labels']}"
             f"{', flip TTA' if report['tta'] else ''})",
             "| protocol | faces | accuracy | precision (w) | recall (w) | F1 (w) | F1 (macro) | unseen faces | unseen accuracy |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for protocol, m in report["protocols"].items():
        unseen = m.get("unseen_in_train", {"n": 0, "accuracy": float("nan")})
        lines.append(f"| {protocol} | {m['n']} | {m['accuracy']:.4f} | {m['precision_weighted']:.4f} | "
                     f"{m['recall_weighted']:.4f} | {m['f1_weighted']:.4f} | {m['f1_macro']:.4f} | {unseen['n']} | "
                     f"{unseen['accuracy']:.4f} |")
    majority = report["protocols"]["majority"]
    lines.append("per class (majority): " + ", ".join(
        f"{c} P {v['precision']:.2f} R {v['recall']:.2f}" for c, v in majority["per_class"].items()))
    lines.append("confusion (majority; rows true, columns predicted, " + " ".join(CLASS_NAMES) + "):")
    lines += ["  " + " ".join(f"{v:5d}" for v in row) for row in majority["confusion"]]
    return "\n".join(lines)


def load_evaluated(path: Path, device):
    """The engine that scores one ``--weights`` file: ONNX Runtime for an ``.onnx`` twin, else the torch model on
    ``device``."""
    from ferlib.engine import load_engine

    if path.suffix == ".onnx":
        return load_engine(path)
    engine = load_engine(path, engine="torch")
    engine.model.to(device)
    return engine


def main(argv: list[str] | None = None) -> int:
    from ferlib.distributed import pick_device
    from ferlib.engine import EnsembleEngine

    parser = argparse.ArgumentParser(description="Evaluate a FER+ model on a generated split, on every protocol.")
    parser.add_argument("--weights", type=Path, nargs="+", required=True,
                        help="a model from ferlib.train (.safetensors) or its ONNX twin from ferlib.export (.onnx); "
                        "several: their ensemble (mean probabilities)")
    parser.add_argument("--data", type=Path, nargs="+", default=[Path("data")],
                        help="folder holding FER2013Train/Valid/Test; or one per --weights, each model reading the "
                        "same faces from its own folder (e.g. data data/aligned), the votes from the first")
    parser.add_argument("--split", choices=["train", "valid", "test"], default="test")
    parser.add_argument("--labels", type=Path, help="take votes from this folder of FER2013*/label.csv files "
                        "(e.g. ../shared/data/ferplus_repo_labels) instead of the split's own label.csv")
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--plots", type=Path, help="write PNG plots into this folder")
    parser.add_argument("--history", type=Path, help="a run's summary.json, for the learning-curve plot")
    parser.add_argument("--tta", action="store_true", help="average predictions with the horizontally flipped face")
    parser.add_argument("--device", default="auto", help="for .safetensors models: auto, cpu, cuda or mps")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if len(args.data) not in (1, len(args.weights)):
        print(f"error: --data: {len(args.data)} folders for {len(args.weights)} --weights: expected one folder, or "
              "one per model", file=sys.stderr)
        return 2
    crops = None if len(set(args.data)) == 1 else args.data
    try:
        # outputs and inputs are checked first: a read-only place should not be found out after the evaluation
        history = None if args.history is None else read_history(args.history)  # before a --plots folder is made
        if args.json:
            check_writable(args.json)
        if args.plots:
            check_writable_folder(args.plots)
        onnx = [path.suffix == ".onnx" for path in args.weights]
        device = "cpu" if all(onnx) else pick_device(args.device)  # ONNX Runtime runs on the CPU
        engines = [load_evaluated(path, device) for path in args.weights]
        engine = engines[0] if len(engines) == 1 else EnsembleEngine(engines)
        info = engine.info
        ran_on = f"{device} (torch models), cpu (ONNX models)" if any(onnx) and not all(onnx) else str(device)
        protocols = evaluate_model(engine if crops is None else engines, args.data[0], args.split, args.labels,
                                   args.tta, device, progress=not args.no_progress, crops=crops)
    except (OSError, ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    weights = str(args.weights[0]) if len(args.weights) == 1 else [str(path) for path in args.weights]
    data = str(args.data[0]) if crops is None else [str(folder) for folder in crops]
    report = {"weights": weights, "data": data, "split": args.split,
              "labels": str(args.labels) if args.labels else "fer2013new.csv (the split's label.csv)",
              "tta": args.tta, "device": ran_on, "model": info, "protocols": protocols}
    print(format_report(report))
    if args.json:
        write_json(args.json, report)
    if args.plots:
        save_plots(report, args.plots, history)
    return 0


if __name__ == "__main__":
    sys.exit(main())
