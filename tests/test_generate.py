"""The FER+ generator on small synthetic CSVs: output layout, exact pixels, votes, and every kind of bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import FER_HEADER, FERPLUS_HEADER, REPO_ROOT, make_rows, write_csvs
from ferlib import generate
from ferlib.data import SPLIT_FOLDERS, read_label_csv

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
    "fractional vote": (
        lambda c: _replace_line(c.ferplus, 11, "Training,fer0000009.png,4,1.5,0,0,0,0,0,0,0,0"),
        "ferplus", ["line 11", "column happiness is '1.5'", "whole number of votes from 0 to 1000"]),
    "negative vote": (
        lambda c: _replace_line(c.ferplus, 12, "Training,fer0000010.png,4,0,0,0,0,0,0,0,-3,0"),
        "ferplus", ["line 12", "column unknown is '-3'", "whole number of votes from 0 to 1000"]),
    "23-digit vote": (
        lambda c: _replace_line(c.ferplus, 3, "Training,fer0000001.png,12345678901234567890123,0,0,0,0,0,0,0,0,0"),
        "ferplus", ["line 3", "column neutral is '12345678901234567890123'", "from 0 to 1000"]),
    "short row": (
        lambda c: _replace_line(c.ferplus, 4, "Training,fer0000002.png,4,0,0"),
        "ferplus", ["line 4", "column sadness is ''"]),  # pandas reads a missing field as empty
    "path in an image name": (
        lambda c: _replace_line(c.ferplus, 11, "Training,../../evil.png,4,0,0,0,0,0,0,0,0,0"),
        "ferplus", ["line 11", "'../../evil.png'", "PNG file name"]),
    "last line cut short": (
        lambda c: c.fer.write_text(c.fer.read_text().rstrip("\n")[:-3000]),
        "fer", ["line 37", "no Usage value", "is the file cut short?"]),
    "a split with no faces": (
        lambda c: [path.write_text(path.read_text().replace("PrivateTest", "PublicTest")) for path in (c.fer, c.ferplus)],
        "ferplus", ["no named image has Usage PrivateTest", "FER2013Test would be empty"]),
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


def fail_after_writing(monkeypatch, images: int, error: BaseException) -> None:
    """Make the generator raise ``error`` when it comes to write image number ``images + 1``."""
    written = []
    real_write_png = generate.write_png

    def write_then_fail(path, image):
        if len(written) == images:
            raise error
        written.append(path)
        real_write_png(path, image)

    monkeypatch.setattr(generate, "write_png", write_then_fail)


def test_failure_while_writing_keeps_the_earlier_dataset_and_removes_the_partial_one(
        synthetic_csvs, tmp_path, capsys, monkeypatch):
    out = tmp_path / "data"
    assert run_cli(synthetic_csvs.fer, synthetic_csvs.ferplus, out, capsys)[0] == 0
    before = snapshot(out)
    fail_after_writing(monkeypatch, 25, OSError(28, "No space left on device"))
    with pytest.raises(OSError, match="No space left"):
        generate.generate_dataset(synthetic_csvs.fer, synthetic_csvs.ferplus, out, progress=False)
    assert snapshot(out) == before
    assert sorted(p.name for p in out.iterdir()) == sorted(SPLIT_FOLDERS.values())


def test_failure_while_writing_a_first_dataset_leaves_no_folder_behind(synthetic_csvs, tmp_path, monkeypatch):
    out = tmp_path / "data"
    fail_after_writing(monkeypatch, 25, OSError(28, "No space left on device"))
    with pytest.raises(OSError, match="No space left"):
        generate.generate_dataset(synthetic_csvs.fer, synthetic_csvs.ferplus, out, progress=False)
    assert list(out.iterdir()) == [], "the partial build is removed"


@pytest.mark.parametrize("failing_rename", [2, 4, 6])
def test_a_rename_failing_mid_swap_puts_the_earlier_dataset_back(synthetic_csvs, tmp_path, capsys, monkeypatch,
                                                                failing_rename):
    # renames: old FER2013Train out (1), new one in (2), old FER2013Valid out (3), new in (4), ... new FER2013Test in (6)
    out = tmp_path / "data"
    assert run_cli(synthetic_csvs.fer, synthetic_csvs.ferplus, out, capsys)[0] == 0
    before = snapshot(out)
    rows = make_rows()
    rows[0].votes = [10, 0, 0, 0, 0, 0, 0, 0, 0, 0]  # the new dataset differs from the old in FER2013Train
    rows[20].votes = [0, 10, 0, 0, 0, 0, 0, 0, 0, 0]  # and in FER2013Valid
    second = write_csvs(tmp_path / "second", rows)
    real_replace, renames = os.replace, []

    def replace_failing_once(source, target):
        renames.append(target)
        if len(renames) == failing_rename:
            raise OSError(5, "Input/output error")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace_failing_once)
    code, stdout, stderr = run_cli(second.fer, second.ferplus, out, capsys)
    monkeypatch.undo()
    assert code == 1 and "nothing was changed there" in stderr and "Input/output error" in stderr
    assert snapshot(out) == before, "every split folder is the earlier one again"
    assert sorted(p.name for p in out.iterdir()) == sorted(SPLIT_FOLDERS.values()), "no build folder left"


def test_output_folder_that_is_a_file_is_an_error(synthetic_csvs, tmp_path, capsys):
    out = tmp_path / "data"
    out.write_text("not a folder")
    code, _, stderr = run_cli(synthetic_csvs.fer, synthetic_csvs.ferplus, out, capsys)
    assert code == 2 and f"output folder {out}" in stderr and "not a folder" in stderr
    code, _, stderr = run_cli(synthetic_csvs.fer, synthetic_csvs.ferplus, out / "sub", capsys)
    assert code == 2 and "cannot write there" in stderr
    assert out.read_text() == "not a folder"


def test_headers_in_the_real_order_are_what_the_fixture_writes(synthetic_csvs):
    # guards the fixture itself: the synthetic files must use the real files' header lines
    assert synthetic_csvs.fer.read_text().splitlines()[0] == FER_HEADER
    assert synthetic_csvs.ferplus.read_text().splitlines()[0] == FERPLUS_HEADER
    assert FER_HEADER.split(",") == list(generate.FER_COLUMNS)
    assert FERPLUS_HEADER.split(",") == list(generate.FERPLUS_COLUMNS)


def test_rows_carry_fer2013s_own_labels_and_mark_bad_ones(tmp_path):
    rows = make_rows()
    rows[0].emotion, rows[1].emotion, rows[4].emotion = 6, 9, 2.7  # 9 is not a FER2013 class, 2.7 none at all
    csvs = write_csvs(tmp_path, rows)
    read = generate.read_ferplus_rows(csvs.fer, csvs.ferplus, log=lambda m: None)
    by_name = dict(zip(read.names, read.fer_labels))
    assert generate.FER2013_CLASS_NAMES[by_name[rows[0].name]] == "neutral"
    assert by_name[rows[1].name] == -1 and by_name[rows[4].name] == -1
    assert by_name[rows[2].name] == rows[2].emotion


def test_a_gzipped_file_with_a_damaged_body_is_one_line(tmp_path, capsys):
    zipped = write_csvs(tmp_path, make_rows(), gz=True)
    data = zipped.fer.read_bytes()
    zipped.fer.write_bytes(data[:10] + b"\xff" * 64 + data[74:])  # a gzip header, then no valid deflate block
    code, _, err = run_cli(zipped.fer, zipped.ferplus, tmp_path / "out", capsys)
    assert code != 0 and "fer2013.csv.gz: cannot be read as CSV text" in err and "invalid block type" in err
    zipped.fer.write_bytes(data[:len(data) // 2] + bytes(64) + data[len(data) // 2 + 64:])  # valid blocks, bad CRC
    code, _, err = run_cli(zipped.fer, zipped.ferplus, tmp_path / "out", capsys)
    assert code != 0 and "fer2013.csv.gz: cannot be read as CSV text" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


# --- one vote check for fer2013new.csv and label.csv ------------------------------------------------------------

@pytest.mark.parametrize("value", ["7", "3.0", "1.5", "-3", "12345678901234567890123", "1001", "x", ""])
def test_generator_and_label_csv_reader_accept_and_reject_the_same_votes(value, synthetic_csvs, tmp_path):
    _replace_line(synthetic_csvs.ferplus, 11, f"Training,fer0000009.png,4,{value},0,0,0,0,0,0,0,0")
    label = tmp_path / "label.csv"
    label.write_text(f'fer0000009.png,"(0, 0, 48, 48)",4,{value},0,0,0,0,0,0,0,0\n')
    try:
        from_generator = generate.read_ferplus_rows(synthetic_csvs.fer, synthetic_csvs.ferplus, log=lambda m: None)
    except generate.InputFormatError as error:
        with pytest.raises(ValueError) as from_label_csv:
            read_label_csv(label)
        # the same words after "<file>: line N: "
        assert str(error).split(": line 11: ")[1] == str(from_label_csv.value).split(": line 1: ")[1]
    else:
        _, votes = read_label_csv(label)
        row = list(from_generator.names).index("fer0000009.png")
        assert from_generator.votes[row, 1] == votes[0, 1] == int(float(value))


# --- Ctrl-C -----------------------------------------------------------------------------------------------------

def not_warnings(stderr: str) -> list[str]:
    """The lines of stderr but the input warnings (the synthetic files name one image twice)."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("warning: ")]


def test_ctrl_c_while_writing_prints_one_line_exits_130_and_changes_nothing(synthetic_csvs, tmp_path, capsys,
                                                                            monkeypatch):
    out = tmp_path / "data"
    assert run_cli(synthetic_csvs.fer, synthetic_csvs.ferplus, out, capsys)[0] == 0
    before = snapshot(out)
    fail_after_writing(monkeypatch, 20, KeyboardInterrupt())
    code, stdout, stderr = run_cli(synthetic_csvs.fer, synthetic_csvs.ferplus, out, capsys)
    assert code == 130 and stdout == ""
    assert not_warnings(stderr) == [f"interrupted: nothing was changed in {out} "
                                    "(an earlier dataset there, if any, is intact)"]
    assert snapshot(out) == before
    assert sorted(p.name for p in out.iterdir()) == sorted(SPLIT_FOLDERS.values()), "no build folder left"


def generator_signalling_itself(csvs, out, signal_name: str) -> str:
    """A Python program that runs the generator and sends itself ``signal_name`` at its 10th image, as Ctrl-C in a
    terminal (SIGINT) or kill -9 (SIGKILL) would."""
    return textwrap.dedent(f"""
        import os, signal, sys
        from ferlib import generate
        real, calls = generate.write_png, []
        def write_png(path, image):
            calls.append(path)
            if len(calls) == 10:
                os.kill(os.getpid(), signal.{signal_name})
            real(path, image)
        generate.write_png = write_png
        sys.exit(generate.main(["-d", {str(out)!r}, "-fer", {str(csvs.fer)!r},
                                "-ferplus", {str(csvs.ferplus)!r}, "--no-progress"]))
    """)


def test_a_real_sigint_from_the_command_line_gives_one_line_and_no_traceback(synthetic_csvs, tmp_path):
    out = tmp_path / "data"
    script = generator_signalling_itself(synthetic_csvs, out, "SIGINT")
    # as from a terminal: a shell without job control starts background jobs with SIGINT ignored, and a child
    # inherits that, so the tests run that way would otherwise see the signal ignored
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr
    assert not_warnings(result.stderr) == [
        f"interrupted: nothing was changed in {out} (an earlier dataset there, if any, is intact)"]
    assert list(out.iterdir()) == [], "the partial build is removed"


def test_ctrl_c_during_the_final_renames_waits_for_them(synthetic_csvs, tmp_path, capsys, monkeypatch):
    out = tmp_path / "data"
    assert run_cli(synthetic_csvs.fer, synthetic_csvs.ferplus, out, capsys)[0] == 0
    rows = make_rows()
    rows[0].votes = [10, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    second = write_csvs(tmp_path / "second", rows)
    real_replace, renames = os.replace, []

    def replace_then_interrupt(source, target):
        renames.append(target)
        if len(renames) == 2:  # between moving the old FER2013Train out and the new one in
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # give the signal time to arrive, while the dataset is half-swapped
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace_then_interrupt)
    code, stdout, stderr = run_cli(second.fer, second.ferplus, out, capsys)
    monkeypatch.undo()
    assert code == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(SPLIT_FOLDERS.values())
    assert (out / "FER2013Train" / "label.csv").read_text().startswith('fer0000000.png,"(0, 0, 48, 48)",10,0,')
    assert len(renames) == 6, "every split was moved in"


# --- build folders left by killed runs ---------------------------------------------------------------------------

def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_build_folders_of_runs_that_no_longer_run_are_removed_at_the_next_start(synthetic_csvs, tmp_path, capsys):
    out = tmp_path / "data"
    out.mkdir()
    stale = out / f".building-{dead_pid()}-abc123"
    (stale / "FER2013Train").mkdir(parents=True)
    (stale / "FER2013Train" / "fer0000001.png").write_bytes(b"x" * 300_000)
    old_style = out / ".building-k2x9_q1z"  # an older version's name, without a pid, untouched for two hours
    old_style.mkdir()
    two_hours_ago = time.time() - 7200
    os.utime(old_style, (two_hours_ago, two_hours_ago))
    running = out / f".building-{os.getpid()}-live"  # this process runs: another generator writing right now
    running.mkdir()
    recent = out / ".building-fresh_01"  # no pid, but touched just now: may still be written
    recent.mkdir()
    code, _, stderr = run_cli(synthetic_csvs.fer, synthetic_csvs.ferplus, out, capsys)
    assert code == 0, stderr
    removed = [line for line in stderr.splitlines() if "unfinished build folder" in line]
    assert len(removed) == 1, stderr
    assert "removed 2 unfinished build folder(s)" in removed[0] and "0.3 MB" in removed[0]
    assert stale.name in removed[0] and old_style.name in removed[0]
    assert not stale.exists() and not old_style.exists() and running.is_dir() and recent.is_dir()


def test_the_folder_a_kill_9_leaves_is_removed_by_the_next_run(synthetic_csvs, tmp_path, capsys):
    out = tmp_path / "data"
    script = generator_signalling_itself(synthetic_csvs, out, "SIGKILL")
    killed = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.DEVNULL, cwd=REPO_ROOT)
    assert killed.wait() == -signal.SIGKILL
    left = [p.name for p in out.iterdir()]
    assert len(left) == 1 and left[0].startswith(f".building-{killed.pid}-"), left
    code, _, stderr = run_cli(synthetic_csvs.fer, synthetic_csvs.ferplus, out, capsys)
    assert code == 0 and "removed 1 unfinished build folder(s)" in stderr and left[0] in stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(SPLIT_FOLDERS.values())


# --- files of the user's own in a replaced split folder ----------------------------------------------------------

def test_files_the_generator_did_not_write_are_named_before_the_folder_is_replaced(synthetic_csvs, tmp_path,
                                                                                  monkeypatch):
    out = tmp_path / "data"
    generate.generate_dataset(synthetic_csvs.fer, synthetic_csvs.ferplus, out, log=lambda m: None, progress=False)
    (out / "FER2013Train" / "my_notes.txt").write_text("mine")
    (out / "FER2013Train" / "extra").mkdir()
    (out / "FER2013Train" / "fer9999999.png").write_bytes(b"an earlier run's image")  # the generator's kind
    events = []
    real_write_png = generate.write_png
    monkeypatch.setattr(generate, "write_png", lambda path, image: (events.append("write"), real_write_png(path, image)))
    generate.generate_dataset(synthetic_csvs.fer, synthetic_csvs.ferplus, out, log=events.append, progress=False)
    warnings_ = [e for e in events if e != "write" and "did not write" in e]
    assert warnings_ == [f"warning: {out / 'FER2013Train'} holds 2 file(s) the generator did not write "
                         "(extra, my_notes.txt); replacing the folder deletes them "
                         "(Ctrl-C now and move them elsewhere to keep them)"]
    assert events.index(warnings_[0]) < events.index("write"), "warned before anything is written"
    assert not (out / "FER2013Train" / "my_notes.txt").exists(), "the documented choice: replaced with the folder"


def test_no_warning_when_a_split_folder_holds_only_the_generators_files(synthetic_csvs, tmp_path, capsys):
    out = tmp_path / "data"
    assert run_cli(synthetic_csvs.fer, synthetic_csvs.ferplus, out, capsys)[0] == 0
    code, _, stderr = run_cli(synthetic_csvs.fer, synthetic_csvs.ferplus, out, capsys)
    assert code == 0 and "did not write" not in stderr and "unfinished build" not in stderr
