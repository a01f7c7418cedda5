"""ONNX twins of a trained model, for fast CPU inference in ONNX Runtime (``ferlib.engine``).

    python -m ferlib.export --weights models/ferplus_cnn.safetensors --data data
    python -m ferlib.export --weights models/ferplus_cnn_aligned.safetensors --data data/aligned

writes ``<name>.onnx`` (float32, the same network; BatchNorm folded into the convolutions) and ``<name>.int8.onnx``
(static int8 quantization in QDQ format: weights per channel, activations calibrated on FER+ *training* faces,
never test faces) beside ``<name>.safetensors``. Both carry the safetensors model's metadata and the hash of its
file, by which ``ferlib.engine.load_engine`` knows a twin left over from earlier weights. Calibrate a model on
the images it was trained on: the face-aligned model on ``data/aligned``.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from ferlib.engine import ONNX_METADATA_KEY, WEIGHTS_HASH_KEY, normalize, onnx_twin, weights_sha256
from ferlib.files import atomic_path

CALIBRATION_FACES = 2000
OPSET = 17


def export_onnx(model, path: Path | str, info: dict) -> None:
    """Write ``model`` (a ferlib torch model in eval mode) as float32 ONNX with a dynamic batch size."""
    import onnx
    import torch

    from ferlib.models import input_channels

    example = torch.zeros(1, input_channels(model), 48, 48)
    with atomic_path(path) as temporary, warnings.catch_warnings():
        # the TorchScript-based exporter is deprecated but needs no extra package and handles this plain CNN exactly
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model.eval(), (example,), str(temporary), dynamo=False, input_names=["faces"],
                          output_names=["logits"], dynamic_axes={"faces": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=OPSET, do_constant_folding=True)
        graph = onnx.load(str(temporary))
        onnx.helper.set_model_props(graph, {ONNX_METADATA_KEY: json.dumps(info)})
        onnx.save(graph, str(temporary))


class _FaceBatches:
    """onnxruntime.quantization's CalibrationDataReader over normalised faces, 64 at a time."""

    def __init__(self, batch: np.ndarray, input_name: str, size: int = 64):
        self.chunks = iter([{input_name: batch[i:i + size]} for i in range(0, len(batch), size)])

    def get_next(self):
        return next(self.chunks, None)


def quantize_int8(fp32_path: Path | str, path: Path | str, calibration_faces: np.ndarray) -> None:
    """Static int8 quantization (QDQ, per-channel weights, MinMax-calibrated activations) of an fp32 ONNX model."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    graph = onnx.load(str(fp32_path))
    input_name = graph.graph.input[0].name
    channels = graph.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    metadata = {prop.key: prop.value for prop in graph.metadata_props}
    batch = normalize(calibration_faces, channels)
    quiet = logging.getLogger()  # the quantizer logs a warning per LayerNorm weight, which stays per-tensor
    level, quiet.level = quiet.level, logging.ERROR
    with tempfile.TemporaryDirectory() as scratch, atomic_path(path) as temporary:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(temporary), _FaceBatches(batch, input_name),
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                        # 7-bit weights: a CPU without VNNI (AVX2, AVX-512 before it) adds pairs of uint8 x int8
                        # products in 16 bits, which full-range weights overflow (saturate); that cost the
                        # full-range twins 0.5-1.6 points on an AVX2-only CPU. With 7 bits every CPU computes
                        # exactly the same integers, so a twin scores the same everywhere
                        reduce_range=True)
        quantized = onnx.load(str(temporary))
        onnx.helper.set_model_props(quantized, {**metadata, "calibration_faces": str(len(calibration_faces))})
        onnx.save(quantized, str(temporary))
    quiet.setLevel(level)


def calibration_faces(data_dir: Path | str, count: int = CALIBRATION_FACES, seed: int = 0) -> np.ndarray:
    """``count`` faces drawn at random from a generated dataset's training split (uint8 (N, 48, 48))."""
    from ferlib.data import SPLIT_FOLDERS, load_split

    if not (Path(data_dir) / SPLIT_FOLDERS["train"]).is_dir():
        raise FileNotFoundError(f"{Path(data_dir) / SPLIT_FOLDERS['train']}: no training faces to calibrate the int8 "
                                "model on; generate the dataset first (./run.sh), pass --data (data/aligned for the "
                                "face-aligned model), or --no-int8")
    images = load_split(data_dir, "train").images
    if len(images) == 0:
        raise ValueError(f"{data_dir}: the training split has no faces to calibrate on")
    chosen = np.random.default_rng(seed).choice(len(images), size=min(count, len(images)), replace=False)
    return images[np.sort(chosen)]


def export_model_onnx(weights: Path | str, data_dir: Path | str | None, faces: int = CALIBRATION_FACES,
                      int8: bool = True) -> list[Path]:
    """Write a ``.safetensors`` model's ONNX twins; returns their paths."""
    from ferlib.models import load_model

    weights = Path(weights)
    model, info = load_model(weights)
    info = {**info, WEIGHTS_HASH_KEY: weights_sha256(weights)}  # so a twin outlived by retrained weights is known
    fp32 = onnx_twin(weights, "fp32")
    written = [fp32]
    calibration = None
    if int8:
        if data_dir is None:
            raise ValueError("the int8 model needs training faces to calibrate on: pass --data (or --no-int8)")
        calibration = calibration_faces(data_dir, faces)
        info = {**info, "calibration": f"{len(calibration)} faces of {Path(data_dir) / 'FER2013Train'}"}
    export_onnx(model, fp32, info)
    if int8:
        int8_path = onnx_twin(weights, "int8")
        quantize_int8(fp32, int8_path, calibration)
        written.append(int8_path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a ferlib model's ONNX twins (fp32 and int8) beside it.")
    parser.add_argument("--weights", type=Path, required=True, help="a .safetensors model from ferlib.train")
    parser.add_argument("--data", type=Path, default=Path("data"),
                        help="generated dataset whose FER2013Train faces calibrate the int8 model (default data; "
                             "data/aligned for the face-aligned model)")
    parser.add_argument("--faces", type=int, default=CALIBRATION_FACES, help="training faces to calibrate on")
    parser.add_argument("--no-int8", action="store_true", help="write only the fp32 twin")
    args = parser.parse_args(argv)
    if args.faces < 1:
        parser.error(f"argument --faces: {args.faces}: expected 1 or more")
    try:
        written = export_model_onnx(args.weights, None if args.no_int8 else args.data, args.faces, not args.no_int8)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
