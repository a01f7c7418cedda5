import json
import stat

import pytest

from ferlib.files import atomic_path, write_json


def test_a_finished_write_replaces_the_file_and_leaves_nothing_else(tmp_path):
    target = tmp_path / "nested" / "report.json"
    write_json(target, {"accuracy": 0.5})
    write_json(target, {"accuracy": 0.75})
    assert json.loads(target.read_text()) == {"accuracy": 0.75}
    assert [p.name for p in target.parent.iterdir()] == ["report.json"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_a_failed_write_keeps_the_old_file_and_removes_the_partial_one(tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as temporary:
            assert temporary.parent == tmp_path and temporary.name.startswith(".")
            assert temporary.suffix == ".safetensors"  # OpenCV picks the format by the suffix
            temporary.write_text("half a mod")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_outputs_that_cannot_be_written_are_found_out_first_and_named(tmp_path):
    from ferlib.files import check_writable, check_writable_folder

    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError, match=f"{blocker / 'x.json'}: {blocker} is a file, not a folder"):
        check_writable(blocker / "x.json")
    with pytest.raises(OSError, match=f"{tmp_path}: is a folder; expected a file name"):
        check_writable(tmp_path)
    with pytest.raises(OSError, match=f"{blocker}: is a file; expected a folder"):
        check_writable_folder(blocker)
    check_writable(tmp_path / "new" / "x.json")
    check_writable_folder(tmp_path / "plots")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["file", "new", "plots"]  # no files left behind


def test_evaluate_checks_its_outputs_before_evaluating(tmp_path, capsys):
    from ferlib.evaluate import main

    assert main(["--weights", str(tmp_path / "missing.safetensors"), "--json", str(tmp_path)]) == 2
    assert f"{tmp_path}: is a folder" in capsys.readouterr().err
