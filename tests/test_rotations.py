"""benchmarks/rotations.py on a few synthetic faces: the report names the model it measured and has every turn."""
import json

from conftest import load_benchmark


def test_the_report_names_the_default_model_and_every_turn(tiny_dataset, tmp_path):
    from ferlib.video import DEFAULT_MODEL_NAME, ROTATIONS

    out = tmp_path / "rotations.json"
    assert load_benchmark("rotations").main(["--data", str(tiny_dataset), "--faces", "3", "--media", str(tmp_path),
                                             "--json", str(out), "--no-progress"]) == 0
    report = json.loads(out.read_text())
    assert report["model"] == DEFAULT_MODEL_NAME and report["protocol"] == "majority"
    assert sorted(report["faces"]) == sorted(str(degrees) for degrees in ROTATIONS)
    for row in report["faces"].values():
        assert row["faces"] == 3
        assert 0 <= row["accuracy"] <= row["found"] <= 1 and 0 <= row["accuracy_tried"] <= row["found_tried"] <= 1
    assert report["photos"] == {}  # no sample photos in that folder


def test_a_bad_face_count_is_one_line_and_writes_nothing(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "rotations.json"
    assert load_benchmark("rotations").main(["--data", str(tiny_dataset), "--faces", "0", "--json", str(out)]) == 2
    assert capsys.readouterr().err.strip() == "error: --faces 0: expected 1 or more"
    assert not out.exists()
