"""The training and evaluation pipelines: shapes, value ranges, the seed's parameters and determinism."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2

from ferlib.transforms import build_transform, denormalize, light_augmentation


def faces(n=16, channels=1, seed=0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, 48, 48), dtype=torch.uint8, generator=generator)


def test_evaluation_pipeline_only_normalises():
    transform = build_transform(train=False)
    image = faces(1)[0]
    out = transform(image)
    assert out.dtype == torch.float32 and out.shape == (1, 48, 48)
    torch.testing.assert_close(out, image.float() / 255 * 2 - 1)
    assert transform(torch.zeros(1, 48, 48, dtype=torch.uint8)).eq(-1).all()
    assert transform(torch.full((1, 48, 48), 255, dtype=torch.uint8)).eq(1).all()


def test_evaluation_pipeline_resizes_other_sizes_to_48():
    out = build_transform(train=False)(torch.zeros(1, 96, 64, dtype=torch.uint8))
    assert out.shape == (1, 48, 48)


@pytest.mark.parametrize("augmentation", ["light", "strong"])
@pytest.mark.parametrize("channels", [1, 3])
def test_training_pipeline_shapes_and_range(channels, augmentation):
    transform = build_transform(train=True, augmentation=augmentation)
    torch.manual_seed(1)
    for image in faces(32, channels):
        out = transform(image)
        assert out.shape == (channels, 48, 48) and out.dtype == torch.float32
        assert out.min() >= -1 and out.max() <= 1


def test_training_pipeline_is_deterministic_under_a_seed_and_random_without():
    transform = build_transform(train=True)
    images = faces(32)
    torch.manual_seed(123)
    first = torch.stack([transform(image) for image in images])
    torch.manual_seed(123)
    second = torch.stack([transform(image) for image in images])
    torch.manual_seed(7)
    third = torch.stack([transform(image) for image in images])
    assert torch.equal(first, second)
    assert not torch.equal(first, third)


def test_about_half_of_training_images_are_augmented():
    transform = build_transform(train=True)
    plain = build_transform(train=False)
    images = faces(400)
    torch.manual_seed(0)
    unchanged = sum(torch.equal(transform(image), plain(image)) for image in images)
    assert 150 < unchanged < 250  # p=0.5 of no augmentation (a few augmented ones could match by chance: ignore)


def test_augment_probability_zero_is_the_evaluation_pipeline():
    image = faces(1)[0]
    torch.manual_seed(0)
    assert torch.equal(build_transform(train=True, augment_p=0.0)(image), build_transform(train=False)(image))
    assert torch.equal(build_transform(train=True, augmentation="none")(image), build_transform(train=False)(image))


def test_light_augmentation_has_the_seed_parameters():
    steps = light_augmentation().transforms
    kinds = [type(step) for step in steps]
    assert kinds == [v2.RandomHorizontalFlip, v2.RandomRotation, v2.ColorJitter, v2.RandomResizedCrop, v2.RandomAffine]
    flip, rotation, jitter, crop, affine = steps
    assert flip.p == 0.5 and rotation.degrees == [-10.0, 10.0]
    assert jitter.brightness == (0.95, 1.05) and jitter.contrast == (0.95, 1.05)
    assert crop.size == (40, 40) and crop.scale == (0.9, 1.0)
    assert affine.degrees == [-10.0, 10.0] and tuple(affine.translate) == (0.1, 0.1)
    assert light_augmentation().p == 0.5


def test_unknown_augmentation_is_an_error():
    with pytest.raises(ValueError, match="augmentation 'heavy'"):
        build_transform(train=True, augmentation="heavy")


def test_denormalize_inverts_normalisation():
    image = faces(1)[0]
    torch.testing.assert_close(denormalize(build_transform(train=False)(image)), image.float() / 255)
