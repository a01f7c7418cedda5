"""ferlib.export and ferlib.engine: ONNX twins of a model, their agreement with PyTorch, and choosing an engine."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
import torch

from ferlib.engine import OnnxEngine, TorchEngine, load_engine, onnx_twin, stale_twin, weights_sha256
from ferlib.evaluate import evaluate_model
from ferlib.evaluate import main as evaluate_main
from ferlib.export import export_model_onnx
from ferlib.export import main as export_main
from ferlib.models import build_model, save_model


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("seed_cnn", width=0.25, in_channels=1)
    # a trained network's BatchNorm statistics are not 0 / 1: give these some, so folding them is tested
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(model, path, "seed_cnn", {"width": 0.25, "in_channels": 1}, extra={"class_names": ["x"] * 8})
    return path


@pytest.fixture(scope="module")
def exported(tiny_weights, tiny_dataset):
    return export_model_onnx(tiny_weights, tiny_dataset, faces=30)


def random_faces(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 48, 48), dtype=np.uint8)


def test_export_writes_both_twins_beside_the_model_with_its_metadata(tiny_weights, exported):
    assert exported == [onnx_twin(tiny_weights, "fp32"), onnx_twin(tiny_weights, "int8")]
    assert [p.name for p in exported] == ["tiny.onnx", "tiny.int8.onnx"]
    fp32, int8 = (OnnxEngine(p) for p in exported)
    assert fp32.info["model"] == "seed_cnn" and fp32.info["class_names"] == ["x"] * 8
    assert "30 faces" in int8.info["calibration"]
    assert exported[1].stat().st_size < exported[0].stat().st_size / 2
    assert not [p.name for p in tiny_weights.parent.iterdir() if p.name.startswith(".")]


def test_int8_weights_use_7_bits_so_every_cpu_computes_the_same(exported):
    # a CPU without VNNI sums pairs of uint8 x int8 products in 16 bits: weights of 8 bits could overflow there
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(exported[1])).graph
    weights = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    conv_inputs = {node.input[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    int8_weights = [array for name, array in weights.items() if array.dtype == np.int8 and name in conv_inputs
                    and array.ndim >= 2]
    assert len(int8_weights) >= 10  # every convolution and dense layer
    assert all(-64 <= array.min() and array.max() <= 64 for array in int8_weights)
    assert max(np.abs(array).max() for array in int8_weights) >= 60  # the 7 bits are used, not fewer


def test_onnx_fp32_matches_torch(tiny_weights, exported):
    faces = random_faces(64)
    torch_probabilities = TorchEngine(tiny_weights).predict(faces)
    onnx_probabilities = OnnxEngine(exported[0]).predict(faces)
    assert onnx_probabilities.shape == (64, 8) and onnx_probabilities.dtype == np.float32
    assert np.abs(onnx_probabilities - torch_probabilities).max() <= 1e-4


def test_int8_twin_gives_probabilities(exported):
    probabilities = OnnxEngine(exported[1], threads=1).predict(random_faces(5))
    assert probabilities.shape == (5, 8) and np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert OnnxEngine(exported[1]).predict(np.zeros((0, 48, 48), np.uint8)).shape == (0, 8)


def test_three_channel_models_export_too(tmp_path, tiny_dataset):
    model = build_model("seed_cnn", width=0.25, in_channels=3)
    save_model(model, tmp_path / "rgb.safetensors", "seed_cnn", {"width": 0.25, "in_channels": 3})
    fp32, int8 = export_model_onnx(tmp_path / "rgb.safetensors", tiny_dataset, faces=10)
    faces = random_faces(3)
    assert np.abs(OnnxEngine(fp32).predict(faces) - TorchEngine(model).predict(faces)).max() <= 1e-4
    assert OnnxEngine(int8).channels == 3


def test_load_engine_prefers_the_int8_twin_and_honours_the_choice(tiny_weights, exported, tmp_path):
    assert load_engine(tiny_weights).name == "onnx int8"
    assert load_engine(tiny_weights, precision="fp32").name == "onnx fp32"
    assert load_engine(tiny_weights, "torch").name == "torch fp32"
    assert load_engine(exported[0], "auto").name == "onnx fp32"
    lonely = tmp_path / "lonely.safetensors"
    shutil.copy(tiny_weights, lonely)
    assert load_engine(lonely).name == "torch fp32"  # no twin: PyTorch
    with pytest.raises(FileNotFoundError, match="python -m ferlib.export"):
        load_engine(lonely, "onnx")
    with pytest.raises(ValueError, match="ONNX Runtime, not PyTorch"):
        load_engine(exported[0], "torch")
    with pytest.raises(ValueError, match="engine 'tensorrt'"):
        load_engine(tiny_weights, "tensorrt")
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(ValueError, match="junk.onnx: not an ONNX model"):
        load_engine(tmp_path / "junk.onnx")


def test_a_twin_left_from_other_weights_is_refused_not_run(tiny_weights, exported, tmp_path):
    assert OnnxEngine(exported[1]).info["weights_sha256"] == weights_sha256(tiny_weights)
    # the model retrained (other weights, other validation figures) and saved over the old file; the twins stay
    folder = tmp_path / "retrained"
    folder.mkdir()
    for twin in exported:
        shutil.copy(twin, folder / twin.name)
    torch.manual_seed(1)
    save_model(build_model("seed_cnn", width=0.25, in_channels=1), folder / tiny_weights.name, "seed_cnn",
               {"width": 0.25, "in_channels": 1}, extra={"class_names": ["x"] * 8, "valid": {"valid_loss": 0.5}})
    with pytest.warns(RuntimeWarning, match="tiny.int8.onnx was exported from other weights .* runs in PyTorch"):
        assert load_engine(folder / tiny_weights.name).name == "torch fp32"
    with pytest.raises(ValueError, match="exported from other weights .*python -m ferlib.export --weights"):
        load_engine(folder / tiny_weights.name, "onnx")
    # twins written before ferlib recorded the hash are compared by their copy of the model's metadata
    legacy = OnnxEngine(exported[1])
    del legacy.info["weights_sha256"]
    assert stale_twin(tiny_weights, legacy) is None
    assert "exported from other weights" in stale_twin(folder / tiny_weights.name, legacy)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_engine(tiny_weights).name == "onnx int8"  # the twins of the weights they came from: no warning


def test_engines_reject_faces_that_are_not_48x48_uint8(exported):
    engine = OnnxEngine(exported[0])
    with pytest.raises(ValueError, match=r"uint8 faces of shape \(N, 48, 48\)"):
        engine.predict(np.zeros((2, 48, 48), np.float32))


def test_evaluate_scores_an_onnx_twin_like_its_model(tiny_weights, exported, tiny_dataset, tmp_path, capsys):
    from ferlib.models import load_model

    model, _ = load_model(tiny_weights)
    by_torch = evaluate_model(model, tiny_dataset, "test", progress=False)
    by_onnx = evaluate_model(OnnxEngine(exported[0]), tiny_dataset, "test", progress=False)
    for protocol in by_torch:
        assert by_onnx[protocol]["n"] == by_torch[protocol]["n"]
        assert by_onnx[protocol]["confusion"] == by_torch[protocol]["confusion"]
    assert evaluate_main(["--weights", str(exported[1]), "--data", str(tiny_dataset),
                          "--json", str(tmp_path / "int8.json")]) == 0
    report = json.loads((tmp_path / "int8.json").read_text())
    assert set(report["protocols"]) == {"majority", "no_unknown"} and report["model"]["model"] == "seed_cnn"


def test_export_command_line(tiny_weights, tiny_dataset, tmp_path, capsys):
    weights = tmp_path / "copy.safetensors"
    shutil.copy(tiny_weights, weights)
    assert export_main(["--weights", str(weights), "--data", str(tiny_dataset), "--faces", "20"]) == 0
    out = capsys.readouterr().out
    assert "copy.onnx" in out and "copy.int8.onnx" in out
    assert export_main(["--weights", str(tmp_path / "missing.safetensors")]) == 2
    assert "model file not found" in capsys.readouterr().err
    assert export_main(["--weights", str(weights), "--data", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err
