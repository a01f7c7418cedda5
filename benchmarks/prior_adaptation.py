"""Is the gap on faces from outside FER a change of class shares? Unsupervised prior adaptation, measured.

    python benchmarks/prior_adaptation.py [--data data] [--aligned-data data/aligned] [--data-dir ../shared/xdata]
        [--json reports/cross_dataset/prior_adaptation.json]

CK+48 has no neutral face and FER+ a third of neutral ones; a model answers with FER+'s class shares built in. If
the difference were only the shares (label shift), a collection's own shares could be estimated from the model's
answers on it, without labels, and the answers corrected: the EM procedure of Saerens, Latinne and Decaestecker
(Neural Computation, 2002), after the probabilities are calibrated (Alexandari et al., ICML 2020: EM needs calibrated
probabilities). Here each shipped model (its int8 twin, the recognizer's default engine) gets one temperature, fitted
on the FER+ validation split (majority protocol) by log-likelihood; EM then re-weights its calibrated probabilities
on each whole collection: FER+ test (3,152 faces, where the shares match training and nothing should change), CK+48
(981 images) and muxspace (1,657), each fed directly as ``EmotionRecognizer.classify_faces`` feeds it. Nothing is
fitted on the outside sets' labels: EM sees their faces, never their classes (transductive, as a user's folder of
photos would be). Prints accuracy before and after and the class shares EM estimates beside the true ones.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar

from ferlib.data import CLASS_NAMES, load_split, same_faces
from ferlib.engine import load_engine, onnx_twin, softmax
from ferlib.evaluate import predict_faces, protocol_faces
from ferlib.files import check_writable, write_json
from ferlib.measure import classify_directly, cross_set_scores, read_xdata_images, read_xdata_labels
from ferlib.models import shipped_model

REPO = Path(__file__).resolve().parents[1]
# model -> the generated folder its validation and test faces are read from ("aligned": --aligned-data)
SHIPPED = {"ferplus_cnn": "fer", "ferplus_cnn_aligned": "aligned", "seed_cnn": "fer", "ferplus_cnn_balanced": "fer"}
REPORTED_SETS = ("ferplus_test", "ckplus48_sequences_no_contempt", "ckplus48_no_contempt", "muxspace_no_contempt")


def log_probabilities(probabilities: np.ndarray) -> np.ndarray:
    return np.log(np.clip(probabilities, 1e-12, None))


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising the negative log-likelihood of ``softmax(log p / T)`` on labelled faces."""
    logits = log_probabilities(probabilities)

    def loss(log_t: float) -> float:
        calibrated = softmax(logits / np.exp(log_t))
        return float(-np.log(calibrated[np.arange(len(labels)), labels] + 1e-12).mean())

    return float(np.exp(minimize_scalar(loss, bounds=(-3, 3), method="bounded").x))


def em_adapt(probabilities: np.ndarray, source_priors: np.ndarray, iterations: int = 1000,
             tolerance: float = 1e-8) -> tuple[np.ndarray, np.ndarray]:
    """Saerens et al.'s EM: the collection's class shares (8) and the probabilities re-weighted by them (N, 8),
    from a model's calibrated probabilities under the training shares ``source_priors``."""
    shares = source_priors.copy()
    adapted = probabilities
    for _ in range(iterations):
        adapted = probabilities * (shares / source_priors)
        adapted = adapted / adapted.sum(axis=1, keepdims=True)
        new = adapted.mean(axis=0)
        converged = np.abs(new - shares).max() < tolerance
        shares = new
        if converged:
            break
    return shares, adapted


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / "data", help="the generated FER+ folders")
    parser.add_argument("--aligned-data", type=Path, default=REPO / "data" / "aligned",
                        help="the face-aligned FER+ folders (for ferplus_cnn_aligned)")
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "xdata", help="the xdata folder")
    parser.add_argument("--json", type=Path, help="write every figure here (atomically)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.json is not None:
            check_writable(args.json)
        table = read_xdata_labels(args.data_dir)
        images = read_xdata_images(args.data_dir, table["file"], progress=False)
        reference = {split: load_split(args.data, split) for split in ("valid", "test")}
        folders = {"fer": args.data, "aligned": args.aligned_data}
        splits = {(kind, split): reference[split] if kind == "fer" else same_faces(reference[split], folder)
                  for kind, folder in folders.items() if kind in SHIPPED.values() for split in reference}
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    datasets = list(dict.fromkeys(table["dataset"]))
    results, shares_table = [], []
    for name, kind in SHIPPED.items():
        engine = load_engine(onnx_twin(shipped_model(name), "int8"))
        fer = {}
        for split in ("valid", "test"):
            keep, labels = protocol_faces(splits[kind, split], "majority")
            fer[split] = (predict_faces(engine, splits[kind, split].images[keep]), labels)
        temperature = fit_temperature(*fer["valid"])
        # the shares the model answers with on faces drawn as its training faces were: for a model trained on FER+'s
        # shares those, for a re-balanced one (ferplus_cnn_balanced) its own; EM starts from them and leaves a
        # collection drawn the same way as it is
        source_priors = softmax(log_probabilities(fer["valid"][0]) / temperature).mean(axis=0)
        outside = classify_directly(engine, images, progress=False)
        adapted_outside = np.zeros_like(outside)
        for dataset in datasets:
            rows = (table["dataset"] == dataset).to_numpy()
            shares, adapted_outside[rows] = em_adapt(softmax(log_probabilities(outside[rows]) / temperature),
                                                     source_priors)
            true = np.array([(table["label"][rows] == label).mean() for label in CLASS_NAMES])
            shares_table.append({"model": name, "set": dataset, "estimated": shares.tolist(), "true": true.tolist()})
        test_probabilities, test_labels = fer["test"]
        test_shares, adapted_test = em_adapt(softmax(log_probabilities(test_probabilities) / temperature),
                                             source_priors)
        shares_table.append({"model": name, "set": "ferplus_test", "estimated": test_shares.tolist(),
                             "true": np.bincount(test_labels, minlength=len(CLASS_NAMES)).tolist()})
        for method, probabilities, test in (("direct", outside, test_probabilities),
                                            ("EM prior adaptation", adapted_outside, adapted_test)):
            scores = {key: value["accuracy"] for key, value in cross_set_scores(table, probabilities).items()}
            scores["ferplus_test"] = float((test.argmax(axis=1) == test_labels).mean())
            results.append({"model": name, "method": method, "temperature": temperature,
                            "source_priors": source_priors.tolist(), "accuracy": scores})
    print_tables(results, shares_table)
    if args.json is not None:
        write_json(args.json, {"classes": list(CLASS_NAMES),
                               "engine": "ONNX Runtime int8 twin of each shipped model", "results": results,
                               "shares": shares_table})
    return 0


def print_tables(results: list[dict], shares_table: list[dict]) -> None:
    titles = {"ferplus_test": "FER+ test (3,152)", "ckplus48_sequences_no_contempt": "CK+48 sequences w/o contempt",
              "ckplus48_no_contempt": "CK+48 images w/o contempt", "muxspace_no_contempt": "muxspace w/o contempt"}
    print("| model | answers | temperature (FER+ valid) | " + " | ".join(titles[key] for key in REPORTED_SETS) + " |")
    print("|---|---|---:|" + "---:|" * len(REPORTED_SETS))
    for row in results:
        print(f"| {row['model']} | {row['method']} | {row['temperature']:.2f} | "
              + " | ".join(f"{row['accuracy'][key]:.1%}" for key in REPORTED_SETS) + " |")
    print("\nClass shares EM estimates (true shares in brackets; FER+ test: true counts), "
          + ", ".join(CLASS_NAMES) + ":")
    for row in shares_table:
        true = (" ".join(f"{v:.0f}" for v in row["true"]) if row["set"] == "ferplus_test"
                else " ".join(f"{v:.2f}" for v in row["true"]))
        print(f"- {row['model']}, {row['set']}: " + " ".join(f"{v:.2f}" for v in row["estimated"]) + f" ({true})")


if __name__ == "__main__":
    sys.exit(main())
