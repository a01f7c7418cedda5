"""Image pipelines for training and evaluation, built by one factory (torchvision transforms v2).

Inputs are (C, H, W) uint8 face tensors; outputs are float32 (C, 48, 48) normalised to [-1, 1] with mean 0.5
and std 0.5. The ``seed`` augmentation is the seed project's: with probability 0.5 a training image gets a
horizontal flip (p=0.5), a rotation of up to 10 degrees, a 5% brightness / contrast jitter, a random 90-100%
crop resized to 40x40 and an affine shift of up to 10% with up to 10 degrees of rotation; it is then resized
back to 48x48. ``strong`` is this project's heavier pipeline for longer training: every training image gets a
random 80-100% crop, a flip, an affine jitter (up to 15 degrees, 10% shift), a 30% brightness / contrast jitter
and, after normalisation, a random erasing of up to 20% of the face with probability 0.25. Evaluation images are
only resized and normalised.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

AUGMENTATIONS = ("none", "light", "strong")
MEAN, STD = 0.5, 0.5


def light_augmentation(p: float = 0.5) -> v2.Transform:
    """The seed project's augmentation, applied as a whole to an image with probability ``p``."""
    return v2.RandomApply(
        [
            v2.RandomHorizontalFlip(0.5),
            v2.RandomRotation(10),
            v2.ColorJitter(brightness=0.05, contrast=0.05),
            v2.RandomResizedCrop(40, scale=(0.9, 1.0), antialias=True),
            v2.RandomAffine(10, translate=(0.1, 0.1)),
        ],
        p=p,
    )


def strong_augmentation(image_size: int = 48) -> v2.Transform:
    """Geometric and photometric jitter applied to every training image (before normalisation)."""
    return v2.Compose([
        v2.RandomResizedCrop(image_size, scale=(0.8, 1.0), ratio=(0.9, 1.1), antialias=True),
        v2.RandomHorizontalFlip(0.5),
        v2.RandomAffine(15, translate=(0.1, 0.1)),
        v2.ColorJitter(brightness=0.3, contrast=0.3),
    ])


def build_transform(train: bool, augmentation: str = "light", image_size: int = 48, augment_p: float = 0.5) -> v2.Compose:
    """Build the training (``train=True``) or evaluation pipeline."""
    if augmentation not in AUGMENTATIONS:
        raise ValueError(f"augmentation {augmentation!r}: expected one of {', '.join(AUGMENTATIONS)}")
    steps = []
    if train and augmentation == "light":
        steps.append(light_augmentation(augment_p))
    if train and augmentation == "strong":
        steps.append(strong_augmentation(image_size))
    steps += [
        v2.Resize((image_size, image_size), antialias=True),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize([MEAN], [STD]),
    ]
    if train and augmentation == "strong":
        steps.append(v2.RandomErasing(p=0.25, scale=(0.02, 0.2)))
    return v2.Compose(steps)


def denormalize(images: torch.Tensor) -> torch.Tensor:
    """Undo the normalisation, back to [0, 1] floats (for showing faces)."""
    return (images * STD + MEAN).clamp(0, 1)
