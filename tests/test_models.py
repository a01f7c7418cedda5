"""The seed CNN's shape and size, and safe saving / loading of model files."""

from __future__ import annotations

import pickle

import pytest
import torch

from conftest import load_benchmark
from ferlib.models import (SeedCNN, build_model, count_multiply_adds, count_parameters, interpolate_models, load_model,
                           save_model)


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


def test_multiply_adds_count_every_convolution_and_linear_layer():
    model = SeedCNN(in_channels=1)
    # per 3x3 convolution: output pixels x output channels x input channels x 9; blocks at 48, 24, 12, 6 and 3 px
    sizes, channels, expected, previous = (48, 24, 12, 6, 3), (32, 64, 128, 256, 512), 0, 1
    for size, width in zip(sizes, channels):
        expected += size * size * width * 9 * (previous + width)
        previous = width
    expected += 512 * 256 + 256 * 128 + 128 * 8
    assert count_multiply_adds(model) == expected == 149_464_064  # README: "149.5M multiply-adds per face"
    assert model.training  # measured in eval mode, the model's mode given back
    assert count_multiply_adds(SeedCNN(in_channels=1, width=0.5)) < expected / 3.9


def test_the_benchmark_measures_the_int8_matrix_rate():
    benchmark = load_benchmark("model_benchmark")
    rate = benchmark.int8_matmul_rate(1, size=64, seconds=0.01)
    assert 1e6 < rate < 1e14  # multiply-adds per second: a real measurement, not a constant
    threads = torch.get_num_threads()
    onednn = benchmark.onednn_int8_matmul_rate(1, size=64, seconds=0.01)
    assert onednn is None or 1e6 < onednn < 1e14
    assert torch.get_num_threads() == threads, "the process's thread count given back"


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


def crafted_model(tmp_path, name="crafted", kwargs='{"in_channels": 1, "width": 0.25}', model="seed_cnn",
                  change=None, extra="{}"):
    """A model file made from a real tiny model's tensors, with the metadata or tensors changed by ``change``."""
    from safetensors.torch import save_file

    state = {k: v.clone().contiguous() for k, v in SeedCNN(in_channels=1, width=0.25).state_dict().items()}
    if change is not None:
        change(state)
    path = tmp_path / f"{name}.safetensors"
    metadata = {"model": model, "model_kwargs": kwargs, "extra": extra}
    save_file(state, str(path), metadata={k: v for k, v in metadata.items() if v is not None})
    return path


def nan_weight(state):
    state["head.2.weight"][0, 0] = float("nan")


def integer_weights(state):
    state["features.0.0.weight"] = state["features.0.0.weight"].to(torch.int32)


def wrong_shape(state):
    state["head.2.weight"] = torch.zeros(9, 32)


@pytest.mark.parametrize("arguments,message", [
    (dict(kwargs='{"in_channels": 1, "width": 0.25, "depth": 3}'), "unknown argument 'depth'"),
    (dict(kwargs='{"in_channels": -3, "width": 0.25}'), "in_channels = -3: expected a whole number from 1 to 4"),
    (dict(kwargs='{"in_channels": 1, "width": "wide"}'), "width = 'wide': expected a number"),
    (dict(kwargs='{"in_channels": 1, "width": 1e308}'), "width = 1e\\+308"),
    (dict(kwargs='{"in_channels": 1, "width": 20}'), "width = 20: expected a number from 0.05 to 4.0"),
    (dict(kwargs='{"num_classes": 1e12, "width": 0.25}'), "num_classes = 1000000000000.0: expected a whole number"),
    (dict(kwargs='[1, 2]'), "model_kwargs must be a JSON object"),
    (dict(kwargs='null'), "model_kwargs must be a JSON object"),
    (dict(kwargs='{not json'), "not valid JSON"),
    (dict(model="vgg99"), "model 'vgg99'"),
    (dict(extra='[]'), "'extra' must be a JSON object"),
    (dict(kwargs=None), "without ferlib model metadata"),
    (dict(change=wrong_shape), r"head.2.weight has shape \(9, 32\); the network needs \(8, 32\)"),
    (dict(change=lambda state: state.pop("head.2.bias")), r"missing \['head.2.bias'\]"),
    (dict(change=lambda state: state.update(extra=torch.zeros(2))), r"unexpected \['extra'\]"),
    (dict(change=nan_weight), "head.2.weight holds NaN or infinite values"),
    (dict(change=integer_weights), "features.0.0.weight is stored as I32; expected floating-point"),
])
def test_crafted_model_files_are_refused_before_anything_is_built(tmp_path, arguments, message):
    with pytest.raises(ValueError, match=message):
        load_model(crafted_model(tmp_path, **arguments))


def test_a_huge_width_is_refused_without_allocating(tmp_path):
    import resource
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ValueError, match="width = 4.5"):
        load_model(crafted_model(tmp_path, kwargs='{"in_channels": 1, "width": 4.5}'))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KB: nothing like 8.7 GB


def test_interpolated_weights_lie_between_the_two_models():
    torch.manual_seed(0)
    start, end = SeedCNN(width=0.25).eval(), SeedCNN(width=0.25).eval()
    end.features[0][1].num_batches_tracked.fill_(7)
    first, last = start.state_dict(), end.state_dict()
    for share in (0.0, 0.3, 1.0):
        mixed = interpolate_models(start, end, share).state_dict()
        for key, value in mixed.items():
            if value.is_floating_point():
                assert torch.allclose(value, first[key] + share * (last[key] - first[key]), atol=1e-6), key
            else:
                assert torch.equal(value, last[key]), key
    assert not interpolate_models(start, end, 0.5).training
    before = {key: value.clone() for key, value in first.items()}
    interpolate_models(start, end, 0.5)
    assert all(torch.equal(start.state_dict()[key], value) for key, value in before.items())  # inputs untouched
    with pytest.raises(ValueError, match="not the same network"):
        interpolate_models(start, SeedCNN(width=0.5), 0.5)
    with pytest.raises(ValueError, match="from 0 to 1"):
        interpolate_models(start, end, 1.5)
