"""ferlib.pack: a dataset packed and unpacked is the same dataset, bit for bit; a damaged pack is refused."""
import numpy as np
import pytest

from ferlib.data import SPLIT_FOLDERS, load_split
from ferlib.pack import faces_of, main, mosaic, pack, unpack


def test_mosaic_round_trip_keeps_order_and_pads():
    faces = np.random.default_rng(0).integers(0, 256, (131, 48, 48), dtype=np.uint8)
    tiles = mosaic(faces, columns=16)
    assert tiles.shape == (9 * 48, 16 * 48)
    assert np.array_equal(faces_of(tiles, 131), faces)
    assert not tiles[8 * 48:, 3 * 48:].any()  # the padding after the last face is black


def test_pack_then_unpack_gives_the_same_folders(tiny_dataset, tmp_path):
    counts = pack(tiny_dataset, tmp_path / "pack")
    unpack(tmp_path / "pack", tmp_path / "data", progress=False)
    for split, folder in SPLIT_FOLDERS.items():
        before, after = load_split(tiny_dataset, split), load_split(tmp_path / "data", split)
        assert counts[split] == len(before.images) > 0
        assert np.array_equal(before.images, after.images)
        assert np.array_equal(before.votes, after.votes)
        assert list(before.image_names) == list(after.image_names)
        label_file = tiny_dataset / folder / "label.csv"
        assert label_file.read_bytes() == (tmp_path / "data" / folder / "label.csv").read_bytes()


def test_a_damaged_pack_is_one_clear_error(tiny_dataset, tmp_path, capsys):
    pack(tiny_dataset, tmp_path / "pack")
    np.savez(tmp_path / "pack" / "valid.npz", **{**dict(np.load(tmp_path / "pack" / "valid.npz")), "sha256": "0" * 64})
    assert main(["--unpack", str(tmp_path / "pack"), "--data", str(tmp_path / "data")]) == 2
    assert "valid.webp: the faces differ" in capsys.readouterr().err
    assert not (tmp_path / "data" / "FER2013Train").exists()  # nothing half-written
    pack(tiny_dataset, tmp_path / "pack")
    (tmp_path / "pack" / "test.webp").unlink()
    assert main(["--unpack", str(tmp_path / "pack"), "--data", str(tmp_path / "data")]) == 2
    assert "test.webp: not found" in capsys.readouterr().err


def test_a_pack_of_some_splits_unpacks_those_alone(tiny_dataset, tmp_path, capsys):
    assert main(["--data", str(tiny_dataset), "--out", str(tmp_path / "pack"), "--splits", "train,valid"]) == 0
    assert sorted(path.name for path in (tmp_path / "pack").iterdir()) == [
        "train.npz", "train.webp", "valid.npz", "valid.webp"]
    unpack(tmp_path / "pack", tmp_path / "data", progress=False)
    assert np.array_equal(load_split(tmp_path / "data", "valid").images, load_split(tiny_dataset, "valid").images)
    assert not (tmp_path / "data" / "FER2013Test").exists()
    assert main(["--data", str(tiny_dataset), "--out", str(tmp_path / "other"), "--splits", "train,tset"]) == 2
    assert "splits tset: expected some of train, valid, test" in capsys.readouterr().err
    assert main(["--unpack", str(tmp_path / "other"), "--data", str(tmp_path / "more")]) == 2
    assert "no train.npz, valid.npz or test.npz" in capsys.readouterr().err
