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


def test_batch_augmentation_draws_each_face_its_own_crop_flip_and_rotation():
    from ferlib.transforms import strong_augmentation_batch, strong_augmentation_matrices

    matrices = strong_augmentation_matrices(2000, generator=torch.Generator().manual_seed(0))
    assert matrices.shape == (2000, 2, 3)
    linear = matrices[:, :, :2]
    # the crop keeps 80-100% of the face's area (rotation and flip keep areas): |det| is that share
    assert linear.det().abs().min() >= 0.8 - 1e-4 and linear.det().abs().max() <= 1 + 1e-4
    assert 0.45 < (linear.det() < 0).float().mean() < 0.55  # a flip half the time
    # a face whose left half is white: mirrored ones come out white on the right, as the matrices say
    face = torch.full((1, 1, 48, 48), -1.0)
    face[..., :24] = 1.0
    out = strong_augmentation_batch(face.repeat(400, 1, 1, 1), torch.Generator().manual_seed(1))
    flipped = strong_augmentation_matrices(400, generator=torch.Generator().manual_seed(1))[:, :, :2].det() < 0
    right_brighter = out[..., 30:].mean(dim=(1, 2, 3)) > out[..., :18].mean(dim=(1, 2, 3))
    assert (right_brighter == flipped).float().mean() > 0.97
    assert out.shape == (400, 1, 48, 48) and out.min() >= -1 and out.max() <= 1
    assert not torch.equal(out[0], out[1])  # one draw per face, not per batch
    again = strong_augmentation_batch(face.repeat(400, 1, 1, 1), torch.Generator().manual_seed(1))
    assert torch.equal(out, again)


def test_batch_augmentation_erases_a_quarter_of_the_faces():
    from ferlib.transforms import strong_augmentation_batch

    white = torch.ones(1000, 1, 48, 48)
    out = strong_augmentation_batch(white, torch.Generator().manual_seed(2))
    erased = (out == 0).flatten(1)  # the erased box is 0 (mid-gray), nothing else in a white face is
    shares = erased.float().mean(dim=1)
    assert 0.2 < (shares > 0).float().mean() < 0.3
    assert shares[shares > 0].max() <= 0.2 + 0.03 and shares[shares > 0].min() >= 0.02 - 0.01
