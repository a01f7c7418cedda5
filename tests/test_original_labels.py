"""FER2013's own labels as training targets (ferlib.original_labels), on synthetic CSVs in the real formats."""
import json

import numpy as np
import pytest

from ferlib import original_labels
from ferlib.data import CLASS_NAMES, NUM_CLASSES, label_targets, load_split
from ferlib.distill import load_teacher_targets
from ferlib.generate import FER2013_CLASS_NAMES, generate_dataset
from ferlib.synthetic import SyntheticRow, noise_rows, write_csv_pair


def test_each_fer2013_class_maps_to_the_ferplus_class_of_the_same_name():
    for fer_index, name in enumerate(FER2013_CLASS_NAMES):
        assert CLASS_NAMES[original_labels.FER2013_TO_FERPLUS[fer_index]] == name
    assert CLASS_NAMES.index("contempt") not in original_labels.FER2013_TO_FERPLUS


def test_targets_are_one_hot_or_the_faces_own_training_target_where_the_label_is_missing():
    votes = np.zeros((5, 10), int)
    votes[1, [0, 3, 8]] = [6, 2, 2]  # 6 neutral, 2 sadness, 2 unknown
    votes[2, [1, 8]] = [1, 9]  # one happiness vote: a face the crossentropy mode drops
    votes[4, [2, 6, 4]] = [7, 2, 1]  # surprise, fear, and a single anger vote, which crossentropy drops
    fer_labels = np.array([FER2013_CLASS_NAMES.index("sadness"), -1, -1, FER2013_CLASS_NAMES.index("neutral"), -1])
    targets = original_labels.original_label_targets(fer_labels, votes)
    assert targets.shape == (5, NUM_CLASSES) and np.allclose(targets.sum(axis=1), 1)
    assert targets[0].argmax() == CLASS_NAMES.index("sadness") and targets[0].max() == 1
    assert targets[3].argmax() == CLASS_NAMES.index("neutral")
    kept, own = label_targets(votes[[1, 4]], "crossentropy")
    assert kept.all() and np.allclose(targets[[1, 4]], own)  # mixing leaves these faces as training has them
    assert np.allclose(targets[1, [0, 3]], [0.75, 0.25]) and targets[4, CLASS_NAMES.index("anger")] == 0
    assert np.allclose(targets[2], 1 / NUM_CLASSES)


def test_neutral_shares_count_only_faces_with_a_clear_emotion_majority():
    votes = np.zeros((5, 10), int)
    votes[0, 0] = votes[1, 0] = 10  # neutral majorities
    votes[2, 4] = 10  # anger majority
    votes[3, [0, 4]] = 5  # no clear majority
    votes[4, 8] = 10  # unknown majority
    anger = FER2013_CLASS_NAMES.index("anger")
    table = original_labels.neutral_shares(np.full(5, anger), votes).set_index("FER2013 label")
    assert table.loc["anger", "faces"] == 3
    assert table.loc["anger", "FER+ majority neutral"] == pytest.approx(2 / 3)
    assert table.loc["fear", "faces"] == 0 and np.isnan(table.loc["fear", "FER+ majority neutral"])


def test_the_command_writes_targets_that_training_reads_for_the_generated_faces(tmp_path, capsys):
    rows = noise_rows(["Training"] * 12 + ["PublicTest"] * 3 + ["PrivateTest"] * 3, seed=3)
    rows[2].name = ""  # FER+ leaves some rows unnamed: they are in no split
    for row in rows:
        row.votes = [8, 0, 0, 0, 2, 0, 0, 0, 0, 0]
    fer, ferplus = write_csv_pair(tmp_path, rows, gz=True)
    generate_dataset(fer, ferplus, tmp_path / "data", log=lambda m: None, progress=False)
    out = tmp_path / "targets" / "original.npz"
    assert original_labels.main(["--fer", str(fer), "--ferplus", str(ferplus), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "11 faces of the train split" in printed and "FER+ majority neutral" in printed
    train = load_split(tmp_path / "data", "train")
    targets = load_teacher_targets(out, train.image_names.tolist()).numpy()
    expected = {row.name: CLASS_NAMES.index(FER2013_CLASS_NAMES[row.emotion]) for row in rows if row.name}
    assert targets.argmax(axis=1).tolist() == [expected[name] for name in train.image_names]
    with np.load(out, allow_pickle=False) as archive:
        assert json.loads(str(archive["source"]))["split"] == "train"


def test_a_missing_input_file_is_one_line_and_no_output(tmp_path, capsys):
    row = SyntheticRow("Training", "fer0000000.png", np.zeros((48, 48), np.uint8), [10, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    _, ferplus = write_csv_pair(tmp_path, [row])
    out = tmp_path / "out.npz"
    code = original_labels.main(["--fer", str(tmp_path / "nope.csv"), "--ferplus", str(ferplus), "--out", str(out)])
    error = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in error and "nope.csv" in error
    assert not out.exists()


@pytest.mark.parametrize("target", ["fer", "ferplus"])
def test_out_may_not_be_an_input(tmp_path, capsys, target):
    row = SyntheticRow("Training", "fer0000000.png", np.zeros((48, 48), np.uint8), [10, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    fer, ferplus = write_csv_pair(tmp_path, [row])
    before = {path: path.read_bytes() for path in (fer, ferplus)}
    out = {"fer": fer, "ferplus": ferplus}[target]
    code = original_labels.main(["--fer", str(fer), "--ferplus", str(ferplus), "--out", str(tmp_path / "." / out.name)])
    error = capsys.readouterr().err.strip()
    assert code == 2 and f"the same file as --{target}" in error and "\n" not in error
    assert {path: path.read_bytes() for path in (fer, ferplus)} == before
