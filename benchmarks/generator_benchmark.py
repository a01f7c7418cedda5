"""Time ferlib's FER+ generator against a row-by-row reference on the same input, side by side.

    python benchmarks/generator_benchmark.py                        # the real files in ../shared/data
    python benchmarks/generator_benchmark.py --fer F --ferplus P    # any pair of files
    python benchmarks/generator_benchmark.py --synthetic 3000       # made-up rows, when no real data is at hand

The reference reads the CSVs with the csv module and converts each row with numpy and PIL, one at a time, as
Microsoft's FERPlus export script does. Each implementation runs in its own process (for a clean peak-memory
figure), both outputs are checked to hold the same pixels and labels, and a table with the ratio is printed.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
FOLDERS = {"Training": "FER2013Train", "PublicTest": "FER2013Valid", "PrivateTest": "FER2013Test"}


def open_text(path: Path) -> io.TextIOBase:
    return gzip.open(path, "rt", newline="") if path.suffix == ".gz" else open(path, newline="")


def reference_generate(fer_path: Path, ferplus_path: Path, out: Path) -> int:
    """Row by row: csv reader, numpy and PIL per row; the later row of a repeated name wins."""
    labels = {folder: {} for folder in FOLDERS.values()}
    with open_text(fer_path) as fer_file, open_text(ferplus_path) as ferplus_file:
        fer_rows, ferplus_rows = csv.reader(fer_file), csv.reader(ferplus_file)
        next(fer_rows), next(ferplus_rows)
        for fer_row, ferplus_row in zip(fer_rows, ferplus_rows):
            name = ferplus_row[1].strip()
            if not name:
                continue
            folder = FOLDERS[ferplus_row[0]]
            (out / folder).mkdir(parents=True, exist_ok=True)
            pixels = np.asarray([int(v) for v in fer_row[1].split()], dtype=np.uint8).reshape(48, 48)
            Image.fromarray(pixels).save(out / folder / name)
            labels[folder][name] = ferplus_row[2:]
    for folder, rows in labels.items():
        with open(out / folder / "label.csv", "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            for name in sorted(rows):
                writer.writerow([name, "(0, 0, 48, 48)", *rows[name]])
    return sum(len(rows) for rows in labels.values())


def run_one(kind: str, fer: Path, ferplus: Path, out: Path) -> None:
    """Child process: generate once, print seconds, images and peak memory as JSON."""
    started = time.perf_counter()
    if kind == "ferlib":
        from ferlib.generate import generate_dataset

        images = sum(generate_dataset(fer, ferplus, out, log=lambda m: None, progress=False).values())
    else:
        images = reference_generate(fer, ferplus, out)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "images": images, "peak_mb": peak_mb}))


def same_output(a: Path, b: Path) -> bool:
    for folder in FOLDERS.values():
        if (a / folder / "label.csv").read_text() != (b / folder / "label.csv").read_text():
            return False
        for png in (a / folder).glob("*.png"):
            if not np.array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(b / folder / png.name))):
                return False
    return True


def write_synthetic(folder: Path, rows: int) -> tuple[Path, Path]:
    """``rows`` rows of random faces and votes (ferlib.synthetic's noise rows), 80% Training, 10% each test set."""
    from ferlib.synthetic import noise_rows, write_csv_pair

    usages = np.random.default_rng(0).choice(list(FOLDERS), size=rows, p=[0.8, 0.1, 0.1]).tolist()
    return write_csv_pair(folder, noise_rows(usages))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fer", type=Path, default=SHARED_DATA / "fer2013.csv.gz")
    parser.add_argument("--ferplus", type=Path, default=SHARED_DATA / "fer2013new.csv")
    parser.add_argument("--synthetic", type=int, metavar="ROWS", help="benchmark on this many made-up rows instead")
    parser.add_argument("--run", choices=["ferlib", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        run_one(args.run, args.fer, args.ferplus, args.out)
        return 0

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        if args.synthetic:
            args.fer, args.ferplus = write_synthetic(scratch, args.synthetic)
            source = f"{args.synthetic} synthetic rows"
        else:
            for path in (args.fer, args.ferplus):
                if not path.is_file():
                    parser.error(f"{path} not found; pass --fer/--ferplus or --synthetic ROWS")
            source = f"{args.fer.name} + {args.ferplus.name}"
        results = {}
        for kind in ("ferlib", "reference"):
            out = scratch / kind
            child = subprocess.run(
                [sys.executable, __file__, "--run", kind, "--fer", str(args.fer), "--ferplus", str(args.ferplus),
                 "--out", str(out)], capture_output=True, text=True, check=True)
            results[kind] = json.loads(child.stdout.strip().splitlines()[-1])
        identical = same_output(scratch / "ferlib", scratch / "reference")

    print(f"FER+ generation, {source}, {results['ferlib']['images']} images written")
    print("| implementation | time (s) | images/s | peak memory (MB) |")
    print("| --- | ---: | ---: | ---: |")
    for kind, label in (("ferlib", "ferlib.generate"), ("reference", "row-by-row reference (csv + numpy + PIL)")):
        r = results[kind]
        print(f"| {label} | {r['seconds']:.1f} | {r['images'] / r['seconds']:,.0f} | {r['peak_mb']:,.0f} |")
    print(f"speed-up: {results['reference']['seconds'] / results['ferlib']['seconds']:.2f}x; "
          f"outputs identical (pixels and label.csv): {identical}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
