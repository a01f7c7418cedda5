"""Checks on the real FER2013 / FER+ files in ../shared/data; skipped with a reason when they are absent."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ferlib.data import SPLIT_FOLDERS, label_targets, load_split, read_label_csv

EXPECTED_IMAGES = {"FER2013Train": 28_558, "FER2013Valid": 3_579, "FER2013Test": 3_573}


def test_generated_folder_sizes(real_dataset):
    for folder, count in EXPECTED_IMAGES.items():
        assert len(list((real_dataset / folder).glob("*.png"))) == count
        names, _ = read_label_csv(real_dataset / folder / "label.csv")
        assert len(names) == count


def test_every_png_is_pixel_identical_to_its_fer2013_row(real_data, real_dataset):
    # An independent reading of both CSVs: row by row, without the generator's fast path.
    fer = pd.read_csv(real_data / "fer2013.csv.gz", usecols=["pixels"])["pixels"].to_numpy()
    ferplus = pd.read_csv(real_data / "fer2013new.csv", keep_default_na=False)
    row_of_name = {}
    for row, name in enumerate(ferplus["Image name"]):
        if name:
            row_of_name[name] = row  # the later row of a repeated name
    checked = 0
    for split in SPLIT_FOLDERS:
        loaded = load_split(real_dataset, split)
        for name, image, votes in zip(loaded.image_names, loaded.images, loaded.votes):
            row = row_of_name[name]
            expected = np.array(fer[row].split(), dtype=np.uint8).reshape(48, 48)
            assert np.array_equal(image, expected), name
            assert votes.tolist() == ferplus.iloc[row, 2:].astype(int).tolist(), name
            checked += 1
    assert checked == 35_710


def test_repeated_name_fer0033120_keeps_pixels_and_votes_of_one_row(real_dataset):
    test = load_split(real_dataset, "test")
    votes = test.votes[list(test.image_names).index("fer0033120.png")]
    assert votes.tolist() == [0] * 9 + [10]  # row 34334: the warning-icon non-face, NF=10, as its pixels are


@pytest.mark.parametrize("labels,majority,seed", [(None, 3_152, 2_091), ("ferplus_repo_labels", 3_137, 2_067)])
def test_test_split_protocol_sizes(real_data, real_dataset, labels, majority, seed):
    split = load_split(real_dataset, "test", labels=None if labels is None else real_data / labels)
    assert label_targets(split.votes, "majority")[0].sum() == majority
    assert label_targets(split.votes, "no_unknown")[0].sum() == seed


def test_the_two_label_sources_differ_on_283_test_faces(real_data, real_dataset):
    ours = load_split(real_dataset, "test")
    microsoft = load_split(real_dataset, "test", labels=real_data / "ferplus_repo_labels")
    assert (ours.votes != microsoft.votes).any(axis=1).sum() == 283
