"""The installed package: ``pip install .`` (not editable) into a fresh virtual environment, then the one-call API
from another folder, with the shipped models found inside the package. Slow (it builds and installs the package),
so marked ``slow``; it runs with the rest of the suite (``-m "not slow"`` leaves it out).

The fresh environment sees the test's own environment's packages through a ``.pth`` file, so pip resolves the
dependencies against the pinned versions already installed there instead of copying torch (5.5 GB, a CUDA build on
x86_64) once more: a second copy filled CI's disk."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from conftest import REPO_ROOT, SHARED

SCRIPT = """
import sys
from pathlib import Path

# MediaPipe is optional and installed where the dependencies come from: the package must work without it
sys.modules["mediapipe"] = None

import ferlib
from ferlib import EmotionRecognizer

assert ferlib.__file__.startswith(sys.prefix), (ferlib.__file__, sys.prefix)
recognizer = EmotionRecognizer()
print(recognizer.engine.name, recognizer.engine.path if hasattr(recognizer.engine, "path") else "")
photo = Path(sys.argv[1])
if photo.is_file():
    faces = recognizer.detect_emotions(photo)
    print("faces", len(faces), [face.label for face in faces])
else:
    import numpy as np
    print("probabilities", recognizer.classify_faces(np.full((48, 48), 128, np.uint8)).shape)
"""


@pytest.mark.slow
def test_pip_install_gives_a_working_recognizer_with_the_shipped_models(tmp_path):
    environment = tmp_path / "venv"
    venv.create(environment, with_pip=True)
    python = environment / "bin" / "python"
    site_packages = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                   capture_output=True, text=True, check=True).stdout.strip()
    (Path(site_packages) / "_test_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    install = subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(REPO_ROOT),
                              "-c", str(REPO_ROOT / "requirements.txt")], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    photo = SHARED / "media" / "multi_face.jpg"
    run = subprocess.run([str(python), "-c", SCRIPT, str(photo)], capture_output=True, text=True, cwd=elsewhere)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert lines[0].startswith("onnx int8") and "site-packages/ferlib/weights/ferplus_cnn_robust.int8.onnx" in lines[0]
    app = subprocess.run([str(environment / "bin" / "ferlib-video"), "--help"], capture_output=True, text=True,
                         cwd=elsewhere)
    assert app.returncode == 0 and "--source" in app.stdout, app.stderr[-3000:]
    if photo.is_file():  # without MediaPipe (not a dependency of the package) the default detector is YuNet alone
        assert lines[1].startswith("faces 5 ")
    else:
        assert lines[1] == "probabilities (1, 8)"
