"""Image pipelines for training and evaluation, built by one factory (torchvision transforms v2).

Inputs are (C, H, W) uint8 face tensors; outputs are float32 (C, 48, 48) normalised to [-1, 1] with mean 0.5
and std 0.5. The ``seed`` augmentation is the seed project's: with probability 0.5 a training image gets a
horizontal flip (p=0.5), a rotation of up to 10 degrees, a 5% brightness / contrast jitter, a random 90-100%
crop resized to 40x40 and an affine shift of up to 10% with up to 10 degrees of rotation; it is then resized
back to 48x48. ``strong`` is this project's heavier pipeline for longer training: every training image gets a
random 80-100% crop, a flip, an affine jitter (up to 15 degrees, 10% shift), a 30% brightness / contrast jitter
and, after normalisation, a random erasing of up to 20% of the face with probability 0.25. Evaluation images are
only resized and normalised. ``strong_augmentation_batch`` draws ``strong`` for a whole normalised batch where it
lies (a GPU), each face with its own parameters, for training runs whose loader would otherwise be the limit.
``real`` is ``strong`` plus the damage that photos, webcams and videos add and FER's web crops mostly lack, each
with its own probability: a gamma curve (exposure), a lower resolution (small faces upscaled), a Gaussian blur
(focus, motion), JPEG compression and sensor noise. ``framed`` is ``strong`` that also zooms out: half the faces
are first set on a canvas up to 1.4 times their side (at a random place, the rest filled grey), so that the face
fills less of the crop than FER's framing, as in looser crops (news photos, a user's own crop). ``mirrored`` flips
faces left to right, for flip test-time augmentation wherever it is done (``ferlib.evaluate``, ``ferlib.engine``,
``ferlib.distill``). ``downscaled`` shrinks a training batch to fewer pixels (progressive resizing: early epochs of a
short run on smaller faces, for a fraction of the network's work per face).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

AUGMENTATIONS = ("none", "light", "strong", "real", "framed")
BUILT_ON_STRONG = ("strong", "real", "framed")  # the augmentations that start from strong's jitter and erasing
MEAN, STD = 0.5, 0.5
# the strong augmentation's ranges, shared by the per-face pipeline and the per-batch one
STRONG_SCALE, STRONG_RATIO = (0.8, 1.0), (0.9, 1.1)  # the crop's share of the face's area, its aspect ratio
STRONG_DEGREES, STRONG_SHIFT = 15, 0.1  # rotation, and shift as a share of the side
STRONG_JITTER = 0.3  # brightness and contrast
ERASE_P, ERASE_SCALE, ERASE_RATIO = 0.25, (0.02, 0.2), (0.3, 3.3)
# the real-input damage: (probability, range) each
GAMMA_P, GAMMA_RANGE = 0.4, (0.6, 1.6)
LOW_RES_P, LOW_RES_SIDES = 0.3, (12, 36)  # the face's side, in pixels, before it is enlarged back
BLUR_P, BLUR_SIGMA = 0.2, (0.3, 1.5)
JPEG_P, JPEG_QUALITY = 0.3, (20, 90)
NOISE_P, NOISE_SIGMA = 0.2, 0.04  # on [0, 1] intensities
# framed: the share of faces zoomed out, and the canvas's side as a multiple of the face's
ZOOM_OUT_P, ZOOM_OUT_SIDES = 0.5, (1.0, 1.4)


class RandomGamma(v2.Transform):
    """A gamma curve with the exponent drawn log-uniformly from ``gamma_range`` (under 1 brightens the shadows)."""

    def __init__(self, gamma_range: tuple[float, float] = GAMMA_RANGE):
        super().__init__()
        self.log_range = tuple(math.log(g) for g in gamma_range)

    def make_params(self, flat_inputs: list) -> dict:
        return {"gamma": math.exp(torch.empty(1).uniform_(*self.log_range).item())}

    def transform(self, inpt, params: dict):
        return self._call_kernel(v2.functional.adjust_gamma, inpt, gamma=params["gamma"])


class RandomLowResolution(v2.Transform):
    """Shrink the face to a random side in ``sides`` and enlarge it back: what a small face in a photo or a video
    frame looks like once it is cropped and resized to the network's input."""

    def __init__(self, sides: tuple[int, int] = LOW_RES_SIDES):
        super().__init__()
        self.sides = sides

    def make_params(self, flat_inputs: list) -> dict:
        return {"side": int(torch.randint(self.sides[0], self.sides[1] + 1, ()).item())}

    def transform(self, inpt, params: dict):
        size = list(inpt.shape[-2:])
        small = v2.functional.resize(inpt, [params["side"]] * 2, antialias=True)
        return v2.functional.resize(small, size, antialias=True)


class RandomJPEG(v2.Transform):
    """JPEG compression at a quality drawn from ``qualities``, through OpenCV (torchvision's own JPEG codec is
    deprecated). Takes a (C, H, W) uint8 tensor with 1 or 3 channels."""

    def __init__(self, qualities: tuple[int, int] = JPEG_QUALITY):
        super().__init__()
        self.qualities = qualities

    def make_params(self, flat_inputs: list) -> dict:
        return {"quality": int(torch.randint(self.qualities[0], self.qualities[1] + 1, ()).item())}

    def transform(self, inpt, params: dict):
        import cv2

        pixels = inpt.permute(1, 2, 0).contiguous().numpy()
        ok, encoded = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, params["quality"]])
        if not ok:
            raise ValueError("JPEG encoding failed")
        decoded = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED).reshape(pixels.shape)
        out = torch.from_numpy(decoded).permute(2, 0, 1).contiguous()
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out


def real_input_damage(share: float = 1.0) -> v2.Transform:
    """The uint8 part of ``real``'s damage (noise comes after the conversion to floats, in build_transform), each
    kind with its probability times ``share``."""
    return v2.Compose([
        v2.RandomApply([RandomGamma()], p=GAMMA_P * share),
        v2.RandomApply([RandomLowResolution()], p=LOW_RES_P * share),
        v2.RandomApply([v2.GaussianBlur(5, sigma=BLUR_SIGMA)], p=BLUR_P * share),
        v2.RandomApply([RandomJPEG()], p=JPEG_P * share),
    ])


def zoom_out(p: float = ZOOM_OUT_P) -> v2.Transform:
    """With probability ``p``, the face on a larger canvas (its side ZOOM_OUT_SIDES times the face's, the face at a
    random place in it) filled grey, the normalisation's mean, so that the border reads as neither dark nor bright."""
    return v2.RandomZoomOut(fill=round(255 * MEAN), side_range=ZOOM_OUT_SIDES, p=p)


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
        v2.RandomResizedCrop(image_size, scale=STRONG_SCALE, ratio=STRONG_RATIO, antialias=True),
        v2.RandomHorizontalFlip(0.5),
        v2.RandomAffine(STRONG_DEGREES, translate=(STRONG_SHIFT, STRONG_SHIFT)),
        v2.ColorJitter(brightness=STRONG_JITTER, contrast=STRONG_JITTER),
    ])


def build_transform(train: bool, augmentation: str = "light", image_size: int = 48, augment_p: float = 0.5,
                    damage_share: float = 1.0) -> v2.Compose:
    """Build the training (``train=True``) or evaluation pipeline. ``augment_p`` is the seed augmentation's
    probability (``light``), ``damage_share`` scales the probability of each kind of ``real`` damage."""
    if augmentation not in AUGMENTATIONS:
        raise ValueError(f"augmentation {augmentation!r}: expected one of {', '.join(AUGMENTATIONS)}")
    steps = []
    if train and augmentation == "light":
        steps.append(light_augmentation(augment_p))
    if train and augmentation == "framed":
        steps.append(zoom_out())
    if train and augmentation in BUILT_ON_STRONG:
        steps.append(strong_augmentation(image_size))
    if train and augmentation == "real":
        steps.append(real_input_damage(damage_share))
    steps += [
        v2.Resize((image_size, image_size), antialias=True),
        v2.ToDtype(torch.float32, scale=True),
    ]
    if train and augmentation == "real":
        steps.append(v2.RandomApply([v2.GaussianNoise(sigma=NOISE_SIGMA)], p=NOISE_P * damage_share))
    steps.append(v2.Normalize([MEAN], [STD]))
    if train and augmentation in BUILT_ON_STRONG:
        steps.append(v2.RandomErasing(p=ERASE_P, scale=ERASE_SCALE, ratio=ERASE_RATIO))
    return v2.Compose(steps)


def mirrored(batch):
    """Faces flipped left to right (along the last axis): a torch tensor or a numpy array (contiguous)."""
    if isinstance(batch, torch.Tensor):
        return batch.flip(-1)
    return np.ascontiguousarray(np.asarray(batch)[..., ::-1])


def downscaled(images: torch.Tensor, size: int) -> torch.Tensor:
    """A batch of (N, C, H, W) faces resized to (size, size), antialiased; as it is when it already has that size."""
    if images.shape[-2:] == (size, size):
        return images
    return v2.functional.resize(images, [size, size], antialias=True)


def denormalize(images: torch.Tensor) -> torch.Tensor:
    """Undo the normalisation, back to [0, 1] floats (for showing faces)."""
    return (images * STD + MEAN).clamp(0, 1)


def _uniform(count: int, low: float, high: float, device, generator) -> torch.Tensor:
    return torch.rand(count, device=device, generator=generator) * (high - low) + low


def strong_augmentation_matrices(count: int, device="cpu", generator: torch.Generator | None = None) -> torch.Tensor:
    """One random (2, 3) sampling matrix per face for ``F.affine_grid``: the geometric part of ``strong`` (an
    80-100% crop of aspect 0.9-1.1, a flip half the time, up to 15 degrees of rotation and a 10% shift), composed so
    that one resampling does all three."""
    area = _uniform(count, *STRONG_SCALE, device, generator)
    log_ratio = _uniform(count, *(math.log(r) for r in STRONG_RATIO), device, generator)
    crop_w, crop_h = (area * log_ratio.exp()).sqrt().clamp(max=1), (area / log_ratio.exp()).sqrt().clamp(max=1)
    centre = torch.stack([_uniform(count, -1, 1, device, generator) * (1 - crop_w),
                          _uniform(count, -1, 1, device, generator) * (1 - crop_h)], dim=1)
    flip = torch.where(torch.rand(count, device=device, generator=generator) < 0.5, -1.0, 1.0)
    angle = _uniform(count, -STRONG_DEGREES, STRONG_DEGREES, device, generator).deg2rad()
    reach = 2 * STRONG_SHIFT  # [-1, 1] spans two sides
    shift = torch.stack([_uniform(count, -reach, reach, device, generator),
                         _uniform(count, -reach, reach, device, generator)], dim=1)
    cos, sin = angle.cos(), angle.sin()
    # output -> input: undo the rotation and shift, then the flip, then map the crop into the whole face
    linear = torch.stack([torch.stack([crop_w * flip * cos, crop_w * flip * sin], dim=1),
                          torch.stack([-crop_h * sin, crop_h * cos], dim=1)], dim=1)
    offset = centre - (linear @ shift.unsqueeze(2)).squeeze(2)
    return torch.cat([linear, offset.unsqueeze(2)], dim=2)


def strong_augmentation_batch(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``strong`` applied to a normalised batch (N, C, H, W) where it lies (a GPU, say), each face with its own draw:
    the crop, flip and rotation in one resampling (black outside the face, as RandomAffine fills), a 30% brightness
    and contrast jitter, and with probability 0.25 a random erasing of 2-20% of the face. The same distributions as
    the per-face ``build_transform(True, "strong")``, at a batch's cost."""
    count, device = len(images), images.device
    faces = images.float() * STD + MEAN
    grid = torch.nn.functional.affine_grid(strong_augmentation_matrices(count, device, generator), list(faces.shape),
                                           align_corners=False)
    faces = torch.nn.functional.grid_sample(faces, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    brightness, contrast = (_uniform(count, 1 - STRONG_JITTER, 1 + STRONG_JITTER, device, generator).view(-1, 1, 1, 1)
                            for _ in range(2))
    faces = (faces * brightness).clamp(0, 1)
    mean = faces.mean(dim=(1, 2, 3), keepdim=True)
    faces = ((faces - mean) * contrast + mean).clamp(0, 1)
    faces = (faces - MEAN) / STD
    return _erase(faces, generator)


def _erase(faces: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """RandomErasing(p=ERASE_P, scale=ERASE_SCALE, ratio=ERASE_RATIO, value=0) on each face of a batch."""
    count, _, height, width = faces.shape
    device = faces.device
    area = _uniform(count, *ERASE_SCALE, device, generator) * height * width
    ratio = _uniform(count, *(math.log(r) for r in ERASE_RATIO), device, generator).exp()  # log-uniform
    erase_h = (area * ratio).sqrt().round().clamp(1, height)
    erase_w = (area / ratio).sqrt().round().clamp(1, width)
    top = (torch.rand(count, device=device, generator=generator) * (height - erase_h + 1)).floor()
    left = (torch.rand(count, device=device, generator=generator) * (width - erase_w + 1)).floor()
    erased = torch.rand(count, device=device, generator=generator) < ERASE_P
    rows = torch.arange(height, device=device).view(1, -1)
    cols = torch.arange(width, device=device).view(1, -1)
    in_rows = (rows >= top.view(-1, 1)) & (rows < (top + erase_h).view(-1, 1))
    in_cols = (cols >= left.view(-1, 1)) & (cols < (left + erase_w).view(-1, 1))
    mask = (in_rows.unsqueeze(2) & in_cols.unsqueeze(1) & erased.view(-1, 1, 1)).unsqueeze(1)
    return faces.masked_fill(mask, 0.0)
