"""The FER+ folders packed for moving to a training machine that cannot read ``../shared`` (a lent GPU takes 64 MiB):
each split's faces as one lossless WebP mosaic plus an .npz of its image names, votes and a SHA-256 of the pixels,
about 58 MB for the three splits instead of 36k small files. Unpacking checks the hash, so the faces trained on
there are the faces here, bit for bit.

    python -m ferlib.pack --data data --out pack                 # here
    python -m ferlib.pack --unpack pack --data data              # there: data/FER2013Train|Valid|Test again
    python -m ferlib.pack --data data --out pack --splits train,valid   # room for more: the test split scored here
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import cv2
import numpy as np

from ferlib.data import SPLIT_FOLDERS, load_split
from ferlib.files import atomic_path
from ferlib.generate import write_dataset

COLUMNS = 128  # faces per mosaic row: keeps a 28k-face split under WebP's 16,383-pixel side
LOSSLESS = [cv2.IMWRITE_WEBP_QUALITY, 101]  # OpenCV writes lossless WebP above quality 100


def mosaic(images: np.ndarray, columns: int = COLUMNS) -> np.ndarray:
    """(N, 48, 48) faces as one image, ``columns`` to a row, the last row padded with black."""
    rows = -(-len(images) // columns)
    padded = np.zeros((rows * columns, *images.shape[1:]), np.uint8)
    padded[:len(images)] = images
    size = images.shape[1]
    return padded.reshape(rows, columns, size, size).transpose(0, 2, 1, 3).reshape(rows * size, columns * size)


def faces_of(tiles: np.ndarray, count: int, size: int = 48) -> np.ndarray:
    """The first ``count`` faces of a mosaic, in order (``mosaic``'s inverse)."""
    rows, columns = tiles.shape[0] // size, tiles.shape[1] // size
    faces = tiles.reshape(rows, size, columns, size).transpose(0, 2, 1, 3).reshape(rows * columns, size, size)
    return np.ascontiguousarray(faces[:count])


def pixels_hash(images: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(images, np.uint8).tobytes()).hexdigest()


def pack(data_dir: Path | str, out_dir: Path | str, splits=tuple(SPLIT_FOLDERS)) -> dict[str, int]:
    """Write ``<split>.webp`` and ``<split>.npz`` for each of ``splits`` of ``data_dir``; returns the faces per
    split. A pack without a split (the test split, say) leaves room in the 64 MiB for other files."""
    unknown = [split for split in splits if split not in SPLIT_FOLDERS]
    if unknown or not splits:
        raise ValueError(f"splits {', '.join(unknown) or '(none)'}: expected some of {', '.join(SPLIT_FOLDERS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split in splits:
        data = load_split(data_dir, split)
        ok, encoded = cv2.imencode(".webp", mosaic(data.images), LOSSLESS)
        if not ok:
            raise ValueError(f"{split}: OpenCV could not encode the mosaic as WebP")
        with atomic_path(out_dir / f"{split}.webp") as path:
            path.write_bytes(encoded.tobytes())
        with atomic_path(out_dir / f"{split}.npz") as path:
            with open(path, "wb") as handle:
                np.savez_compressed(handle, image_names=data.image_names.astype(str), votes=data.votes,
                                    sha256=pixels_hash(data.images))
        counts[split] = len(data.images)
    return counts


def unpack(pack_dir: Path | str, data_dir: Path | str, progress: bool = True) -> dict[str, int]:
    """The split folders (FER2013Train/Valid/Test, PNGs + label.csv) a pack holds, written under ``data_dir``."""
    pack_dir, splits = Path(pack_dir), {}
    packed = [split for split in SPLIT_FOLDERS if (pack_dir / f"{split}.npz").is_file()]
    if not packed:
        raise FileNotFoundError(f"{pack_dir}: no train.npz, valid.npz or test.npz (python -m ferlib.pack writes them)")
    for split in packed:
        folder = SPLIT_FOLDERS[split]
        index_path, tiles_path = pack_dir / f"{split}.npz", pack_dir / f"{split}.webp"
        for path in (index_path, tiles_path):
            if not path.is_file():
                raise FileNotFoundError(f"{path}: not found (python -m ferlib.pack writes it)")
        with np.load(index_path) as index:
            names, votes, expected = index["image_names"], index["votes"], str(index["sha256"])
        tiles = cv2.imread(str(tiles_path), cv2.IMREAD_GRAYSCALE)
        if tiles is None:
            raise ValueError(f"{tiles_path}: not a WebP image OpenCV can read")
        images = faces_of(tiles, len(names))
        if pixels_hash(images) != expected:
            raise ValueError(f"{tiles_path}: the faces differ from the ones packed (SHA-256 mismatch)")
        splits[folder] = (names, images, votes)
    return write_dataset(data_dir, splits, progress=progress)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Pack the FER+ folders into a few files, or unpack them.")
    parser.add_argument("--data", default="data", help="the folder holding FER2013Train/Valid/Test")
    parser.add_argument("--out", default="pack", help="where to write the pack")
    parser.add_argument("--unpack", metavar="PACK", help="write the folders of this pack under --data instead")
    parser.add_argument("--splits", default=",".join(SPLIT_FOLDERS),
                        help="the splits to pack, separated by commas (default: all three)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.unpack:
            counts = unpack(args.unpack, args.data, progress=not args.no_progress)
            print(f"unpacked {args.unpack} into {args.data}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        else:
            splits = tuple(part.strip() for part in args.splits.split(",") if part.strip())
            counts = pack(args.data, args.out, splits)
            size = sum(p.stat().st_size for p in Path(args.out).iterdir()) / 1e6
            print(f"packed {args.data} into {args.out} ({size:.1f} MB): "
                  + ", ".join(f"{k} {v}" for k, v in counts.items()))
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
