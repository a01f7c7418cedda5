"""ferlib.synthetic: made-up CSVs the real generator accepts, with the classes the votes say."""

from __future__ import annotations

import numpy as np

from ferlib.data import load_dataset
from ferlib.generate import generate_dataset
from ferlib.synthetic import write_synthetic_csvs


def test_synthetic_csvs_generate_a_dataset_with_every_class(tmp_path):
    fer, ferplus = write_synthetic_csvs(tmp_path / "csv", {"train": 3, "valid": 1, "test": 2})
    counts = generate_dataset(fer, ferplus, tmp_path / "data", log=lambda m: None, progress=False)
    assert counts == {"FER2013Train": 24, "FER2013Valid": 8, "FER2013Test": 16}
    test = load_dataset(tmp_path / "data", "test", "majority")
    assert np.bincount(test.labels.numpy(), minlength=8).tolist() == [2] * 8
    # the same seed gives the same files
    again = write_synthetic_csvs(tmp_path / "again", {"train": 3, "valid": 1, "test": 2})
    assert again[0].read_bytes() == fer.read_bytes() and again[1].read_bytes() == ferplus.read_bytes()
