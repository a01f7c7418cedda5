"""ferlib.synthetic: made-up CSVs the real generator accepts, with the classes the votes say."""

from __future__ import annotations

import numpy as np

from ferlib.data import load_dataset
from ferlib.generate import generate_dataset, read_ferplus_rows
from ferlib.synthetic import noise_rows, write_csv_pair, write_synthetic_csvs


def test_synthetic_csvs_generate_a_dataset_with_every_class(tmp_path):
    fer, ferplus = write_synthetic_csvs(tmp_path / "csv", {"train": 3, "valid": 1, "test": 2})
    counts = generate_dataset(fer, ferplus, tmp_path / "data", log=lambda m: None, progress=False)
    assert counts == {"FER2013Train": 24, "FER2013Valid": 8, "FER2013Test": 16}
    test = load_dataset(tmp_path / "data", "test", "majority")
    assert np.bincount(test.labels.numpy(), minlength=8).tolist() == [2] * 8
    # the same seed gives the same files
    again = write_synthetic_csvs(tmp_path / "again", {"train": 3, "valid": 1, "test": 2})
    assert again[0].read_bytes() == fer.read_bytes() and again[1].read_bytes() == ferplus.read_bytes()


def test_noise_rows_round_trip_through_the_generators_reader(tmp_path):
    rows = noise_rows(["Training", "PublicTest", "PrivateTest", "Training"], seed=3)
    fer, ferplus = write_csv_pair(tmp_path, rows, gz=True)
    assert fer.name == "fer2013.csv.gz" and not list(tmp_path.glob(".*")), "no temporary file left"
    read = read_ferplus_rows(fer, ferplus, log=lambda m: None)
    assert read.names.tolist() == [row.name for row in rows]
    assert read.splits.tolist() == ["train", "valid", "test", "train"]
    assert read.votes.tolist() == [row.votes for row in rows]
    assert read.fer_labels.tolist() == [row.emotion for row in rows]
    np.testing.assert_array_equal(read.images, np.stack([row.pixels for row in rows]))
    assert all(row.pixels[0, :4].tolist() == [0, 255, 7, 100] for row in rows)
