"""Knowledge distillation: teachers (saved ferlib models) whose averaged predictions on each augmented training
batch are mixed into a student's targets.

The teachers see exactly the faces the student sees, augmentation included ("consistent" distillation, Beyer et
al., CVPR 2022), each also mirrored (flip test-time augmentation), so the student learns the ensemble's answer on
every view rather than on the clean face alone. The target a student is trained on is

    (1 - distill_weight) * the face's own target (its FER+ vote distribution, or its class)
    + distill_weight * mean over teachers of softmax(teacher logits / distill_temperature)

Training turns this on with ``teachers = "a.safetensors,b.safetensors"`` in a config (see ``configs/student.toml``).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ferlib.data import NUM_CLASSES
from ferlib.evaluate import mirrored
from ferlib.models import input_channels, load_model_for


def teacher_paths(teachers: str | None) -> list[Path]:
    """The weight files of a comma-separated ``teachers`` setting (empty for none)."""
    if not teachers:
        return []
    paths = [Path(part.strip()) for part in teachers.split(",")]
    if any(str(path) in ("", ".") for path in paths):
        raise ValueError(f"teachers = {teachers!r}: expected model files separated by commas, with none empty")
    return paths


def load_teachers(teachers: str | None, device: torch.device, channels_last: bool = False) -> list[torch.nn.Module]:
    """The teachers in evaluation mode on ``device``, frozen; ValueError naming a file that is not a ferlib model."""
    models = []
    for path in teacher_paths(teachers):
        model, _ = load_model_for("teachers", path)
        model = model.to(device).eval().requires_grad_(False)
        models.append(model.to(memory_format=torch.channels_last) if channels_last else model)
    return models


def _fitted(images: torch.Tensor, channels: int) -> torch.Tensor:
    """The student's normalised batch in the channel count a teacher takes (1: grayscale, 3: it repeated)."""
    if images.shape[1] == channels:
        return images
    return images[:, :1].expand(-1, channels, -1, -1) if channels == 3 else images[:, :1]


@torch.no_grad()
def teacher_probabilities(teachers: list[torch.nn.Module], images: torch.Tensor, temperature: float = 1.0,
                          autocast: dict | None = None) -> torch.Tensor:
    """The teachers' mean probabilities (N, 8) for a normalised batch, each teacher averaged with its answer on the
    mirrored faces."""
    total = torch.zeros(len(images), NUM_CLASSES, device=images.device)
    with torch.autocast(**(autocast or dict(device_type=images.device.type, enabled=False))):
        for teacher in teachers:
            batch = _fitted(images, input_channels(teacher))
            for view in (batch, mirrored(batch)):
                total += (teacher(view).float() / temperature).softmax(dim=1)
    return total / (2 * len(teachers))


def distillation_targets(targets: torch.Tensor, teacher_probs: torch.Tensor, weight: float) -> torch.Tensor:
    """The student's targets: a face's own target (class indices or distributions over the 8 classes) mixed with
    the teachers' probabilities, ``weight`` of them."""
    if targets.ndim == 1:
        targets = F.one_hot(targets, NUM_CLASSES).float()
    return (1 - weight) * targets.float() + weight * teacher_probs
