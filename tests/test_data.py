"""Label modes on hand-made vote rows, and loading generated splits into the torch Dataset."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from conftest import write_csvs, make_rows
from ferlib.data import (CLASS_NAMES, FerPlusDataset, ferplus_label_distribution, label_targets, load_dataset,
                         load_split)
from ferlib.generate import generate_dataset


def votes(neutral=0, happiness=0, surprise=0, sadness=0, anger=0, disgust=0, fear=0, contempt=0, unknown=0, nf=0):
    return (neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, nf)


def dist(**shares) -> tuple[float, ...]:
    return tuple(float(shares.get(name, 0.0)) for name in CLASS_NAMES)


def test_class_names_are_in_ferplus_column_order():
    assert CLASS_NAMES == ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")


# (votes, expected target or None when the face is dropped), checked by hand against the paper's rules
MAJORITY = [
    (votes(neutral=6, happiness=2, surprise=1, sadness=1), dist(neutral=1)),
    (votes(neutral=4, happiness=1, surprise=1, sadness=1, anger=1, disgust=1, fear=1), dist(neutral=1)),  # singles go
    (votes(neutral=4, happiness=4, surprise=1, sadness=1), None),  # tie: 4 is not more than half of 8
    (votes(neutral=5, sadness=5), None),  # exactly half is not a majority
    (votes(neutral=3, unknown=7), None),  # unknown majority
    (votes(happiness=2, nf=8), None),  # not-a-face majority
    (votes(1, 1, 1, 1, 1, 1, 1, 1, 1, 1), None),  # only single votes: nothing left
    (votes(contempt=6, disgust=4), dist(contempt=1)),
]

PROBABILITY = [
    (votes(neutral=5, happiness=3, surprise=2), dist(neutral=5 / 8, happiness=3 / 8)),  # stops at 75% of votes
    (votes(neutral=4, happiness=4, surprise=2), dist(neutral=0.5, happiness=0.5)),  # a tie is taken together
    (votes(neutral=3, happiness=3, surprise=2, sadness=2), None),  # 4 emotions needed: too many
    (votes(neutral=6, unknown=2, nf=2), dist(neutral=1)),  # unknown after an emotion is cut off
    (votes(neutral=5, unknown=5), None),  # emotion and unknown tie: only half the votes left
    (votes(unknown=6, neutral=4), None),  # unknown on top
    (votes(neutral=4, happiness=3, surprise=1, sadness=1, anger=1), dist(neutral=4 / 7, happiness=3 / 7)),
    (votes(neutral=2, happiness=2, surprise=2, sadness=2, anger=2), None),  # a 5-way tie
]

MULTI_TARGET = [
    (votes(neutral=4, happiness=3, surprise=3), dist(neutral=0.4, happiness=0.3, surprise=0.3)),  # >= 30% each
    (votes(neutral=5, happiness=2, surprise=2, sadness=1), dist(neutral=1)),  # 2 of 9 is under 30%
    (votes(neutral=4, happiness=2, surprise=2, sadness=2), None),  # 4 of 10 is not more than half
    (votes(neutral=3, unknown=7), None),
]


@pytest.mark.parametrize("mode,cases", [("majority", MAJORITY), ("probability", PROBABILITY),
                                        ("crossentropy", PROBABILITY), ("multi_target", MULTI_TARGET)])
def test_ferplus_label_modes_on_hand_made_votes(mode, cases):
    for row, expected in cases:
        result = ferplus_label_distribution(row, mode)
        if expected is None:
            assert result is None, (mode, row, result)
        else:
            assert result is not None, (mode, row)
            np.testing.assert_allclose(result, expected, err_msg=f"{mode} {row}")


def test_seed_filter_drops_any_unknown_or_nf_vote_and_takes_the_most_voted_emotion():
    rows = np.array([
        votes(neutral=4, happiness=4, surprise=2),  # tie goes to the first column
        votes(neutral=9, unknown=1),  # any unknown vote drops the face
        votes(happiness=9, nf=1),
        votes(neutral=1, happiness=1, surprise=1, sadness=1, anger=1, disgust=1, fear=1, contempt=3),
    ])
    keep, targets = label_targets(rows, "no_unknown")
    assert keep.tolist() == [True, False, False, True]
    assert targets.argmax(1).tolist() == [0, 7]


def test_label_targets_keeps_the_faces_the_mode_keeps():
    rows = np.array([row for row, _ in MAJORITY])
    keep, targets = label_targets(rows, "majority")
    assert keep.tolist() == [expected is not None for _, expected in MAJORITY]
    assert targets.shape == (keep.sum(), 8) and targets.dtype == np.float32
    np.testing.assert_allclose(targets.sum(1), 1)


def test_unknown_label_mode_is_an_error():
    with pytest.raises(ValueError, match="label mode 'vote'"):
        label_targets(np.zeros((1, 10), dtype=int), "vote")


@pytest.fixture
def generated(tmp_path):
    csvs = write_csvs(tmp_path / "csv", make_rows())
    generate_dataset(csvs.fer, csvs.ferplus, tmp_path / "data", log=lambda m: None, progress=False)
    return tmp_path / "data", csvs


def test_load_split_reads_images_and_votes(generated):
    data_dir, csvs = generated
    split = load_split(data_dir, "valid")
    expected = csvs.expected()
    assert len(split) == 8 and split.images.dtype == np.uint8 and split.images.shape == (8, 48, 48)
    for name, image, row_votes in zip(split.image_names, split.images, split.votes):
        np.testing.assert_array_equal(image, expected[name].pixels)
        assert row_votes.tolist() == expected[name].votes


def test_other_label_source_is_matched_by_name(generated, tmp_path):
    data_dir, _ = generated
    split = load_split(data_dir, "test")
    other = tmp_path / "other_labels" / "FER2013Test"
    other.mkdir(parents=True)
    order = np.arange(len(split))[::-1]  # a different row order, and different votes
    lines = [f'{split.image_names[i]},"(0, 0, 48, 48)",{",".join(["0"] * 7)},{i + 1},0,0' for i in order]
    (other / "label.csv").write_text("\n".join(lines) + "\n")
    relabelled = load_split(data_dir, "test", labels=tmp_path / "other_labels")
    np.testing.assert_array_equal(relabelled.images, split.images)
    assert relabelled.votes[:, 7].tolist() == list(range(1, len(split) + 1))


def test_label_source_missing_an_image_is_an_error(generated, tmp_path):
    data_dir, _ = generated
    other = tmp_path / "other_labels" / "FER2013Test"
    other.mkdir(parents=True)
    (other / "label.csv").write_text('fer0000099.png,"(0, 0, 48, 48)",1,0,0,0,0,0,0,0,0,0\n')
    with pytest.raises(ValueError, match="images without votes there"):
        load_split(data_dir, "test", labels=tmp_path / "other_labels")


def test_missing_split_says_how_to_generate_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="generate_training_data.py"):
        load_split(tmp_path, "train")
    with pytest.raises(ValueError, match="split 'validation'"):
        load_split(tmp_path, "validation")


def test_dataset_items_per_label_mode(generated):
    data_dir, _ = generated
    split = load_split(data_dir, "train")
    for mode in ("majority", "no_unknown"):
        dataset = FerPlusDataset(split, mode)
        image, target = dataset[0]
        assert image.shape == (1, 48, 48) and image.dtype == torch.uint8
        assert target.dtype == torch.int64 and target == dataset.labels[0]
    crossentropy = FerPlusDataset(split, "crossentropy")
    _, target = crossentropy[0]
    assert target.shape == (8,) and torch.isclose(target.sum(), torch.tensor(1.0))
    multi = FerPlusDataset(split, "multi_target")
    _, target = multi[0]
    present = multi.distributions[0] > 0
    assert torch.allclose(target[present], torch.tensor(0.999 + 0.001)) and torch.allclose(target[~present], torch.tensor(0.001))


def test_probability_mode_draws_labels_from_the_vote_distribution(generated):
    data_dir, _ = generated
    dataset = FerPlusDataset(load_split(data_dir, "train"), "probability")
    mixed = next(i for i in range(len(dataset)) if (dataset.distributions[i] > 0).sum() > 1)
    torch.manual_seed(0)
    draws = torch.stack([dataset[mixed][1] for _ in range(4000)])
    frequencies = torch.bincount(draws, minlength=8).float() / len(draws)
    assert torch.allclose(frequencies, dataset.distributions[mixed], atol=0.03)
    torch.manual_seed(0)
    assert torch.equal(draws[:50], torch.stack([dataset[mixed][1] for _ in range(50)]))


def test_three_channel_option(generated):
    data_dir, _ = generated
    dataset = load_dataset(data_dir, "valid", channels=3)
    image, _ = dataset[0]
    assert image.shape == (3, 48, 48)
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
    with pytest.raises(ValueError, match="channels=2"):
        load_dataset(data_dir, "valid", channels=2)


def test_class_counts(generated):
    data_dir, _ = generated
    dataset = load_dataset(data_dir, "train")
    counts = dataset.class_counts()
    assert counts.shape == (8,) and counts.sum() == len(dataset)


def test_other_crops_draw_each_face_from_either_folder(generated):
    data_dir, _ = generated
    split = load_split(data_dir, "train")
    inverted = dataclasses.replace(split, images=255 - split.images, folder=data_dir / "inverted")
    dataset = FerPlusDataset(split, "majority", other_crops=inverted)
    torch.manual_seed(0)
    draws = [dataset[3][0] for _ in range(400)]
    own = sum(torch.equal(image, dataset.images[3]) for image in draws)
    other = sum(torch.equal(image, 255 - dataset.images[3]) for image in draws)
    assert own + other == 400 and 160 < own < 240
    assert torch.equal(dataset[3][1], FerPlusDataset(split, "majority")[3][1])  # the target does not change
    shuffled = dataclasses.replace(inverted, image_names=inverted.image_names[::-1].copy())
    with pytest.raises(ValueError, match="inverted: the faces of .* cropped another way were expected, but row 0"):
        FerPlusDataset(split, "majority", other_crops=shuffled)
