"""Post-hoc logit adjustment for the rare emotions (Menon et al., "Long-tail learning via logit adjustment", ICLR
2021): a trained model answers arg max over classes of ``logit - tau * log(prior)``, where ``prior`` is each
class's share of the training faces. Rare classes (contempt is 0.5% of FER+, disgust 0.8%) gain, common ones lose
a little. The shift is folded into the last layer's bias, so the adjusted model is an ordinary model file (ONNX
export, the recognizer and evaluation take it as is).

``tau`` is chosen on the validation split, never the test split: the largest macro F1 whose accuracy is at most
``max_accuracy_drop`` below the most accurate tau's. It may be negative: a model fine-tuned on class-balanced draws
(``oversample = true``) answers as if every class were equally common, and ``-tau * log(prior)`` with tau < 0 puts
part of the true priors back (deferred re-balancing, as in Cao et al., NeurIPS 2019, then a post-hoc correction).

    python -m ferlib.adjust --weights models/ferplus_cnn.safetensors --data data --out runs/adjusted/ferplus_cnn.safetensors \
        --max-accuracy-drop 0.015
    python -m ferlib.evaluate --weights runs/adjusted/ferplus_cnn.safetensors --data data --split test

``--interpolate-from BASE`` first mixes the model's weights with those of the model it was fine-tuned from (a share
of the way from BASE to it, as in WiSE-FT), and chooses the share and tau together on validation, by the same rule.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

from ferlib.data import NUM_CLASSES, label_targets, load_dataset, load_split
from ferlib.evaluate import classification_metrics, dataset_images, predict_probabilities
from ferlib.files import atomic_path, check_writable, write_json
from ferlib.models import input_channels, interpolate_models, load_model, save_model
from ferlib.transforms import build_transform

# -1 to 2: a negative tau gives back the priors that a model trained on class-balanced draws (oversample) lost
TAU_GRID = tuple(round(0.05 * i, 2) for i in range(-20, 41))
# 0: the base model, 1: the fine-tuned one
SHARE_GRID = tuple(round(0.1 * i, 1) for i in range(11))


def training_priors(data_dir: Path | str) -> np.ndarray:
    """Each class's share of the training faces under the majority protocol (8 numbers summing to 1)."""
    _, targets = label_targets(load_split(data_dir, "train").votes, "majority")
    counts = targets.sum(axis=0) + 1  # one face more per class: a class absent from the data keeps a finite log
    return counts / counts.sum()


def adjusted_predictions(probabilities: np.ndarray, priors: np.ndarray, tau: float) -> np.ndarray:
    """The classes a model answers once its log-probabilities (its logits, up to a constant per face) are shifted
    by ``-tau * log(priors)``."""
    return (np.log(np.clip(probabilities, 1e-12, None)) - tau * np.log(priors)).argmax(axis=1)


def tau_sweep(probabilities: np.ndarray, labels: np.ndarray, priors: np.ndarray,
              taus: tuple[float, ...] = TAU_GRID) -> list[dict]:
    """Accuracy and macro F1 of each ``tau`` on labelled faces."""
    rows = []
    for tau in taus:
        metrics = classification_metrics(labels, adjusted_predictions(probabilities, priors, tau))
        rows.append({"tau": tau, "accuracy": metrics["accuracy"], "f1_macro": metrics["f1_macro"]})
    return rows


def choose_tau(sweep: list[dict], max_accuracy_drop: float) -> dict:
    """The sweep row with the largest macro F1 among those within ``max_accuracy_drop`` of the most accurate row's
    accuracy (for a model trained on the true class shares that is tau = 0 or next to it; for one trained on
    balanced draws, a negative tau). Rows may also carry an interpolation ``share``: the choice is then joint."""
    best = max(row["accuracy"] for row in sweep)
    allowed = [row for row in sweep if row["accuracy"] >= best - max_accuracy_drop - 1e-12]
    return max(allowed, key=lambda row: (row["f1_macro"], -row["tau"], -row.get("share", 0.0)))


def fold_into_bias(model: torch.nn.Module, priors: np.ndarray, tau: float) -> torch.nn.Module:
    """Subtract ``tau * log(priors)`` from the bias of the model's last linear layer (its logits), in place."""
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    if last.out_features != NUM_CLASSES:
        raise ValueError(f"the model's last layer gives {last.out_features} outputs; expected {NUM_CLASSES}")
    with torch.no_grad():
        last.bias -= torch.as_tensor(tau * np.log(priors), dtype=last.bias.dtype)
    return model


def finite_number(minimum: float | None = None):
    """An argparse type: a finite float, at least ``minimum``."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a number") from None
        if not math.isfinite(value) or (minimum is not None and value < minimum):
            raise argparse.ArgumentTypeError(f"{text!r}: expected a finite number"
                                             f"{'' if minimum is None else f' >= {minimum:g}'}")
        return value
    return parse


def check_paths(weights: Path, out: Path, report: Path | None) -> None:
    """Refuse an output that would overwrite the model it is made from, or the other output."""
    if out.resolve() == weights.resolve():
        raise ValueError(f"--out {out}: the same file as --weights; write the adjusted model elsewhere")
    if report is not None and report.resolve() in (out.resolve(), weights.resolve()):
        raise ValueError(f"--json {report}: the same file as --out or --weights")
    for path in (out, report):
        if path is not None:
            check_writable(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Adjust a model's logits by the class priors (rare emotions), "
                                                 "choosing tau on the validation split.")
    parser.add_argument("--weights", type=Path, required=True, help="a model file (.safetensors)")
    parser.add_argument("--data", type=Path, default=Path("data"), help="folder holding FER2013Train/Valid")
    parser.add_argument("--out", type=Path, required=True, help="where to write the adjusted model (.safetensors)")
    parser.add_argument("--tau", type=finite_number(), help="use this tau instead of choosing one on validation")
    parser.add_argument("--max-accuracy-drop", type=finite_number(0), default=0.005,
                        help="validation accuracy tau may cost against the most accurate tau, as a fraction "
                             "(default 0.005: half a point)")
    parser.add_argument("--interpolate-from", type=Path, metavar="BASE",
                        help="the model --weights was fine-tuned from: mix the two models' weights, choosing the "
                             "share of --weights (0 to 1 by 0.1) together with tau on validation")
    parser.add_argument("--share", type=finite_number(0), help="with --interpolate-from: use this share (0 to 1)")
    parser.add_argument("--json", type=Path, help="write the validation sweep and the choice here")
    args = parser.parse_args(argv)
    try:
        if args.share is not None and (args.interpolate_from is None or args.share > 1):
            raise ValueError(f"--share {args.share:g}: expected a number from 0 to 1, with --interpolate-from")
        check_paths(args.weights, args.out, args.json)
        if args.interpolate_from is not None and args.interpolate_from.resolve() == args.out.resolve():
            raise ValueError(f"--out {args.out}: the same file as --interpolate-from; write the model elsewhere")
        model, info = load_model(args.weights)
        base = load_model(args.interpolate_from)[0] if args.interpolate_from else None
        priors = training_priors(args.data)
        valid = load_dataset(args.data, "valid", "majority", build_transform(False), input_channels(model))
        images, labels = dataset_images(valid), valid.labels.numpy()
        taus = TAU_GRID if args.tau is None or args.tau in TAU_GRID else (*TAU_GRID, args.tau)
        shares = [None] if base is None else [args.share] if args.share is not None else list(SHARE_GRID)
        sweep = []
        for share in shares:
            candidate = model if share is None else interpolate_models(base, model, share)
            probabilities = predict_probabilities(candidate, images).numpy()
            rows = tau_sweep(probabilities, labels, priors, taus)
            sweep += rows if share is None else [{"share": share, **row} for row in rows]
        candidates = sweep if args.tau is None else [row for row in sweep if row["tau"] == args.tau]
        chosen = choose_tau(candidates, args.max_accuracy_drop)
        print_sweep(sweep if base is None else candidates, chosen, args.max_accuracy_drop)
        if base is not None:
            model = interpolate_models(base, model, chosen["share"])
        write_adjusted(model, info, priors, chosen, args, sweep)
    except (OSError, ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    mixed = f", share {chosen['share']:g} of the way from {args.interpolate_from}" if base is not None else ""
    print(f"wrote {args.out} (tau {chosen['tau']}{mixed})")
    return 0


def print_sweep(sweep: list[dict], chosen: dict, max_accuracy_drop: float) -> None:
    """The validation sweep: every tau for one model; for interpolated models, each share's row that the rule
    would choose for that share alone."""
    shares = sorted({row["share"] for row in sweep if "share" in row})
    rows = sweep if not shares else [choose_tau([r for r in sweep if r["share"] == s], max_accuracy_drop)
                                     for s in shares]
    print(("share  " if shares else "") + "tau  valid accuracy  valid macro F1")
    for row in rows:
        print((f"{row['share']:.1f}    " if shares else "")
              + f"{row['tau']:4.2f}  {row['accuracy']:.4f}          {row['f1_macro']:.4f}"
              + ("  <- chosen" if row == chosen else ""))


def write_adjusted(model, info: dict, priors: np.ndarray, chosen: dict, args, sweep: list[dict]) -> None:
    """The adjusted model and, with ``--json``, the sweep: the model is published only once the report is written,
    so a failure leaves neither."""
    fold_into_bias(model, priors, chosen["tau"])
    extra = {k: v for k, v in info.items() if k not in ("model", "model_kwargs")}
    extra["logit_adjustment"] = {"tau": chosen["tau"], "priors": priors.tolist(), "source": str(args.weights),
                                 "chosen_on": "valid (majority protocol)" if args.tau is None else "given"}
    if args.interpolate_from is not None:
        extra["interpolation"] = {"from": str(args.interpolate_from), "share": chosen["share"],
                                  "chosen_on": "valid (majority protocol)" if args.share is None else "given"}
    with atomic_path(args.out) as temporary:
        save_model(model, temporary, info["model"], info["model_kwargs"], extra=extra, dtype=torch.float16)
        if args.json:
            write_json(args.json, {"weights": str(args.weights), "priors": priors.tolist(), "sweep": sweep,
                                   "chosen": chosen, "max_accuracy_drop": args.max_accuracy_drop,
                                   "interpolate_from": str(args.interpolate_from) if args.interpolate_from else None,
                                   "out": str(args.out)})


if __name__ == "__main__":
    sys.exit(main())
