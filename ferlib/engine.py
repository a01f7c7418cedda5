"""Inference engines: one ``predict(crops) -> probabilities`` call over a trained classifier, run by ONNX Runtime
(the ``.onnx`` / ``.int8.onnx`` twins that ``ferlib.export`` writes beside a model) or by PyTorch (the
``.safetensors`` model itself).

    from ferlib.engine import load_engine
    engine = load_engine("models/ferplus_cnn.safetensors")        # its .int8.onnx twin when onnxruntime is installed
    probabilities = engine.predict(crops)                          # uint8 (N, 48, 48) -> float32 (N, 8)

Both engines take 48x48 grayscale uint8 faces framed like FER2013's (see ``ferlib.faces.align_face``) and normalise
them as the evaluation transform does (``ferlib.transforms``: scale to [0, 1], mean 0.5, std 0.5).
"""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np

from ferlib.files import MissingFileError
from ferlib.transforms import MEAN, STD, mirrored

ENGINES = ("auto", "onnx", "torch")
PRECISIONS = ("int8", "fp32")
ONNX_METADATA_KEY = "ferlib"  # the ONNX model's metadata_props entry holding the safetensors model's metadata
WEIGHTS_HASH_KEY = "weights_sha256"  # in that metadata: the hash of the .safetensors file the twin was made from


def onnx_twin(weights: Path | str, precision: str = "fp32") -> Path:
    """Where ``ferlib.export`` puts a model's ONNX twin: ``<name>.onnx`` (fp32) or ``<name>.int8.onnx``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    weights = Path(weights)
    stem = weights.name.removesuffix(".safetensors")
    return weights.with_name(f"{stem}.int8.onnx" if precision == "int8" else f"{stem}.onnx")


def weights_sha256(weights: Path | str) -> str:
    """The hash ``ferlib.export`` records in a model's twins, so a twin left from earlier weights is recognised."""
    return hashlib.sha256(Path(weights).read_bytes()).hexdigest()


def stale_twin(weights: Path, twin: OnnxEngine) -> str | None:
    """Why ``twin`` does not answer for ``weights`` (exported from another file: the model was retrained or replaced
    since), or None. A twin records its weights' hash; one exported before ferlib recorded it is compared by the
    copy it keeps of the model's metadata, which holds the run's validation loss to the last digit."""
    if not weights.is_file():
        return None
    recorded = twin.info.get(WEIGHTS_HASH_KEY)
    if recorded is not None:
        same = recorded == weights_sha256(weights)
    else:
        from safetensors import SafetensorError

        from ferlib.models import model_metadata

        try:
            same = {key: value for key, value in twin.info.items() if key != "calibration"} == model_metadata(weights)
        except (OSError, ValueError, SafetensorError):  # not a ferlib model: loading it says why, if ever
            return None
    if same:
        return None
    calibration = twin.info.get("calibration", "")  # "2000 faces of data/aligned/FER2013Train"
    calibrated_on = str(Path(calibration.rpartition(" of ")[2]).parent) if " of " in calibration else "data"
    return (f"{twin.path.name} was exported from other weights than {weights} (retrained or replaced since?); "
            f"write its twins again: python -m ferlib.export --weights {weights} --data {calibrated_on}")


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def normalize(crops: np.ndarray, channels: int) -> np.ndarray:
    """uint8 (N, 48, 48) -> float32 (N, channels, 48, 48), normalised as the models were trained."""
    crops = np.asarray(crops)
    if crops.dtype != np.uint8 or crops.ndim != 3:
        raise ValueError(f"expected uint8 faces of shape (N, 48, 48), got {crops.dtype} {crops.shape}")
    batch = (crops.astype(np.float32) * (1 / 255) - MEAN) * (1 / STD)
    batch = batch[:, None]
    if channels != 1:
        batch = np.repeat(batch, channels, axis=1)
    return np.ascontiguousarray(batch)


class OnnxEngine:
    """A model's ONNX twin in ONNX Runtime on the CPU. ``threads`` is ONNX Runtime's intra-op thread count (None: one
    per core). With one thread there is no thread pool to spin, so a second busy process does not stall it."""

    def __init__(self, path: Path | str, threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise MissingFileError(f"{self.path}: ONNX model not found (python -m ferlib.export writes it)")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads {threads}: expected 1 or more")
            options.intra_op_num_threads = threads
        # spinning worker threads steal the only free core from the rest of the pipeline on a busy machine
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own exception types for unreadable files
            raise ValueError(f"{self.path}: not an ONNX model ONNX Runtime can load ({error})") from None
        self.input_name = self.session.get_inputs()[0].name
        self.channels = int(self.session.get_inputs()[0].shape[1])
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.info = json.loads(metadata.get(ONNX_METADATA_KEY, "{}"))
        self.precision = "int8" if self.path.name.endswith(".int8.onnx") else "fp32"
        self.name = f"onnx {self.precision}"
        self.threads = threads

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]

    def predict(self, crops: np.ndarray) -> np.ndarray:
        """Probabilities (N, 8) for N 48x48 uint8 faces."""
        if len(crops) == 0:
            return np.zeros((0, 8), np.float32)
        return softmax(self.logits(normalize(crops, self.channels))).astype(np.float32)


class TorchEngine:
    """A ferlib model in PyTorch (eager). ``threads`` sets torch's intra-op thread count for the whole process
    (None leaves it); ``bf16`` runs under bfloat16 autocast (faster on CPUs with AVX-512 BF16, slightly different
    probabilities)."""

    def __init__(self, model, threads: int | None = None, bf16: bool = False):
        import torch

        from ferlib.models import input_channels, load_model

        self.info = {}
        if isinstance(model, (str, Path)):
            model, self.info = load_model(model)
        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads {threads}: expected 1 or more")
            torch.set_num_threads(threads)
        self.model = model.eval()
        self.channels = input_channels(model)
        self.bf16 = bf16
        self.precision = "bf16" if bf16 else "fp32"
        self.name = f"torch {self.precision}"
        self.threads = threads

    def logits(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            device = next(self.model.parameters()).device
            return self.model(torch.from_numpy(batch).to(device)).float().cpu().numpy()

    def predict(self, crops: np.ndarray) -> np.ndarray:
        """Probabilities (N, 8) for N 48x48 uint8 faces."""
        if len(crops) == 0:
            return np.zeros((0, 8), np.float32)
        return softmax(self.logits(normalize(crops, self.channels))).astype(np.float32)


class EnsembleEngine:
    """Several engines as one: the mean of their probabilities (an ensemble). Each member normalises the faces
    for itself, so grayscale and RGB-input models mix."""

    def __init__(self, engines: list):
        if not engines:
            raise ValueError("an ensemble needs at least one model")
        self.engines = list(engines)
        self.info = {"ensemble": [engine.info for engine in self.engines]}
        self.name = f"ensemble of {len(self.engines)} ({', '.join(engine.name for engine in self.engines)})"
        self.precision = "/".join(sorted({engine.precision for engine in self.engines}))

    def predict(self, crops: np.ndarray) -> np.ndarray:
        """The members' mean probabilities (N, 8) for N 48x48 uint8 faces."""
        return np.mean([engine.predict(crops) for engine in self.engines], axis=0).astype(np.float32)


def flip_averaged(predict):
    """``predict`` (faces -> probabilities) averaged with its answer on the same faces mirrored left to right (flip
    test-time augmentation); numpy faces or torch tensors, whichever ``predict`` takes."""
    return lambda faces: (predict(faces) + predict(mirrored(faces))) / 2


class FlipAveragedEngine:
    """An engine's answer averaged with its answer on each face mirrored left to right (flip test-time
    augmentation): 0.1-0.5 points more on FER+ for twice the work."""

    def __init__(self, engine):
        self.engine = engine
        self.info, self.precision = engine.info, engine.precision
        self.name = f"{engine.name}, flip TTA"

    def predict(self, crops: np.ndarray) -> np.ndarray:
        """The mean of the probabilities (N, 8) for N 48x48 uint8 faces and for their mirror images."""
        return flip_averaged(self.engine.predict)(crops).astype(np.float32)  # the faces as given are checked first


def onnxruntime_installed() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def load_engine(weights: Path | str, engine: str = "auto", threads: int | None = None, precision: str = "int8",
                bf16: bool = False):
    """The engine for a model file. ``weights`` is a ``.safetensors`` model or an ``.onnx`` file.

    For a ``.safetensors`` model, ``engine="onnx"`` runs its ONNX twin of the given ``precision`` (int8 by default,
    the fastest; fp32 when there is no int8 twin), ``"torch"`` the model itself, and ``"auto"`` ONNX Runtime when
    it is installed and a twin exists, PyTorch otherwise. A twin exported from other weights than the file's (the
    model retrained since) is refused: a ValueError with ``"onnx"``, a warning and PyTorch with ``"auto"``.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r}: expected one of {', '.join(ENGINES)}")
    weights = Path(weights)
    if weights.suffix == ".onnx":
        if engine == "torch":
            raise ValueError(f"{weights}: an ONNX file runs in ONNX Runtime, not PyTorch; pass its .safetensors model")
        return OnnxEngine(weights, threads)
    if engine in ("auto", "onnx"):
        twins = [onnx_twin(weights, precision)] + ([onnx_twin(weights, "fp32")] if precision == "int8" else [])
        twin = next((path for path in twins if path.is_file()), None)
        if engine == "onnx" or (twin is not None and onnxruntime_installed()):
            if twin is None:
                raise MissingFileError(f"{weights}: no ONNX twin ({twins[0].name}); write it with "
                                       f"python -m ferlib.export --weights {weights}")
            stale = None
            for path in (path for path in twins if path.is_file()):  # the int8 twin, else the fp32 one
                twin_engine = OnnxEngine(path, threads)
                reason = stale_twin(weights, twin_engine)
                if reason is None:
                    return twin_engine
                stale = stale or reason
            if engine == "onnx":
                raise ValueError(stale)
            # auto: the answers of the weights the user has, a little slower, rather than a stale twin's
            warnings.warn(f"{stale}; meanwhile the model runs in PyTorch", RuntimeWarning, stacklevel=2)
    if not weights.is_file():
        raise MissingFileError(f"{weights}: model file not found")
    return TorchEngine(weights, threads, bf16)
