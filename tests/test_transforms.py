"""The training and evaluation pipelines: shapes, value ranges, the seed's parameters and determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from ferlib.transforms import (ZOOM_OUT_SIDES, RandomGamma, RandomJPEG, RandomLowResolution, build_transform, denormalize,
                               light_augmentation, real_input_damage, zoom_out)


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


@pytest.mark.parametrize("augmentation", ["light", "strong", "real", "framed"])
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


def test_low_resolution_keeps_the_size_and_loses_the_detail():
    torch.manual_seed(0)
    image = faces(1)[0]  # noise: all detail
    out = RandomLowResolution((12, 12))(image)
    assert out.shape == image.shape and out.dtype == torch.uint8
    # a 12-pixel face enlarged back is smooth: neighbours differ far less than in the noise it came from
    assert (out[:, :, 1:].float() - out[:, :, :-1].float()).abs().mean() < \
        0.5 * (image[:, :, 1:].float() - image[:, :, :-1].float()).abs().mean()


def test_gamma_keeps_black_and_white_and_moves_the_middle():
    image = torch.tensor([[[0, 128, 255]]], dtype=torch.uint8)
    torch.manual_seed(0)
    outputs = {tuple(RandomGamma((0.5, 2.0))(image).flatten().tolist()) for _ in range(50)}
    assert all(out[0] == 0 and out[2] == 255 for out in outputs)
    middles = [out[1] for out in outputs]
    assert min(middles) < 100 and max(middles) > 160  # both darker (gamma > 1) and brighter (< 1) are drawn


def test_real_input_damage_changes_some_faces_and_leaves_others():
    plain = build_transform(train=False)
    torch.manual_seed(0)
    damage = real_input_damage()
    images = faces(200)
    changed = sum(not torch.equal(damage(image), image) for image in images)
    # each of the four kinds of damage has its own probability (0.2-0.4): about 73% of faces get at least one
    assert 0.55 * 200 < changed < 0.9 * 200
    assert plain(damage(images[0])).shape == (1, 48, 48)


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_keeps_the_shape_and_loses_more_at_low_quality(channels):
    image = faces(1, channels)[0]
    errors = {}
    for quality in (10, 95):
        out = RandomJPEG((quality, quality))(image)
        assert out.shape == image.shape and out.dtype == torch.uint8
        errors[quality] = (out.float() - image.float()).abs().mean().item()
    assert 0 < errors[95] < errors[10]


def test_the_damage_share_scales_how_often_faces_are_damaged():
    images = faces(200)
    changed = {}
    for share in (0.0, 0.5, 1.0):
        torch.manual_seed(0)
        damage = real_input_damage(share)
        changed[share] = sum(not torch.equal(damage(image), image) for image in images)
    assert changed[0.0] == 0 < changed[0.5] < changed[1.0]
    torch.manual_seed(0)
    plain = build_transform(True, "strong")
    torch.manual_seed(0)
    undamaged = build_transform(True, "real", damage_share=0.0)
    assert len(undamaged.transforms) == len(plain.transforms) + 2  # the damage and the noise, both at p = 0


def test_zoom_out_sets_about_half_the_faces_on_a_larger_grey_canvas():
    torch.manual_seed(0)
    white = torch.full((1, 48, 48), 255, dtype=torch.uint8)
    outputs = [zoom_out()(white) for _ in range(400)]
    sides = np.array([out.shape[-1] for out in outputs])
    assert all(out.shape[-2] == out.shape[-1] for out in outputs)
    assert sides.min() == 48 and 48 < sides.max() <= round(48 * ZOOM_OUT_SIDES[1])
    zoomed = [out for out in outputs if out.shape[-1] > 48]
    assert 0.4 < len(zoomed) / len(outputs) < 0.6
    # the face stays whole (48 x 48 white pixels) and the rest is the grey fill
    for out in zoomed[:20]:
        assert (out == 255).sum() == 48 * 48
        assert set(out.unique().tolist()) <= {128, 255}


def test_framed_training_faces_are_smaller_on_average_than_strong_ones():
    # a white face on black: the share of bright pixels is the face's share of the crop
    face = torch.zeros(1, 48, 48, dtype=torch.uint8)
    face[:, 8:40, 8:40] = 255

    def bright_share(augmentation):
        transform = build_transform(True, augmentation)
        torch.manual_seed(3)
        return np.mean([(transform(face) > 0.5).float().mean().item() for _ in range(300)])
    # half the faces at 1/1.2 of the side on average: 0.86 of the area in theory, 0.92 through the brightness jitter
    assert bright_share("framed") < 0.95 * bright_share("strong")
