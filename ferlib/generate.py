"""Build the FER+ image folders from Kaggle's fer2013.csv and Microsoft's fer2013new.csv.

This module owns the conversion: reading and validating both CSV files (plain or ``.gz``), pairing each FER+
vote row with its pixels, and writing ``FER2013Train/``, ``FER2013Valid/`` and ``FER2013Test/`` (one 48x48
grayscale PNG per named image plus a ``label.csv`` in the FER+ layout). The dataset is built in a temporary
folder beside the target and moved into place only when complete, so a failure never leaves a half-written
dataset and never damages an earlier one.

- **Ctrl-C** stops it with one line saying that nothing was changed (exit status 130): an earlier dataset is
  intact. The few renames that swap the new folders in hold Ctrl-C back until they are done (milliseconds); once
  they are, the run is complete and says so.
- **Killed runs** (kill -9, a crash, a power cut) leave their hidden build folder, ``<output>/.building-<pid>-*``.
  The next run removes every such folder whose process no longer runs, and says so in one line.
- **Your own files in a split folder are deleted**: a split folder is replaced as a whole. Before anything is
  built, a warning names each file in an existing ``FER2013Train|Valid|Test/`` that the generator does not
  write (anything but ``label.csv``, ``fer*.png`` and the images being written), so Ctrl-C can still save it.
  Keep your own files outside these folders.

``fer_generator/generate_training_data.py`` is the command-line front end.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ferlib.data import LABEL_FILE, SPLIT_FOLDERS, VOTE_COLUMNS, parse_votes

IMAGE_SIZE = 48
PIXELS_PER_IMAGE = IMAGE_SIZE * IMAGE_SIZE
FER_COLUMNS = ("emotion", "pixels", "Usage")
FERPLUS_COLUMNS = ("Usage", "Image name") + VOTE_COLUMNS
USAGE_TO_SPLIT = {"Training": "train", "PublicTest": "valid", "PrivateTest": "test"}
# fer2013.csv's own "emotion" column, 0-6, in FER+'s names (Angry, Disgust, Fear, Happy, Sad, Surprise, Neutral)
FER2013_CLASS_NAMES = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
FACE_BOX = "(0, 0, 48, 48)"  # the whole 48x48 image, as in Microsoft's label.csv files
BUILD_PREFIX = ".building-"  # + the builder's pid + "-" + a random part: a temporary dataset inside the output folder
OWN_IMAGES = "fer*.png"  # the names FER+ gives its images; with label.csv, what a split folder is expected to hold
# a build folder without a pid (made by an older version) is taken as abandoned once untouched this long;
# a whole run takes under a minute
UNNAMED_BUILD_STALE_S = 3600


class InputFormatError(ValueError):
    """An input file is missing or does not have the layout of fer2013.csv / fer2013new.csv."""


def line_of(row: int) -> int:
    """File line of 0-based data row ``row`` (line 1 is the header)."""
    return row + 2


def _read_csv(path: Path, expected_columns: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise InputFormatError(f"{path}: file not found")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except pd.errors.EmptyDataError:
        raise InputFormatError(f"{path}: file is empty; expected a header {','.join(expected_columns)}") from None
    except pd.errors.ParserError as error:
        raise InputFormatError(f"{path}: not a valid CSV file: {error}") from None
    except (UnicodeDecodeError, OSError, EOFError, zlib.error) as error:  # zlib: a .gz whose body is damaged
        raise InputFormatError(f"{path}: cannot be read as CSV text: {error}") from None
    missing = [column for column in expected_columns if column not in frame.columns]
    if missing:
        raise InputFormatError(
            f"{path}: line 1: missing column(s) {', '.join(missing)}; expected a header naming "
            f"{','.join(expected_columns)}, found {','.join(map(str, frame.columns[:12]))}"
        )
    return frame


def _diagnose_pixel_row(path: Path, row: int, text: str) -> None:
    """Raise an InputFormatError describing what is wrong with one pixels field, if anything is."""
    tokens = text.split()
    for position, token in enumerate(tokens):
        if not token.isdigit() or not token.isascii():
            raise InputFormatError(
                f"{path}: line {line_of(row)}: pixel {position + 1} is {token!r}; expected an integer from 0 to 255"
            )
        if int(token) > 255:
            raise InputFormatError(
                f"{path}: line {line_of(row)}: pixel {position + 1} is {token}; expected an integer from 0 to 255"
            )
    if len(tokens) != PIXELS_PER_IMAGE:
        raise InputFormatError(
            f"{path}: line {line_of(row)}: {len(tokens)} pixel values; expected {PIXELS_PER_IMAGE} (48x48)"
        )


def parse_pixels(path: Path, pixel_fields: list[str]) -> np.ndarray:
    """Parse FER2013 ``pixels`` fields into an (N, 48, 48) uint8 array, naming the line of any bad field.

    The fast path parses every field in one call; only when it finds a problem are the rows checked one by one
    to say exactly which line and value is wrong.
    """
    n = len(pixel_fields)
    well_spaced = all(field.count(" ") == PIXELS_PER_IMAGE - 1 for field in pixel_fields)
    values = np.empty(0, dtype=np.int32)
    if well_spaced and n:
        try:
            with warnings.catch_warnings():
                # older numpy warns and stops early at a non-number (the length check catches it); newer raises
                warnings.simplefilter("ignore", DeprecationWarning)
                values = np.fromstring(" ".join(pixel_fields), dtype=np.int32, sep=" ")
        except ValueError:
            values = np.empty(0, dtype=np.int32)
    if well_spaced and values.size == n * PIXELS_PER_IMAGE and (n == 0 or (values.min() >= 0 and values.max() <= 255)):
        return values.astype(np.uint8).reshape(n, IMAGE_SIZE, IMAGE_SIZE)
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for row, field in enumerate(pixel_fields):
        _diagnose_pixel_row(path, row, field)
        images[row] = np.array(field.split(), dtype=np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE)
    return images


def _parse_votes(path: Path, frame: pd.DataFrame) -> np.ndarray:
    # the same check as for a generated label.csv (ferlib.data.parse_votes), so that what one accepts the other does
    try:
        return parse_votes(path, [frame[column] for column in VOTE_COLUMNS], line_of(np.arange(len(frame))))
    except ValueError as error:
        raise InputFormatError(str(error)) from None


def _check_usage(path: Path, usage: pd.Series) -> None:
    unknown = ~usage.isin(list(USAGE_TO_SPLIT))
    if unknown.any():
        row = int(np.flatnonzero(unknown.to_numpy())[0])
        value = usage.iat[row]
        # a download or copy cut short ends in a partial last line, which then seems to lack or garble its Usage
        cut_short = " (the file's last line: is the file cut short?)" if row == len(usage) - 1 else ""
        found = "no Usage value" if value == "" else f"Usage is {value!r}"
        raise InputFormatError(
            f"{path}: line {line_of(row)}: {found}; expected one of {', '.join(USAGE_TO_SPLIT)}{cut_short}"
        )


@dataclass
class FerPlusRows:
    """The images that FER+ names, one per name (the later row of a repeated name), in name order."""

    names: np.ndarray  # str, e.g. "fer0000000.png"
    splits: np.ndarray  # str: "train", "valid" or "test"
    images: np.ndarray  # uint8 (N, 48, 48)
    votes: np.ndarray  # int64 (N, 10), columns VOTE_COLUMNS
    fer_labels: np.ndarray  # int (N,): fer2013.csv's original label, an index into FER2013_CLASS_NAMES (-1: invalid)


def read_ferplus_rows(fer_path: Path | str, ferplus_path: Path | str, log=print) -> FerPlusRows:
    """Read and cross-check fer2013.csv and fer2013new.csv; return the images FER+ names, with their votes."""
    fer_path, ferplus_path = Path(fer_path), Path(ferplus_path)
    ferplus = _read_csv(ferplus_path, FERPLUS_COLUMNS)
    _check_usage(ferplus_path, ferplus["Usage"])
    votes = _parse_votes(ferplus_path, ferplus)
    fer = _read_csv(fer_path, FER_COLUMNS)
    _check_usage(fer_path, fer["Usage"])
    if len(fer) != len(ferplus):
        raise InputFormatError(
            f"{fer_path} has {len(fer)} data rows but {ferplus_path} has {len(ferplus)}; "
            "the two files must line up row for row"
        )
    disagree = (fer["Usage"].to_numpy() != ferplus["Usage"].to_numpy())
    if disagree.any():
        row = int(np.flatnonzero(disagree)[0])
        raise InputFormatError(
            f"line {line_of(row)}: Usage is {fer['Usage'].iat[row]!r} in {fer_path} but "
            f"{ferplus['Usage'].iat[row]!r} in {ferplus_path}; the two files must line up row for row"
        )

    names = ferplus["Image name"].str.strip().to_numpy()
    named_rows = np.flatnonzero(names != "")
    bad_name = ~ferplus["Image name"].iloc[named_rows].str.strip().str.fullmatch(r"[A-Za-z0-9_\-]+\.png")
    if bad_name.any():
        row = int(named_rows[np.flatnonzero(bad_name.to_numpy())[0]])
        raise InputFormatError(
            f"{ferplus_path}: line {line_of(row)}: Image name is {names[row]!r}; expected a PNG file name "
            "such as fer0000000.png (letters, digits, '_' or '-', then .png) or nothing"
        )
    # A repeated name keeps its later row, pixels and votes together (the reference script overwrites the
    # earlier PNG but its published label.csv kept the earlier votes).
    last_row_of_name: dict[str, int] = {}
    for row in named_rows:
        name = names[row]
        if name in last_row_of_name:
            earlier = last_row_of_name[name]
            log(
                f"warning: {ferplus_path.name} names {name} twice, at data rows {earlier} and {row} "
                f"(lines {line_of(earlier)} and {line_of(row)}); using row {row}'s pixels and votes"
            )
        last_row_of_name[name] = row
    rows = np.array(sorted(last_row_of_name.values(), key=lambda r: names[r]), dtype=np.int64)

    images = parse_pixels(fer_path, fer["pixels"].tolist())
    splits = ferplus["Usage"].map(USAGE_TO_SPLIT).to_numpy()
    # the generator does not need FER's own labels, so a bad one is only marked, not an error
    # (only a whole number 0-6: "2.7" is marked too, not cut to a class)
    emotion = fer["emotion"].str.strip()
    valid = emotion.str.fullmatch(f"[0-{len(FER2013_CLASS_NAMES) - 1}]").to_numpy(dtype=bool)
    fer_labels = pd.to_numeric(emotion.where(valid, "-1")).to_numpy().astype(int)
    return FerPlusRows(names[rows], splits[rows], images[rows], votes[rows], fer_labels[rows])


def write_png(path: Path, image: np.ndarray) -> None:
    """Write one 8-bit grayscale PNG (OpenCV encodes about twice as fast as PIL and releases the GIL)."""
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    path.write_bytes(encoded.tobytes())


def _write_split(folder: Path, names: np.ndarray, images: np.ndarray, votes: np.ndarray, progress: tqdm) -> None:
    folder.mkdir()

    def write_chunk(indices: np.ndarray) -> int:
        for i in indices:
            write_png(folder / names[i], images[i])
        return len(indices)

    chunks = np.array_split(np.arange(len(names)), max(1, len(names) // 512))
    pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1)
    try:
        for written in pool.map(write_chunk, chunks):
            progress.update(written)
    finally:
        # on Ctrl-C or a failed write, drop the chunks not yet started rather than write them all before stopping
        pool.shutdown(wait=True, cancel_futures=True)
    labels = pd.DataFrame(votes, columns=list(VOTE_COLUMNS))
    labels.insert(0, "box", FACE_BOX)
    labels.insert(0, "name", names)
    labels.to_csv(folder / LABEL_FILE, header=False, index=False, lineterminator="\n")


def _builder_is_running(build: Path) -> bool:
    """Whether the process that made a build folder (its pid is in the name) still runs."""
    pid = build.name[len(BUILD_PREFIX):].split("-", 1)[0]
    if not (pid.isascii() and pid.isdigit()):
        try:
            return time.time() - build.stat().st_mtime < UNNAMED_BUILD_STALE_S
        except OSError:
            return True  # gone or unreadable already: leave it alone
    if os.name != "posix" or int(pid) <= 0:
        return True  # os.kill(pid, 0) only asks on POSIX (on Windows it would end the process); pid 0 is a group
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process holds that pid, or a name we cannot judge: keep it
    return True


def _folder_megabytes(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink()) / 1e6


def remove_stale_builds(base_folder: Path, log=print) -> list[str]:
    """Remove the build folders that killed runs left in ``base_folder`` (their process no longer runs);
    say so in one line and return their names."""
    stale = [build for build in sorted(base_folder.glob(BUILD_PREFIX + "*"))
             if build.is_dir() and not build.is_symlink() and not _builder_is_running(build)]
    if stale:
        megabytes = sum(_folder_megabytes(build) for build in stale)
        for build in stale:
            shutil.rmtree(build, ignore_errors=True)
        log(f"removed {len(stale)} unfinished build folder(s) that killed earlier runs left in {base_folder} "
            f"({megabytes:.1f} MB): {', '.join(build.name for build in stale)}")
    return [build.name for build in stale]


def _prepare_output(base_folder: Path, log=print) -> Path:
    """Create the base folder if needed and a private build folder inside it (named with this process's pid, so
    that a later run can tell when it was abandoned); remove abandoned ones first; explain any failure."""
    if base_folder.exists() and not base_folder.is_dir():
        raise InputFormatError(f"output folder {base_folder}: exists and is not a folder")
    try:
        base_folder.mkdir(parents=True, exist_ok=True)
        remove_stale_builds(base_folder, log)
        return Path(tempfile.mkdtemp(prefix=f"{BUILD_PREFIX}{os.getpid()}-", dir=base_folder))
    except OSError as error:
        raise InputFormatError(f"output folder {base_folder}: cannot write there ({error.strerror or error})") from None


def files_not_written_by_generator(folder: Path, names: np.ndarray) -> list[str]:
    """The entries of an existing split folder that replacing it would delete but the generator did not write:
    anything but label.csv, fer*.png files and the images about to be written (``names``)."""
    if not folder.is_dir():
        return []
    own = set(names.tolist()) | {LABEL_FILE}
    return sorted(entry.name for entry in os.scandir(folder)
                  if not (entry.is_file(follow_symlinks=False)
                          and (entry.name in own or fnmatch.fnmatchcase(entry.name, OWN_IMAGES))))


def _warn_about_foreign_files(base_folder: Path, splits: dict, log) -> None:
    for folder, (names, _, _) in splits.items():
        foreign = files_not_written_by_generator(base_folder / folder, names)
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            log(f"warning: {base_folder / folder} holds {len(foreign)} file(s) the generator did not write ({shown}); "
                "replacing the folder deletes them (Ctrl-C now and move them elsewhere to keep them)")


@contextlib.contextmanager
def _ctrl_c_held_back():
    """Hold Ctrl-C back for the few renames that swap a dataset in, so that it is never left half-swapped.
    An interrupt that comes meanwhile is dropped: the swap either completes (the run is done) or rolls back."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is None:
        yield  # only the main thread receives signals; None: a handler not set from Python, which we cannot restore
        return
    signal.signal(signal.SIGINT, lambda signum, frame: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _swap_into_place(build: Path, base_folder: Path, folders: list[str]) -> None:
    """Move the finished split folders over the old ones; if a move fails, put the old ones back."""
    retired = build / "previous"
    retired.mkdir()
    moved: list[str] = []
    try:
        for folder in folders:
            if (base_folder / folder).exists():
                os.replace(base_folder / folder, retired / folder)
            os.replace(build / folder, base_folder / folder)
            moved.append(folder)
    except OSError:
        for folder in folders:
            if folder in moved:
                os.replace(base_folder / folder, build / folder)
            if (retired / folder).exists():
                os.replace(retired / folder, base_folder / folder)
        raise


def write_dataset(base_folder: Path | str, splits: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                  progress: bool = True, desc: str = "writing PNGs", log=print) -> dict[str, int]:
    """Write split folders (folder name -> (image names, uint8 images, votes)) of PNGs + label.csv under
    ``base_folder``. They are built beside the target and replace an earlier dataset only once all are complete.
    ``log`` gets one line about abandoned build folders removed and one warning per replaced split folder that
    holds files the generator did not write (they are deleted with it)."""
    base_folder = Path(base_folder)
    build = _prepare_output(base_folder, log)
    committed = False
    try:
        _warn_about_foreign_files(base_folder, splits, log)
        counts = {}
        with tqdm(total=sum(len(names) for names, _, _ in splits.values()), desc=desc, unit="img",
                  disable=not progress) as bar:
            for folder, (names, images, votes) in splits.items():
                _write_split(build / folder, names, images, votes, bar)
                counts[folder] = len(names)
        with _ctrl_c_held_back():
            _swap_into_place(build, base_folder, list(splits))
            committed = True
    finally:
        try:
            shutil.rmtree(build, ignore_errors=True)  # the partial build, or the old dataset after a swap
        except KeyboardInterrupt:
            if not committed:
                raise
            # the new dataset is complete and in place; the rest of the old one goes with the next run's clean-up
    return counts


def generate_dataset(fer_path: Path | str, ferplus_path: Path | str, base_folder: Path | str,
                     log=print, progress: bool = True) -> dict[str, int]:
    """Write the FER+ folders under ``base_folder``; return the number of images written per folder.

    Everything is read and checked before anything is written (see ``write_dataset``).
    """
    rows = read_ferplus_rows(fer_path, ferplus_path, log=log)
    splits = {}
    for split, folder in SPLIT_FOLDERS.items():
        in_split = rows.splits == split
        if not in_split.any():  # training and evaluation refuse an empty split: say so now, not after writing
            usage = next(name for name, value in USAGE_TO_SPLIT.items() if value == split)
            raise InputFormatError(
                f"{ferplus_path}: no named image has Usage {usage}, so {folder} would be empty; FER+ has all three "
                f"splits ({', '.join(USAGE_TO_SPLIT)}): are the files cut short?"
            )
        splits[folder] = (rows.names[in_split], rows.images[in_split], rows.votes[in_split])
    return write_dataset(base_folder, splits, progress=progress, log=log)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Write the FER+ training set (FER2013Train/Valid/Test: PNGs + label.csv) "
        "from fer2013.csv and fer2013new.csv (either may be .csv.gz)."
    )
    parser.add_argument("-d", "--base_folder", required=True, help="folder to write FER2013Train/Valid/Test into")
    parser.add_argument("-fer", "--fer_path", required=True, help="Kaggle's fer2013.csv (or .csv.gz)")
    parser.add_argument("-ferplus", "--ferplus_path", required=True, help="Microsoft's fer2013new.csv (or .csv.gz)")
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    try:
        counts = generate_dataset(args.fer_path, args.ferplus_path, args.base_folder,
                                  log=lambda message: print(message, file=sys.stderr),
                                  progress=not args.no_progress)
    except InputFormatError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: writing the dataset under {args.base_folder} failed, nothing was changed there: {error}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # the data is safe (see write_dataset), so one line instead of a traceback; 130 is the shell's 128 + SIGINT
        print(f"interrupted: nothing was changed in {args.base_folder} (an earlier dataset there, if any, is intact)",
              file=sys.stderr)
        return 130
    summary = ", ".join(f"{folder} {count}" for folder, count in counts.items())
    print(f"wrote {summary} images to {args.base_folder} in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
