"""Shared fixtures: small synthetic fer2013.csv / fer2013new.csv files in the real formats (written by
ferlib.synthetic, the one writer of such files), and the real data."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from ferlib.faces import Face
from ferlib.synthetic import SyntheticRow, noise_rows, write_csv_pair

# the real files' header lines, spelled out here so that a test can check what the synthetic writer puts there
FER_HEADER = "emotion,pixels,Usage"
FERPLUS_HEADER = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"
REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FERLIB_SHARED", REPO_ROOT.parent / "shared"))


def load_benchmark(name: str):
    """The script benchmarks/<name>.py as a module, so that a test can call its functions and its main()."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class SyntheticCsvs:
    """A pair of CSV files and the rows they were made from."""

    fer: Path
    ferplus: Path
    rows: list[SyntheticRow] = field(default_factory=list)

    def expected(self) -> dict[str, SyntheticRow]:
        """What the generator should write: the later row of each name wins."""
        by_name = {}
        for row in self.rows:
            if row.name:
                by_name[row.name] = row
        return by_name


def make_rows(seed: int = 0) -> list[SyntheticRow]:
    """36 rows: 20 Training, 8 PublicTest, 8 PrivateTest, one unnamed NF row and one name used twice."""
    rows = noise_rows(["Training"] * 20 + ["PublicTest"] * 8 + ["PrivateTest"] * 8, seed)
    rows[5].name = ""  # FER+ leaves some rows unnamed, with NF=10
    rows[5].votes = [0] * 9 + [10]
    rows[12].name = rows[3].name  # a repeated name: the later row (12) must win, pixels and votes together
    rows[12].votes = [0, 9, 1, 0, 0, 0, 0, 0, 0, 0]
    return rows


def write_csvs(folder: Path, rows: list[SyntheticRow], gz: bool = False) -> SyntheticCsvs:
    return SyntheticCsvs(*write_csv_pair(folder, rows, gz), rows)


@pytest.fixture
def synthetic_csvs(tmp_path) -> SyntheticCsvs:
    return write_csvs(tmp_path / "csv", make_rows())


@pytest.fixture(scope="session")
def real_data() -> Path:
    """../shared/data (or $FERLIB_SHARED/data) when present; the real-data tests skip without it."""
    data = SHARED / "data"
    if not (data / "fer2013.csv.gz").is_file() or not (data / "fer2013new.csv").is_file():
        pytest.skip(f"real FER2013 / FER+ files not found in {data} (set FERLIB_SHARED to the folder holding data/)")
    return data


@pytest.fixture(scope="session")
def real_dataset(real_data, tmp_path_factory) -> Path:
    """The real FER+ folders, generated once per test session into a temporary folder."""
    from ferlib.generate import generate_dataset

    out = tmp_path_factory.mktemp("ferplus")
    generate_dataset(real_data / "fer2013.csv.gz", real_data / "fer2013new.csv", out, log=lambda m: None, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A generated FER+ folder from 72 synthetic rows (two sets of make_rows), for training tests."""
    from ferlib.generate import generate_dataset

    folder = tmp_path_factory.mktemp("tiny")
    rows = make_rows(seed=1) + make_rows(seed=2)
    for i, row in enumerate(rows):
        row.name = f"fer{i:07d}.png" if row.name else ""
    csvs = write_csvs(folder / "csv", rows)
    generate_dataset(csvs.fer, csvs.ferplus, folder / "data", log=lambda m: None, progress=False)
    return folder / "data"


@pytest.fixture(scope="session")
def media() -> Path:
    """../shared/media (the sample videos) when present; the tests on real video skip without it."""
    folder = SHARED / "media"
    if not (folder / "single_face.mp4").is_file():
        pytest.skip(f"sample videos not found in {folder} (set FERLIB_SHARED to the folder holding media/)")
    return folder


@pytest.fixture(scope="session")
def real_aligned_dataset(real_dataset, tmp_path_factory) -> Path:
    """The real FER+ folders passed through the MediaPipe detect-align-crop path, once per test session."""
    from ferlib.aligned_data import write_aligned_dataset

    out = tmp_path_factory.mktemp("aligned")
    write_aligned_dataset(real_dataset, out, "mediapipe", progress=False)
    return out


class FixedDetector:
    """A stand-in face detector that finds the same faces (with eyes) in every frame: no real detector needed."""
    name = "fixed"

    def __init__(self, boxes):
        self.boxes, self.closed = boxes, False

    def __call__(self, frame):
        return [Face(box, 0.9, np.array([[box[0] + box[2] * 0.3, box[1] + box[3] * 0.4],
                                         [box[0] + box[2] * 0.7, box[1] + box[3] * 0.4]], np.float32))
                for box in self.boxes]

    def reset(self):
        pass

    def close(self):
        self.closed = True
