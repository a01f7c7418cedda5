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
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ferlib.data import NUM_CLASSES
from ferlib.engine import OnnxEngine
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
