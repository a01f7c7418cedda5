"""The FER+ generator on small synthetic CSVs: output layout, exact pixels, votes, and every kind of bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import FER_HEADER, FERPLUS_HEADER, REPO_ROOT, make_rows, write_csvs
from ferlib import generate
from ferlib.data import SPLIT_FOLDERS

USAGE_FOLDER = {"Training": "FER2013Train", "PublicTest": "FER2013Valid", "PrivateTest": "FER2013Test"}


def run_cli(fer: Path, ferplus: Path, out: Path, capsys) -> tuple[int, str, str]:
    code = generate.main(["-d", str(out), "-fer", str(fer), "-ferplus", str(ferplus), "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under a folder with its bytes, to check that nothing changed."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_writes_every_named_image_exactly_with_its_votes(synthetic_csvs, tmp_path, capsys):
    out = tmp_path / "data"
    code, stdout, stderr = run_cli(synthetic_csvs.fer, synthetic_csvs.ferplus, out, capsys)
    assert code == 0, stderr
    expected = synthetic_csvs.expected()
    assert sorted(p.name for p in out.iterdir()) == sorted(SPLIT_FOLDERS.values())
    written = 0
    for folder in SPLIT_FOLDERS.values():
        labels = pd.read_csv(out / folder / "label.csv", header=None, dtype=str, keep_default_na=False)
        names = labels[0].tolist()
        assert names == sorted(names), "label.csv rows are in name order"
        assert sorted(p.name for p in (out / folder).glob("*.png")) == names, "one PNG per label row"
        for _, line in labels.iterrows():
            row = expected[line[0]]
            assert USAGE_FOLDER[row.usage] == folder
            assert line[1] == "(0, 0, 48, 48)"
            assert [int(v) for v in line[2:]] == row.votes
            with Image.open(out / folder / line[0]) as image:
                assert image.mode == "L" and image.size == (48, 48)
                np.testing.assert_array_equal(np.asarray(image), row.pixels)
            written += 1
    assert written == len(expected) == 34  # 36 rows, one unnamed, one name used twice
    assert "FER2013Train 18" in stdout and "FER2013Valid 8" in stdout and "FER2013Test 8" in stdout


def test_label_csv_has_the_ferplus_layout(synthetic_csvs, tmp_path, capsys):
    out = tmp_path / "data"
    assert run_cli(synthetic_csvs.fer, synthetic_csvs.ferplus, out, capsys)[0] == 0
    first = (out / "FER2013Valid" / "label.csv").read_text().splitlines()[0]
    row = synthetic_csvs.rows[20]
    assert first == f'{row.name},"(0, 0, 48, 48)",' + ",".join(map(str, row.votes))


def test_repeated_name_takes_pixels_and_votes_from_the_later_row_and_warns(synthetic_csvs, tmp_path, capsys):
    out = tmp_path / "data"
    code, _, stderr = run_cli(synthetic_csvs.fer, synthetic_csvs.ferplus, out, capsys)
    assert code == 0
    earlier, later = synthetic_csvs.rows[3], synthetic_csvs.rows[12]
    assert "fer0000003.png twice" in stderr and "rows 3 and 12" in stderr and "lines 5 and 14" in stderr
    with Image.open(out / "FER2013Train" / earlier.name) as image:
        np.testing.assert_array_equal(np.asarray(image), later.pixels)
    labels = (out / "FER2013Train" / "label.csv").read_text()
    assert f'{earlier.name},"(0, 0, 48, 48)",0,9,1,0,0,0,0,0,0,0\n' in labels


def test_gzipped_input_gives_the_same_dataset(tmp_path, capsys):
    rows = make_rows()
    plain = write_csvs(tmp_path / "plain", rows)
    zipped = write_csvs(tmp_path / "zipped", rows, gz=True)
    assert run_cli(plain.fer, plain.ferplus, tmp_path / "a", capsys)[0] == 0
    assert run_cli(zipped.fer, zipped.ferplus, tmp_path / "b", capsys)[0] == 0
    assert snapshot(tmp_path / "a") == snapshot(tmp_path / "b")


def test_command_line_script_with_the_seed_flags(synthetic_csvs, tmp_path):
    out = tmp_path / "data"
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "fer_generator" / "generate_training_data.py"),
         "-d", str(out), "-fer", str(synthetic_csvs.fer), "-ferplus", str(synthetic_csvs.ferplus)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert len(list((out / "FER2013Test").glob("*.png"))) == 8


def test_regenerating_replaces_the_old_dataset_and_leaves_nothing_behind(tmp_path, capsys):
    rows = make_rows()
    first = write_csvs(tmp_path / "first", rows)
    out = tmp_path / "data"
    assert run_cli(first.fer, first.ferplus, out, capsys)[0] == 0
    (out / "FER2013Train" / "stale.png").write_bytes(b"old")
    rows[0].votes = [10, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    second = write_csvs(tmp_path / "second", rows)
    assert run_cli(second.fer, second.ferplus, out, capsys)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(SPLIT_FOLDERS.values())
    assert not (out / "FER2013Train" / "stale.png").exists()
    assert (out / "FER2013Train" / "label.csv").read_text().startswith('fer0000000.png,"(0, 0, 48, 48)",10,0,')


def _replace_line(path: Path, line: int, new: str) -> None:
    lines = path.read_text().splitlines()
    lines[line - 1] = new
    path.write_text("\n".join(lines) + "\n")


def _fer_row(csvs, row: int, pixels: str | None = None, usage: str | None = None) -> str:
    r = csvs.rows[row]
    return f"{r.emotion},{pixels if pixels is not None else ' '.join(map(str, r.pixels.ravel()))},{usage or r.usage}"


def _pixels(csvs, row: int) -> list[str]:
    return [str(v) for v in csvs.rows[row].pixels.ravel()]


BAD_INPUTS = {
    # name: (edit the synthetic files, which file the message names, what the message says)
    "too few pixels": (
        lambda c: _replace_line(c.fer, 9, _fer_row(c, 7, " ".join(_pixels(c, 7)[:-1]))),
        "fer", ["line 9", "2303 pixel values", "expected 2304"]),
    "too many pixels": (
        lambda c: _replace_line(c.fer, 4, _fer_row(c, 2, " ".join(_pixels(c, 2) + ["5"]))),
        "fer", ["line 4", "2305 pixel values", "expected 2304"]),
    "non-integer pixel": (
        lambda c: _replace_line(c.fer, 6, _fer_row(c, 4, " ".join(["12.5"] + _pixels(c, 4)[1:]))),
        "fer", ["line 6", "pixel 1 is '12.5'", "integer from 0 to 255"]),
    "pixel above 255": (
        lambda c: _replace_line(c.fer, 30, _fer_row(c, 28, " ".join(_pixels(c, 28)[:10] + ["256"] + _pixels(c, 28)[11:]))),
        "fer", ["line 30", "pixel 11 is 256", "integer from 0 to 255"]),
    "negative pixel": (
        lambda c: _replace_line(c.fer, 3, _fer_row(c, 1, " ".join(["-1"] + _pixels(c, 1)[1:]))),
        "fer", ["line 3", "pixel 1 is '-1'"]),
    "empty pixels": (
        lambda c: _replace_line(c.fer, 3, _fer_row(c, 1, "")),
        "fer", ["line 3", "0 pixel values"]),
    "unknown Usage in fer2013.csv": (
        lambda c: _replace_line(c.fer, 7, _fer_row(c, 5, usage="Validation")),
        "fer", ["line 7", "Usage is 'Validation'", "Training, PublicTest, PrivateTest"]),
    "unknown Usage in fer2013new.csv": (
        lambda c: _replace_line(c.ferplus, 7, "Test,fer0000005.png,10,0,0,0,0,0,0,0,0,0"),
        "ferplus", ["line 7", "Usage is 'Test'"]),
    "Usage differs between the files": (
        lambda c: _replace_line(c.fer, 25, _fer_row(c, 23, usage="PrivateTest")),
        "both", ["line 25", "'PrivateTest'", "'PublicTest'", "row for row"]),
    "row counts differ": (
        lambda c: c.ferplus.write_text("\n".join(c.ferplus.read_text().splitlines()[:-2]) + "\n"),
        "both", ["36 data rows", "34"]),
    "missing pixels column": (
        lambda c: _replace_line(c.fer, 1, "emotion,pixel,Usage"),
        "fer", ["line 1", "missing column(s) pixels"]),
    "missing header in fer2013.csv": (
        lambda c: c.fer.write_text("\n".join(c.fer.read_text().splitlines()[1:]) + "\n"),
        "fer", ["line 1", "missing column(s) emotion, pixels, Usage"]),
    "missing header in fer2013new.csv": (
        lambda c: c.ferplus.write_text("\n".join(c.ferplus.read_text().splitlines()[1:]) + "\n"),
        "ferplus", ["line 1", "missing column(s)"]),
    "missing vote column": (
        lambda c: c.ferplus.write_text(c.ferplus.read_text().replace(",contempt,", ",scorn,", 1)),
        "ferplus", ["missing column(s) contempt"]),
    "non-numeric vote": (
        lambda c: _replace_line(c.ferplus, 11, "Training,fer0000009.png,4,x,0,0,0,0,0,0,0,0"),
        "ferplus", ["line 11", "column happiness is 'x'"]),
    "path in an image name": (
        lambda c: _replace_line(c.ferplus, 11, "Training,../../evil.png,4,0,0,0,0,0,0,0,0,0"),
        "ferplus", ["line 11", "'../../evil.png'", "PNG file name"]),
    "empty file": (lambda c: c.fer.write_text(""), "fer", ["empty"]),
    "missing fer2013.csv": (lambda c: c.fer.unlink(), "fer", ["file not found"]),
    "missing fer2013new.csv": (lambda c: c.ferplus.unlink(), "ferplus", ["file not found"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_names_file_and_line_and_writes_nothing(case, synthetic_csvs, tmp_path, capsys):
    edit, which, phrases = BAD_INPUTS[case]
    edit(synthetic_csvs)
    out = tmp_path / "data"
    code, stdout, stderr = run_cli(synthetic_csvs.fer, synthetic_csvs.ferplus, out, capsys)
    assert code == 2
    assert "error: " in stderr and "Traceback" not in stderr
    names = {"fer": [synthetic_csvs.fer.name], "ferplus": [synthetic_csvs.ferplus.name],
             "both": [synthetic_csvs.fer.name, synthetic_csvs.ferplus.name]}[which]
    for expected in names + phrases:
        assert expected in stderr, f"{expected!r} not in {stderr!r}"
    assert not out.exists() or not any(out.iterdir()), "nothing may be written for bad input"


def test_bad_input_leaves_an_earlier_complete_dataset_untouched(synthetic_csvs, tmp_path, capsys):
    out = tmp_path / "data"
    assert run_cli(synthetic_csvs.fer, synthetic_csvs.ferplus, out, capsys)[0] == 0
    before = snapshot(out)
    _replace_line(synthetic_csvs.fer, 9, _fer_row(synthetic_csvs, 7, "1 2 3"))
    assert run_cli(synthetic_csvs.fer, synthetic_csvs.ferplus, out, capsys)[0] == 2
    assert snapshot(out) == before
    assert sorted(p.name for p in out.iterdir()) == sorted(SPLIT_FOLDERS.values())


def test_failure_while_writing_keeps_the_earlier_dataset_and_removes_the_partial_one(
        synthetic_csvs, tmp_path, capsys, monkeypatch):
    out = tmp_path / "data"
    assert run_cli(synthetic_csvs.fer, synthetic_csvs.ferplus, out, capsys)[0] == 0
    before = snapshot(out)
    saved = []
    real_write_png = generate.write_png

    def write_then_fail(path, image):
        if len(saved) == 25:
            raise OSError(28, "No space left on device")
        saved.append(path)
        real_write_png(path, image)

    monkeypatch.setattr(generate, "write_png", write_then_fail)
    with pytest.raises(OSError, match="No space left"):
        generate.generate_dataset(synthetic_csvs.fer, synthetic_csvs.ferplus, out, progress=False)
    assert snapshot(out) == before
    assert sorted(p.name for p in out.iterdir()) == sorted(SPLIT_FOLDERS.values())


def test_output_folder_that_is_a_file_is_an_error(synthetic_csvs, tmp_path, capsys):
    out = tmp_path / "data"
    out.write_text("not a folder")
    code, _, stderr = run_cli(synthetic_csvs.fer, synthetic_csvs.ferplus, out, capsys)
    assert code == 2 and f"output folder {out}" in stderr and "not a folder" in stderr
    code, _, stderr = run_cli(synthetic_csvs.fer, synthetic_csvs.ferplus, out / "sub", capsys)
    assert code == 2 and "cannot write there" in stderr
    assert out.read_text() == "not a folder"


def test_headers_in_the_real_order_are_what_the_fixture_writes():
    # guards the fixture itself: the synthetic files must use the real column names
    assert FER_HEADER.split(",") == list(generate.FER_COLUMNS)
    assert FERPLUS_HEADER.split(",") == list(generate.FERPLUS_COLUMNS)


def test_rows_carry_fer2013s_own_labels_and_mark_bad_ones(tmp_path):
    rows = make_rows()
    rows[0].emotion, rows[1].emotion = 6, 9  # 9 is not a FER2013 class
    csvs = write_csvs(tmp_path, rows)
    read = generate.read_ferplus_rows(csvs.fer, csvs.ferplus, log=lambda m: None)
    by_name = dict(zip(read.names, read.fer_labels))
    assert generate.FER2013_CLASS_NAMES[by_name[rows[0].name]] == "neutral"
    assert by_name[rows[1].name] == -1
    assert by_name[rows[2].name] == rows[2].emotion
