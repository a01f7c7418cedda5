"""The networks: the seed's 5-block CNN, built by name from a few arguments.

``SeedCNN`` is the seed project's model as it describes it: five blocks of [3x3 conv -> BatchNorm -> ReLU] x 2,
2x2 max-pooling after blocks 1-4, 32-64-128-256-512 channels, global average pooling, then a dense head
512 -> 256 -> 128 -> 8 with LayerNorm, ReLU and dropout. With 3 input channels it has 4.88M parameters.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ferlib.files import MissingFileError


def conv_block(in_channels: int, out_channels: int, pool: bool) -> nn.Sequential:
    """[3x3 conv -> BatchNorm -> ReLU] x 2, then an optional 2x2 max-pool."""
    layers = []
    for channels_in in (in_channels, out_channels):
        layers += [
            nn.Conv2d(channels_in, out_channels, 3, padding=1, bias=False),  # BatchNorm supplies the bias
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


def dense_layer(in_features: int, out_features: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_features, out_features), nn.LayerNorm(out_features), nn.ReLU(inplace=True),
                         nn.Dropout(dropout))


class SeedCNN(nn.Module):
    """The seed's 5-block CNN. ``width`` scales every layer (1.0 is the seed's 32-64-128-256-512)."""

    def __init__(self, num_classes: int = 8, in_channels: int = 3, width: float = 1.0, dropout: float = 0.4):
        super().__init__()
        channels = [max(8, round(c * width)) for c in (32, 64, 128, 256, 512)]
        blocks, previous = [], in_channels
        for i, c in enumerate(channels):
            blocks.append(conv_block(previous, c, pool=i < 4))
            previous = c
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        hidden = [max(8, round(h * width)) for h in (256, 128)]
        self.head = nn.Sequential(
            dense_layer(previous, hidden[0], dropout),
            dense_layer(hidden[0], hidden[1], dropout),
            nn.Linear(hidden[1], num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))


MODELS = {"seed_cnn": SeedCNN}


def build_model(name: str = "seed_cnn", **kwargs) -> nn.Module:
    """Build a model by name (see MODELS) with its keyword arguments."""
    if name not in MODELS:
        raise ValueError(f"model {name!r}: expected one of {', '.join(MODELS)}")
    return MODELS[name](**kwargs)


# ferplus_cnn_fast: the half-width network distilled from ferplus_cnn (configs/fast_kd.toml), for batch scoring of
# FER-framed crops where speed matters more than the last point of accuracy; ferplus_cnn_balanced: a 50-epoch
# network re-balanced for the rare emotions (configs/balanced.sh's recipe), which it reads far more often;
# ferplus_cnn_robust: that network fine-tuned on both framings with real-input damage (configs/finetune_app.toml),
# the recognizer's and the live app's default
SHIPPED_MODELS = ("ferplus_cnn_robust", "ferplus_cnn_aligned", "ferplus_cnn", "seed_cnn", "ferplus_cnn_fast",
                  "ferplus_cnn_balanced")


def shipped_model(name: str) -> Path:
    """The path of a model that ships with ferlib (``SHIPPED_MODELS``): ``models/<name>.safetensors`` in a source
    checkout, ``ferlib/weights/<name>.safetensors`` in an installed package; their ONNX twins lie beside them."""
    here = Path(__file__).resolve().parent
    for folder in (here / "weights", here.parent / "models"):
        path = folder / f"{name}.safetensors"
        if path.is_file():
            return path
    raise MissingFileError(f"shipped model {name!r} not found in {here / 'weights'} or {here.parent / 'models'}"
                           f" (expected one of {', '.join(SHIPPED_MODELS)})")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_multiply_adds(model: nn.Module, size: int = 48) -> int:
    """Multiply-adds of the convolutions and linear layers for one ``size`` x ``size`` face: the work that bounds
    inference speed (BatchNorm, ReLU and pooling add well under 1%)."""
    total = 0

    def convolution(module, inputs, output):
        nonlocal total
        total += output.numel() * module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]

    def linear(module, inputs, output):
        nonlocal total
        total += output.numel() * module.in_features

    hooks = [module.register_forward_hook(convolution if isinstance(module, nn.Conv2d) else linear)
             for module in model.modules() if isinstance(module, (nn.Conv2d, nn.Linear))]
    training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, input_channels(model), size, size))
    finally:
        model.train(training)
        for hook in hooks:
            hook.remove()
    return total


def input_channels(model: nn.Module) -> int:
    """How many image channels a model takes (1 for gray, 3 for the seed's stacked gray): its first convolution's."""
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels


def save_model(model: nn.Module, path, name: str, model_kwargs: dict, extra: dict | None = None,
               dtype: torch.dtype | None = None) -> None:
    """Save weights as safetensors, with what is needed to rebuild the model in the file's metadata.

    ``dtype=torch.float16`` halves the file (weights are cast back to float32 on loading). Written to a temporary
    file and renamed, so a crash never leaves a truncated model behind.
    """
    import json

    from safetensors.torch import save_file

    from ferlib.files import atomic_path

    metadata = {"model": name, "model_kwargs": json.dumps(model_kwargs), "extra": json.dumps(extra or {})}
    state = {key: value.detach().contiguous().cpu() for key, value in model.state_dict().items()}
    if dtype is not None:
        state = {key: value.to(dtype) if value.is_floating_point() else value for key, value in state.items()}
    with atomic_path(path) as temporary:
        save_file(state, str(temporary), metadata=metadata)


# What a saved model's metadata may ask of each network: (type, least, most) per argument. Checked before anything
# is built, so that a crafted file cannot make ferlib allocate gigabytes or fail deep inside torch.
MODEL_ARGUMENTS = {
    "seed_cnn": {"num_classes": (int, 2, 1000), "in_channels": (int, 1, 4), "width": (float, 0.05, 4.0),
                 "dropout": (float, 0.0, 0.99)},
}
_FILE_DTYPES = {"F16": "float", "BF16": "float", "F32": "float", "F64": "float", "I64": "int", "I32": "int"}


def checked_model_arguments(name, kwargs, where: str) -> dict:
    """The keyword arguments of a saved model, after checking their names, types and ranges; ValueError if wrong."""
    if not isinstance(name, str) or name not in MODELS:
        raise ValueError(f"{where}: model {name!r}: expected one of {', '.join(MODELS)}")
    if not isinstance(kwargs, dict):
        raise ValueError(f"{where}: model_kwargs must be a JSON object of arguments, got {type(kwargs).__name__}")
    allowed = MODEL_ARGUMENTS[name]
    for key, value in kwargs.items():
        if key not in allowed:
            raise ValueError(f"{where}: unknown argument {key!r} for {name}: expected some of {', '.join(allowed)}")
        kind, least, most = allowed[key]
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not is_number or (kind is int and not isinstance(value, int)) or not least <= value <= most:
            raise ValueError(f"{where}: {key} = {value!r}: expected {'a whole number' if kind is int else 'a number'}"
                             f" from {least} to {most}")
    return kwargs


def _check_tensors(path: Path, handle, reference: nn.Module) -> None:
    """The file's tensors against those of the network it names: the same names, shapes and kinds (float or int)."""
    expected = {key: value for key, value in reference.state_dict().items()}
    found = set(handle.keys())
    missing, extra = sorted(set(expected) - found), sorted(found - set(expected))
    if missing or extra:
        raise ValueError(f"{path}: tensors do not match the network it names: missing {missing[:3]}, "
                         f"unexpected {extra[:3]}")
    for key, tensor in expected.items():
        piece = handle.get_slice(key)
        shape, kind = tuple(piece.get_shape()), _FILE_DTYPES.get(piece.get_dtype())
        if shape != tuple(tensor.shape):
            raise ValueError(f"{path}: tensor {key} has shape {shape}; the network needs {tuple(tensor.shape)}")
        if kind != ("float" if tensor.is_floating_point() else "int"):
            raise ValueError(f"{path}: tensor {key} is stored as {piece.get_dtype()}; expected "
                             f"{'floating-point' if tensor.is_floating_point() else 'integer'} values")


def load_model(path) -> tuple[nn.Module, dict]:
    """Rebuild a model saved by ``save_model``; returns (model in eval mode, metadata). Never runs code from the file,
    and checks the metadata, the tensors' names and shapes, and that the weights are finite before building it."""
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: model file not found")
    try:
        with safe_open(str(path), framework="pt") as handle:
            info = parsed_metadata(handle.metadata() or {}, path)
            kwargs = info["model_kwargs"]
            checked_model_arguments(info["model"], kwargs, str(path))
            with torch.device("meta"):  # shapes only: nothing is allocated
                reference = build_model(info["model"], **kwargs)
            _check_tensors(path, handle, reference)
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path}: not a safetensors model file ({error})") from None
    except Exception as error:  # safetensors raises its own types for a damaged header
        if isinstance(error, ValueError) and str(error).startswith(str(path)):
            raise
        raise ValueError(f"{path}: not a safetensors model file ({error})") from None
    broken = next((key for key, value in state.items() if value.is_floating_point() and not torch.isfinite(value).all()),
                  None)
    if broken is not None:
        raise ValueError(f"{path}: tensor {broken} holds NaN or infinite values; the model is damaged")
    model = build_model(info["model"], **kwargs)
    model.load_state_dict(state)  # copies into the float32 parameters, whatever dtype the file holds
    model.eval()
    return model, info


def parsed_metadata(metadata: dict, path) -> dict:
    """The metadata ``save_model`` writes, as ``load_model`` returns it: {"model", "model_kwargs", **extra}; a
    ValueError naming ``path`` where it is not ferlib's."""
    import json

    if "model" not in metadata or "model_kwargs" not in metadata:
        raise ValueError(f"{path}: safetensors file without ferlib model metadata (model, model_kwargs)")
    try:
        kwargs, extra = json.loads(metadata["model_kwargs"]), json.loads(metadata.get("extra", "{}"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: model metadata is not valid JSON ({error})") from None
    if not isinstance(extra, dict):
        raise ValueError(f"{path}: metadata 'extra' must be a JSON object")
    return {"model": metadata["model"], "model_kwargs": kwargs, **extra}


def model_metadata(path) -> dict:
    """A saved model's metadata as ``load_model`` gives it, read from the file's header alone (no tensor, no
    network built)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as handle:
        return parsed_metadata(handle.metadata() or {}, path)


def interpolate_models(start: nn.Module, end: nn.Module, share: float) -> nn.Module:
    """A copy of ``start`` whose weights lie ``share`` of the way to ``end``'s (0: ``start``, 1: ``end``). Both must
    be the same network, typically a model and a fine-tuned copy of it: interpolating between the two keeps much of
    what the fine-tuning gained at a smaller cost to what it lost (Wortsman et al., "Robust fine-tuning of zero-shot
    models", CVPR 2022). BatchNorm's running statistics are interpolated too; step counters come from ``end``."""
    import copy

    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share {share}: expected a number from 0 to 1")
    first, last = start.state_dict(), end.state_dict()
    if first.keys() != last.keys() or any(first[k].shape != last[k].shape for k in first):
        raise ValueError("the two models are not the same network (their tensors differ in names or shapes)")
    mixed = {key: torch.lerp(first[key].float(), last[key].float(), share).to(first[key].dtype)
             if first[key].is_floating_point() else last[key] for key in first}
    model = copy.deepcopy(start)
    model.load_state_dict(mixed)
    return model.eval()


def average_models(models: list[nn.Module]) -> nn.Module:
    """A copy of the first model whose weights are the mean of all of ``models``' (a uniform "model soup", Wortsman
    et al., ICML 2022): networks fine-tuned from one start usually lie in one basin, where the mean of their weights
    is about as good as the best of them or better, at one network's cost. BatchNorm's running statistics are
    averaged too; step counters come from the first."""
    import copy

    if not models:
        raise ValueError("a soup needs at least one model")
    states = [model.state_dict() for model in models]
    first = states[0]
    for state in states[1:]:
        if state.keys() != first.keys() or any(state[k].shape != first[k].shape for k in first):
            raise ValueError("the models are not the same network (their tensors differ in names or shapes)")
    mixed = {key: torch.stack([state[key].float() for state in states]).mean(dim=0).to(first[key].dtype)
             if first[key].is_floating_point() else first[key] for key in first}
    model = copy.deepcopy(models[0])
    model.load_state_dict(mixed)
    return model.eval()


def load_model_for(setting: str, path) -> tuple[nn.Module, dict]:
    """``load_model`` for a file a setting names (``teachers``, ``init_weights``): a missing or broken file is one
    ValueError line that starts with the setting."""
    try:
        return load_model(path)
    except FileNotFoundError:
        raise ValueError(f"{setting}: {path}: model file not found") from None
    except ValueError as error:
        raise ValueError(f"{setting}: {error}") from None


def export_model(source, destination, dtype: torch.dtype | None = torch.float16) -> None:
    """Copy a saved model to ``destination``, by default as float16 to keep a shipped file small."""
    model, info = load_model(source)
    extra = {k: v for k, v in info.items() if k not in ("model", "model_kwargs")}
    save_model(model, destination, info["model"], info["model_kwargs"], extra=extra, dtype=dtype)
