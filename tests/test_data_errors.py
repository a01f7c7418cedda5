"""Damaged generated splits: each problem in label.csv or a PNG is one clear error naming the file and the line."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from ferlib.data import (MAX_VOTES, FerPlusDataset, load_dataset, load_split, parse_votes, read_label_csv,
                         read_label_rows)

VOTES_EXPECTED = f"expected a whole number of votes from 0 to {MAX_VOTES}"
IMAGE_EXPECTED = "expected a 48x48 8-bit grayscale PNG"


@pytest.fixture
def split(tiny_dataset, tmp_path) -> Path:
    """A private copy of the tiny dataset's FER2013Valid (16 faces), free to damage; returns its folder."""
    folder = tmp_path / "data" / "FER2013Valid"
    shutil.copytree(tiny_dataset / "FER2013Valid", folder)
    return folder


def label_lines(split: Path) -> list[str]:
    return (split / "label.csv").read_text().splitlines()


def write_label_lines(split: Path, lines: list[str]) -> None:
    (split / "label.csv").write_text("\n".join(lines) + "\n")


def set_vote(split: Path, line: int, column: int, value: str) -> str:
    """Put ``value`` in vote column ``column`` (0 = neutral) of label.csv line ``line``; return that image's name."""
    lines = label_lines(split)
    name, box_votes = lines[line - 1].split(",", 1)
    box, votes = box_votes.rsplit('"', 1)[0] + '"', box_votes.rsplit('"', 1)[1].lstrip(",").split(",")
    votes[column] = value
    lines[line - 1] = ",".join([name, box] + votes)
    write_label_lines(split, lines)
    return name


def image_path(split: Path, line: int) -> Path:
    return split / label_lines(split)[line - 1].split(",", 1)[0]


# --- 1. vote values --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["1.5", "-3", "12345678901234567890123", str(MAX_VOTES + 1), "x", "", "1e3", "0x1"])
def test_vote_that_is_not_a_whole_number_from_0_to_the_maximum_is_an_error(split, value):
    set_vote(split, 4, 1, value)
    for read in (lambda: read_label_csv(split / "label.csv"), lambda: load_split(split.parent, "valid")):
        with pytest.raises(ValueError) as error:
            read()
        message = str(error.value)
        assert f"{split / 'label.csv'}: line 4: column happiness is {value!r}" in message
        assert VOTES_EXPECTED in message


@pytest.mark.parametrize("value,expected", [("0", 0), (str(MAX_VOTES), MAX_VOTES), ("3.0", 3), (" 7", 7)])
def test_whole_numbers_in_range_are_read(split, value, expected):
    set_vote(split, 2, 0, value)
    _, votes = read_label_csv(split / "label.csv")
    assert votes[1, 0] == expected


def test_a_repeated_image_name_is_an_error_naming_both_lines(split):
    lines = label_lines(split)
    write_label_lines(split, lines + [lines[2]])  # the third face counted twice
    name = lines[2].split(",")[0]
    with pytest.raises(ValueError, match=f"lines 3 and {len(lines) + 1} both name {name}; expected one row per image"):
        load_split(split.parent, "valid")


def test_a_repeated_name_in_another_label_source_is_an_error(split, tmp_path):
    other = tmp_path / "other" / "FER2013Valid"
    other.mkdir(parents=True)
    lines = label_lines(split)
    (other / "label.csv").write_text("\n".join(lines + [lines[0]]) + "\n")
    with pytest.raises(ValueError, match=f"lines 1 and {len(lines) + 1} both name"):
        load_split(split.parent, "valid", labels=tmp_path / "other")


def test_parse_votes_names_the_first_bad_line_and_a_missing_field():
    import pandas as pd

    columns = [pd.Series(["1", "2", "3"], dtype=object) for _ in range(10)]
    columns[9] = pd.Series(["0", np.nan, "-1"], dtype=object)  # a short row leaves the last field missing
    columns[0] = pd.Series(["0", "0", "x"], dtype=object)
    with pytest.raises(ValueError, match="f.csv: line 21: column NF is missing; expected a whole number"):
        parse_votes("f.csv", columns, np.array([20, 21, 22]))


# --- 2. images --------------------------------------------------------------------------------------------------

def check_image_error(split: Path, path: Path, *phrases: str, error=ValueError) -> None:
    with pytest.raises(error) as raised:
        load_split(split.parent, "valid")
    message = str(raised.value)
    for phrase in (str(path), *phrases):
        assert phrase in message, f"{phrase!r} not in {message!r}"


def test_truncated_png_is_an_error_naming_it(split):
    path = image_path(split, 5)
    path.write_bytes(path.read_bytes()[:100])
    check_image_error(split, path, "cannot be read as an image", "truncated", IMAGE_EXPECTED, "label.csv line 5")


def test_text_file_named_png_is_an_error_naming_it(split):
    path = image_path(split, 2)
    path.write_text("not an image\n")
    check_image_error(split, path, "cannot be read as an image", IMAGE_EXPECTED)


def test_label_row_naming_a_folder_is_an_error(split):
    path = image_path(split, 3)
    path.unlink()
    path.mkdir()
    check_image_error(split, path, "is a folder", "label.csv line 3", IMAGE_EXPECTED)


def test_missing_image_is_a_file_not_found_error_naming_it_and_the_line(split):
    path = image_path(split, 7)
    path.unlink()
    check_image_error(split, path, "image file not found", "label.csv line 7", error=FileNotFoundError)


def test_16_bit_png_is_rejected_not_turned_white(split):
    path = image_path(split, 6)
    eight_bit = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(path), eight_bit.astype(np.uint16) * 257)
    check_image_error(split, path, "a 48x48 16-bit grayscale PNG image", IMAGE_EXPECTED, "rejected, not converted")


@pytest.mark.parametrize("kind,write,phrase", [
    ("colour", lambda p, im: cv2.imwrite(str(p), np.dstack([im] * 3)), "a 48x48 colour (RGB) PNG image"),
    ("wrong size", lambda p, im: cv2.imwrite(str(p), im[:, :47]), "a 47x48 8-bit grayscale PNG image"),
    ("JPEG", lambda p, im: p.write_bytes(cv2.imencode(".jpg", im)[1].tobytes()), "a 48x48 8-bit grayscale JPEG image"),
])
def test_other_images_than_48x48_8_bit_grayscale_png_are_rejected(split, kind, write, phrase):
    path = image_path(split, 1)
    write(path, cv2.imread(str(path), cv2.IMREAD_UNCHANGED))
    check_image_error(split, path, phrase, IMAGE_EXPECTED)


# --- 3. messages ------------------------------------------------------------------------------------------------

def test_empty_label_file_says_what_it_should_hold(split):
    (split / "label.csv").write_bytes(b"")
    expected = f"{split / 'label.csv'}: empty label file; expected one row per image: name, face box, 10 votes"
    for read in (lambda: read_label_csv(split / "label.csv"), lambda: load_split(split.parent, "valid")):
        with pytest.raises(ValueError) as error:
            read()
        assert str(error.value) == expected


@pytest.mark.parametrize("line", [1, 5])
def test_a_row_with_too_few_or_too_many_columns_names_its_line(split, line):
    lines = label_lines(split)
    lines[line - 1] = lines[line - 1].split('"')[0] + '"(0, 0, 48, 48)",3'  # the name, the box, one vote
    write_label_lines(split, lines)
    with pytest.raises(ValueError, match=f"label.csv: line {line}: 3 columns; expected 12 \\(image name, face box"):
        load_split(split.parent, "valid")
    lines[line - 1] = lines[line - 1] + ",1,2,3,4,5,6,7,8,9,10"
    write_label_lines(split, lines)
    with pytest.raises(ValueError, match=f"line {line}: 13 columns; expected 12"):
        read_label_csv(split / "label.csv")


@pytest.mark.parametrize("name", ["", "../FER2013Train/fer0000001.png", "/etc/passwd", ".."])
def test_a_path_instead_of_an_image_name_is_an_error(split, name):
    lines = label_lines(split)
    lines[1] = name + "," + lines[1].split(",", 1)[1]
    write_label_lines(split, lines)
    with pytest.raises(ValueError, match=f"line 2: image name is {name!r}; expected a file name in the split folder"):
        read_label_rows(split / "label.csv")


def test_label_file_that_is_not_text_is_an_error(split):
    (split / "label.csv").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ValueError, match="label.csv: not a text file"):
        load_split(split.parent, "valid")


def test_a_row_the_csv_reader_cannot_read_names_its_line(split):
    lines = label_lines(split)
    write_label_lines(split, lines[:3] + ['"' + "x" * 200_000 + '",1'] + lines[3:])  # past the csv field limit
    with pytest.raises(ValueError, match="label.csv: line 4: field larger than field limit"):
        load_split(split.parent, "valid")


def test_blank_lines_are_skipped_and_lines_still_counted(split):
    lines = label_lines(split)
    write_label_lines(split, lines[:2] + [""] + lines[2:])
    names, _, numbers = read_label_rows(split / "label.csv")
    assert len(names) == len(lines) and numbers[:4].tolist() == [1, 2, 4, 5]


def test_a_split_where_the_label_mode_keeps_no_face_names_the_folder_and_the_mode(split):
    lines = label_lines(split)
    write_label_lines(split, [line.rsplit('"', 1)[0] + '",0,0,0,0,0,0,0,0,0,10' for line in lines])  # all NF
    with pytest.raises(ValueError) as error:
        load_dataset(split.parent, "valid", label_mode="majority")
    message = str(error.value)
    assert str(split) in message and "label mode 'majority' keeps none of its 16 faces" in message
    loaded = load_split(split.parent, "valid")
    with pytest.raises(ValueError, match="label mode 'no_unknown' keeps none"):
        FerPlusDataset(loaded, "no_unknown")


def test_no_face_kept_names_the_other_label_source_too(split, tmp_path):
    other = tmp_path / "other" / "FER2013Valid"
    other.mkdir(parents=True)
    votes = ",0,0,0,0,0,0,0,0,10,0"  # every face unknown
    (other / "label.csv").write_text("".join(line.rsplit('"', 1)[0] + '"' + votes + "\n" for line in label_lines(split)))
    with pytest.raises(ValueError, match=f"votes from {other / 'label.csv'}\\): label mode 'crossentropy' keeps none"):
        load_dataset(split.parent, "valid", label_mode="crossentropy", labels=tmp_path / "other")


def test_the_undamaged_copy_loads(split):
    # guards the fixture: every error above comes from the damage, not from the copy
    loaded = load_split(split.parent, "valid")
    assert len(loaded) == 16 and loaded.folder == split and loaded.label_file == split / "label.csv"


def test_the_data_api_names_a_wrong_argument_type(tmp_path):
    from ferlib.data import FerPlusDataset, load_split

    with pytest.raises(ValueError, match="data_dir 3: expected the folder holding FER2013Train"):
        load_split(3, "test")
    with pytest.raises(ValueError, match="split 'data': expected a FerPlusSplit, as load_split"):
        FerPlusDataset("data", "majority")  # load_dataset takes the folder; FerPlusDataset a loaded split
