"""The seed CNN's shape and size, and safe saving / loading of model files."""

from __future__ import annotations

import pickle

import pytest
import torch

from ferlib.models import SeedCNN, build_model, count_parameters, load_model, save_model


def test_seed_cnn_has_the_seed_size_and_shape():
    model = build_model("seed_cnn", in_channels=3)
    assert count_parameters(model) == 4_880_232  # "4.88M parameters with 3-channel input"
    convs = [m for m in model.features.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64, 128, 128, 256, 256, 512, 512]
    assert all(c.kernel_size == (3, 3) for c in convs)
    pools = [m for m in model.features.modules() if isinstance(m, torch.nn.MaxPool2d)]
    assert len(pools) == 4 and not any(isinstance(m, torch.nn.MaxPool2d) for m in model.features[4].modules())
    linears = [m for m in model.head.modules() if isinstance(m, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(512, 256), (256, 128), (128, 8)]
    assert sum(isinstance(m, torch.nn.LayerNorm) for m in model.head.modules()) == 2
    model.eval()
    assert model(torch.zeros(2, 3, 48, 48)).shape == (2, 8)


def test_width_channels_and_dropout_are_arguments():
    model = SeedCNN(in_channels=1, width=0.5, dropout=0.2)
    assert model.features[0][0].in_channels == 1 and model.features[4][0].out_channels == 256
    assert all(m.p == 0.2 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    assert count_parameters(model) < count_parameters(SeedCNN(in_channels=1)) / 3
    with pytest.raises(ValueError, match="model 'vgg99'"):
        build_model("vgg99")


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = SeedCNN(in_channels=1, width=0.25).eval()
    path = tmp_path / "m.safetensors"
    save_model(model, path, "seed_cnn", {"in_channels": 1, "width": 0.25}, extra={"class_names": ["a"]})
    loaded, info = load_model(path)
    x = torch.randn(3, 1, 48, 48)
    torch.testing.assert_close(loaded(x), model(x))
    assert info["model"] == "seed_cnn" and info["class_names"] == ["a"] and not loaded.training
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"], "no temporary file left behind"


class _Boom:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_loading_a_pickle_or_garbage_is_a_clear_error_and_runs_nothing(tmp_path, capsys):
    pickled = tmp_path / "model.safetensors"
    pickled.write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(ValueError, match="not a safetensors model file"):
        load_model(pickled)
    assert "must never run" not in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="model file not found"):
        load_model(tmp_path / "missing.safetensors")
