"""ferlib.aligned_data: the face-aligned copy of the dataset, and the committed face-aligned model on real data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import REPO_ROOT
from ferlib.aligned_data import ALIGNMENT_FILE, align_fer_images, main, write_aligned_dataset
from ferlib.data import SPLIT_FOLDERS, load_split, read_label_csv
from ferlib.faces import FER_BORDER, FER_UPSCALE, Face, Framing

MODEL = REPO_ROOT / "models" / "ferplus_cnn_aligned.safetensors"
REPORT = REPO_ROOT / "reports" / "ferplus_cnn_aligned_test.json"


class EveryOtherImage:
    """Finds a face, eyes tilted 10 degrees, in every other image it is shown."""
    name = "stub"

    def __init__(self):
        self.calls = 0

    def __call__(self, frame):
        self.calls += 1
        if self.calls % 2 == 0:
            return []
        # coordinates in the enlarged, bordered frame fer_detection_frame makes
        eyes = np.array([[15, 20], [33, 23]], np.float32) * FER_UPSCALE + FER_BORDER
        return [Face((FER_BORDER + 20, FER_BORDER + 20, 160, 160), 0.9, eyes, eyes)]


def test_align_fer_images_aligns_found_faces_and_keeps_the_rest():
    images = np.random.default_rng(0).integers(0, 256, (6, 48, 48), dtype=np.uint8)
    framing = Framing((24.0, 19.0), 18.0, (24.0, 27.0), 40.0)
    aligned, found = align_fer_images(images, EveryOtherImage(), framing, progress=False)
    assert found.tolist() == [True, False] * 3
    assert (aligned[~found] == images[~found]).all()
    assert not (aligned[found] == images[found]).all()
    assert aligned.shape == images.shape and aligned.dtype == np.uint8


def test_aligned_dataset_keeps_names_and_votes_and_reports_what_it_found(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "aligned"
    assert main(["--data", str(tiny_dataset), "--out", str(out), "--detector", "haar", "--no-progress"]) == 0
    assert "faces found" in capsys.readouterr().out
    summary = json.loads((out / ALIGNMENT_FILE).read_text())
    assert summary["detector"] == "haar"
    for split, folder in SPLIT_FOLDERS.items():
        original, aligned = load_split(tiny_dataset, split), load_split(out, split)
        assert (aligned.image_names == original.image_names).all()
        assert (aligned.votes == original.votes).all()
        counts = summary["splits"][folder]
        assert counts["images"] == len(original.image_names)
        assert counts["face_found"] + counts["fallback_whole_image"] == counts["images"]
        # the synthetic faces are noise: nothing is found, so every image is kept whole
        assert (aligned.images == original.images).all() == (counts["face_found"] == 0)
        names, _ = read_label_csv(out / folder / "label.csv")
        assert len(names) == len(original.image_names)


def test_aligned_dataset_errors(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "out" / "FER2013Train").exists()
    with pytest.raises(ValueError, match="unknown detector"):
        write_aligned_dataset(tmp_path, tmp_path / "out", "dlib")


# ---- real data (skipped without ../shared/data)

def test_face_aligned_model_scores_its_report_on_the_real_aligned_test_split(real_aligned_dataset):
    if not MODEL.is_file() or not REPORT.is_file():
        pytest.skip(f"{MODEL} and its report are not committed yet")
    from ferlib.evaluate import evaluate_model
    from ferlib.models import load_model

    summary = json.loads((real_aligned_dataset / ALIGNMENT_FILE).read_text())
    assert summary["splits"]["FER2013Test"]["found_fraction"] > 0.95
    report = json.loads(REPORT.read_text())
    model, _ = load_model(MODEL)
    results = evaluate_model(model, real_aligned_dataset, "test", progress=False)
    for protocol in ("majority", "no_unknown"):
        assert results[protocol]["n"] == report["protocols"][protocol]["n"]
        assert results[protocol]["accuracy"] == pytest.approx(report["protocols"][protocol]["accuracy"], abs=0.001)
