"""Knowledge distillation: teachers (saved ferlib models) whose averaged predictions on each augmented training
batch are mixed into a student's targets.

The teachers see exactly the faces the student sees, augmentation included ("consistent" distillation, Beyer et
al., CVPR 2022), each also mirrored (flip test-time augmentation), so the student learns the ensemble's answer on
every view rather than on the clean face alone. The target a student is trained on is

    (1 - distill_weight) * the face's own target (its FER+ vote distribution, or its class)
    + distill_weight * mean over teachers of softmax(teacher logits / distill_temperature)

Training turns this on with ``teachers = "a.safetensors,b.safetensors"`` in a config (see ``configs/student.toml``).
A teacher may also be an ONNX twin (``model.int8.onnx``, from ``ferlib.export``): ONNX Runtime reads it on the CPU,
where the int8 twin of the headline network costs a student about a third of what the PyTorch teacher does, so a
small student can be distilled on a 2-core CPU (``configs/fast_kd.toml``).

Offline, the teachers read each training face once, unaugmented (and mirrored), and their mean probabilities are
written to a file that training reads with ``teacher_targets = "file.npz"``: training then costs no more than
without teachers, and each teacher may read its own crops of the faces (the face-aligned model ``data/aligned``),
which teachers reading the student's batch cannot. The mix is the same, with the stored probabilities::

    python -m ferlib.distill --weights models/ferplus_cnn.safetensors models/ferplus_cnn_aligned.safetensors \
        --data data data/aligned --out runs/teacher_targets/shipped_two.npz
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ferlib.data import NUM_CLASSES, label_targets, load_split
from ferlib.engine import OnnxEngine
from ferlib.files import atomic_path, check_writable
from ferlib.models import input_channels, load_model_for
from ferlib.transforms import mirrored


def teacher_paths(teachers: str | None) -> list[Path]:
    """The weight files of a comma-separated ``teachers`` setting (empty for none)."""
    if not teachers:
        return []
    paths = [Path(part.strip()) for part in teachers.split(",")]
    if any(str(path) in ("", ".") for path in paths):
        raise ValueError(f"teachers = {teachers!r}: expected model files separated by commas, with none empty")
    return paths


def load_teachers(teachers: str | None, device: torch.device, channels_last: bool = False) -> list:
    """The teachers: PyTorch models in evaluation mode on ``device``, frozen, or ONNX Runtime engines for ``.onnx``
    files; ValueError naming a file that is not a ferlib model."""
    models = []
    for path in teacher_paths(teachers):
        if path.suffix == ".onnx":
            if not path.is_file():
                raise ValueError(f"teachers: {path}: file not found (python -m ferlib.export writes a model's twins)")
            try:
                models.append(OnnxEngine(path))
            except ValueError as error:
                raise ValueError(f"teachers: {error}") from None
            continue
        model, _ = load_model_for("teachers", path)
        model = model.to(device).eval().requires_grad_(False)
        models.append(model.to(memory_format=torch.channels_last) if channels_last else model)
    return models


def _fitted(images: torch.Tensor, channels: int) -> torch.Tensor:
    """The student's normalised batch in the channel count a teacher takes (1: grayscale, 3: it repeated)."""
    if images.shape[1] == channels:
        return images
    return images[:, :1].expand(-1, channels, -1, -1) if channels == 3 else images[:, :1]


def _logits(teacher, batch: torch.Tensor) -> torch.Tensor:
    if isinstance(teacher, OnnxEngine):
        array = batch.float().contiguous().cpu().numpy()  # channels-last or bf16 batches become plain float32
        return torch.from_numpy(teacher.logits(array)).to(batch.device)
    return teacher(batch).float()


@torch.no_grad()
def teacher_probabilities(teachers: list, images: torch.Tensor, temperature: float = 1.0,
                          autocast: dict | None = None) -> torch.Tensor:
    """The teachers' mean probabilities (N, 8) for a normalised batch, each teacher averaged with its answer on the
    mirrored faces."""
    total = torch.zeros(len(images), NUM_CLASSES, device=images.device)
    with torch.autocast(**(autocast or dict(device_type=images.device.type, enabled=False))):
        for teacher in teachers:
            channels = teacher.channels if isinstance(teacher, OnnxEngine) else input_channels(teacher)
            batch = _fitted(images, channels)
            for view in (batch, mirrored(batch)):
                total += (_logits(teacher, view) / temperature).softmax(dim=1)
    return total / (2 * len(teachers))


def distillation_targets(targets: torch.Tensor, teacher_probs: torch.Tensor, weight: float) -> torch.Tensor:
    """The student's targets: a face's own target (class indices or distributions over the 8 classes) mixed with
    the teachers' probabilities, ``weight`` of them."""
    if targets.ndim == 1:
        targets = F.one_hot(targets, NUM_CLASSES).float()
    return (1 - weight) * targets.float() + weight * teacher_probs


def teacher_targets(engines: list, folders: list[Path | str], split: str = "train", labels: Path | str | None = None,
                    tta: bool = True, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A split's image names and the teachers' mean probabilities (N, 8) on its faces, unaugmented (and with
    ``tta`` mirrored too), each teacher (an engine) reading the faces from its own generated folder in ``folders``;
    those folders must hold the same faces as the first, row for row (``ferlib.data.same_faces``)."""
    from ferlib.evaluate import ensemble_probabilities

    reference = load_split(folders[0], split, labels)
    return reference.image_names, ensemble_probabilities(engines, folders, reference, folders[0], labels=labels,
                                                         tta=tta, progress=progress)


def save_teacher_targets(path: Path | str, image_names: np.ndarray, probabilities: np.ndarray, source: dict) -> None:
    """The file ``teacher_targets`` reads: image names, probabilities and where they came from (JSON), as .npz
    (no pickles); written to a temporary file and renamed."""
    with atomic_path(path) as temporary, open(temporary, "wb") as file:
        np.savez(file, image_names=np.asarray(image_names, dtype=str),
                 probabilities=np.asarray(probabilities, np.float32), source=np.array(json.dumps(source)))


def load_teacher_targets(path: Path | str, image_names: list[str]) -> torch.Tensor:
    """The probabilities (N, 8) a ``teacher_targets`` file holds for ``image_names``, in their order; a ValueError
    naming the file where it is not such a file or lacks one of the faces."""
    where = f"teacher_targets: {path}"
    try:
        with np.load(path, allow_pickle=False) as archive:
            names, probabilities = archive["image_names"], archive["probabilities"]
    except FileNotFoundError:
        raise ValueError(f"{where}: file not found (python -m ferlib.distill writes teachers' answers, python -m "
                         "ferlib.original_labels FER2013's own labels)") from None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise ValueError(f"{where}: not a file of teachers' probabilities from python -m ferlib.distill ({error})") \
            from None
    if (probabilities.shape != (len(names), NUM_CLASSES) or not np.isfinite(probabilities).all()
            or (probabilities < 0).any() or not np.allclose(probabilities.sum(axis=1), 1, atol=1e-3)):
        raise ValueError(f"{where}: expected one row of {NUM_CLASSES} probabilities summing to 1 per image name, got "
                         f"{len(names)} names and probabilities of shape {probabilities.shape}")
    row_of = {name: row for row, name in enumerate(names.tolist())}
    missing = [name for name in image_names if name not in row_of]
    if missing:
        raise ValueError(f"{where}: no probabilities for {len(missing)} of the {len(image_names)} training faces, "
                         f"{missing[0]} first (written for another data folder or split?)")
    return torch.from_numpy(probabilities[[row_of[name] for name in image_names]])


class WithTeacherTargets(torch.utils.data.Dataset):
    """A training set whose faces come with the teachers' probabilities for them: items are
    ``(image, (target, probabilities))``, and ``train_one_epoch`` mixes the two."""

    def __init__(self, dataset, probabilities: torch.Tensor):
        if len(probabilities) != len(dataset):
            raise ValueError(f"{len(probabilities)} rows of teachers' probabilities for {len(dataset)} faces")
        self.dataset, self.probabilities = dataset, probabilities
        self.labels, self.image_names = dataset.labels, dataset.image_names

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, target = self.dataset[index]
        return image, (target, self.probabilities[index])


def main(argv: list[str] | None = None) -> int:
    from ferlib.evaluate import load_evaluated

    parser = argparse.ArgumentParser(description="Write the teachers' mean probabilities on a split's faces, for "
                                     "training with teacher_targets (offline distillation).")
    parser.add_argument("--weights", type=Path, nargs="+", required=True,
                        help="the teachers: ferlib models (.safetensors) or their ONNX twins (.onnx)")
    parser.add_argument("--data", type=Path, nargs="+", default=[Path("data")],
                        help="the generated folder, or one per teacher (each reads the same faces from its own, "
                        "e.g. data data/aligned)")
    parser.add_argument("--out", type=Path, required=True, help="the .npz file to write")
    parser.add_argument("--split", choices=["train", "valid", "test"], default="train")
    parser.add_argument("--no-tta", action="store_true", help="the faces only, not also mirrored")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    folders = args.data * len(args.weights) if len(args.data) == 1 else args.data
    if len(folders) != len(args.weights):
        print(f"error: --data: {len(args.data)} folders for {len(args.weights)} --weights: expected one folder, or "
              "one per teacher", file=sys.stderr)
        return 2
    try:
        check_writable(args.out)
        engines = [load_evaluated(path, "cpu") for path in args.weights]
        names, probabilities = teacher_targets(engines, folders, args.split, tta=not args.no_tta,
                                               progress=not args.no_progress)
        split = load_split(folders[0], args.split)
        keep, targets = label_targets(split.votes, "majority")
        agreement = float((probabilities[keep].argmax(axis=1) == targets.argmax(axis=1)).mean())
        source = {"weights": [str(path) for path in args.weights], "data": [str(folder) for folder in folders],
                  "split": args.split, "tta": not args.no_tta,
                  "majority_accuracy": agreement, "majority_faces": int(keep.sum())}
        save_teacher_targets(args.out, names, probabilities, source)
    except (OSError, ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.out}: {len(names)} faces of the {args.split} split; the teachers' answer is the majority vote's "
          f"class on {100 * agreement:.2f}% of the {int(keep.sum())} faces the majority protocol keeps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
