"""Figures for reports and notebooks: confusion matrices, per-class bars, learning curves, grids of faces, class
balance, augmentations, detections and alignment steps.

Each function returns a ``matplotlib.figure.Figure`` built without pyplot, so it renders inline in a notebook and
saves with ``figure.savefig(path)`` in a script, whatever matplotlib backend is (or is not) available.
"""
from __future__ import annotations

import re

import cv2
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ferlib.data import CLASS_NAMES, NUM_CLASSES


def confusion_figure(confusion, title: str = "", normalize: bool = False, labels=CLASS_NAMES) -> Figure:
    """A seaborn heatmap of a confusion matrix (rows: true, columns: predicted)."""
    import seaborn as sns

    matrix = np.asarray(confusion, dtype=float)
    if normalize:
        matrix = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    figure = Figure(figsize=(7, 6))
    axis = figure.subplots()
    sns.heatmap(matrix, annot=True, fmt=".2f" if normalize else ".0f", cmap="Blues", cbar=False, ax=axis,
                xticklabels=labels, yticklabels=labels, square=True)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title)
    figure.tight_layout()
    return figure


def per_class_figure(metrics: dict, title: str = "") -> Figure:
    """Per-class precision and recall bars from ``ferlib.evaluate.classification_metrics``; ticks show support."""
    figure = Figure(figsize=(8, 4))
    axis = figure.subplots()
    positions = np.arange(NUM_CLASSES)
    for offset, key in ((-0.2, "precision"), (0.2, "recall")):
        axis.bar(positions + offset, [metrics["per_class"][c][key] for c in CLASS_NAMES], width=0.4, label=key)
    axis.set_xticks(positions, [f"{c}\n({metrics['per_class'][c]['support']})" for c in CLASS_NAMES])
    axis.set_ylim(0, 1)
    axis.set_title(title)
    axis.legend()
    figure.tight_layout()
    return figure


def learning_curves_figure(history: list[dict]) -> Figure:
    """Loss and accuracy per epoch from a run's history (``runs/<name>/summary.json``'s ``history``)."""
    epochs = [h["epoch"] for h in history]
    figure = Figure(figsize=(10, 4))
    loss_axis, accuracy_axis = figure.subplots(1, 2)
    loss_axis.plot(epochs, [h["train_loss"] for h in history], label="train")
    loss_axis.plot(epochs, [h["valid_loss"] for h in history], label="validation (majority)")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_title("loss")
    loss_axis.legend()
    accuracy_axis.plot(epochs, [h["train_accuracy"] for h in history], label="train")
    accuracy_axis.plot(epochs, [h["valid_accuracy"] for h in history], label="validation (majority)")
    if all("valid_f1_macro" in h for h in history):
        accuracy_axis.plot(epochs, [h["valid_f1_macro"] for h in history], label="validation macro F1")
    accuracy_axis.set_xlabel("epoch")
    accuracy_axis.set_title("accuracy")
    accuracy_axis.legend()
    figure.tight_layout()
    return figure


def face_grid(images, titles=None, columns: int = 8, size: float = 1.3, suptitle: str = "") -> Figure:
    """Grayscale faces (N, H, W) uint8 or floats in [0, 1] in a grid, each with an optional title."""
    images = list(images)
    rows = max(1, -(-len(images) // columns))
    figure = Figure(figsize=(columns * size, rows * (size + 0.25)))
    axes = np.atleast_1d(figure.subplots(rows, columns)).ravel()
    for i, axis in enumerate(axes):
        axis.axis("off")
        if i < len(images):
            image = np.asarray(images[i]).squeeze()
            axis.imshow(image, cmap="gray", vmin=0, vmax=255 if image.dtype == np.uint8 else 1)
            if titles is not None:
                axis.set_title(titles[i], fontsize=8)
    if suptitle:
        figure.suptitle(suptitle)
    figure.tight_layout()
    return figure


def faces_per_class_figure(images: np.ndarray, labels: np.ndarray, per_class: int = 6, seed: int = 0) -> Figure:
    """``per_class`` random faces of each class, one class per row."""
    rng = np.random.default_rng(seed)
    picked, titles = [], []
    for label, name in enumerate(CLASS_NAMES):
        indices = np.flatnonzero(labels == label)
        chosen = rng.choice(indices, min(per_class, len(indices)), replace=False) if len(indices) else []
        for j in range(per_class):
            picked.append(images[chosen[j]] if j < len(chosen) else np.zeros_like(images[0]))
            titles.append(name if j == 0 else "")
    return face_grid(picked, titles, columns=per_class)


def class_balance_figure(counts) -> Figure:
    """Bars of faces per class for each split: ``counts`` is a pandas DataFrame, classes x splits."""
    figure = Figure(figsize=(9, 4))
    axis = figure.subplots()
    fractions = counts / counts.sum(axis=0)
    width = 0.8 / len(counts.columns)
    positions = np.arange(len(counts.index))
    for i, split in enumerate(counts.columns):
        axis.bar(positions + (i - (len(counts.columns) - 1) / 2) * width, fractions[split], width=width,
                 label=f"{split} ({int(counts[split].sum()):,} faces)")
    axis.set_xticks(positions, counts.index)
    axis.set_ylabel("share of the split's faces")
    axis.legend()
    figure.tight_layout()
    return figure


def augmentation_figure(image: np.ndarray, transform, samples: int = 7, seed: int = 0) -> Figure:
    """A face and ``samples`` draws of a training transform on it (shown after undoing the normalisation)."""
    import torch

    from ferlib.transforms import denormalize

    torch.manual_seed(seed)
    tensor = torch.from_numpy(np.ascontiguousarray(image))[None]
    augmented = [denormalize(transform(tensor))[0].numpy() for _ in range(samples)]
    return face_grid([image] + augmented, ["original"] + [f"draw {i + 1}" for i in range(samples)],
                     columns=samples + 1)


def draw_faces(frame: np.ndarray, faces, colour=(0, 255, 0)) -> np.ndarray:
    """A copy of a BGR frame with each face's box and landmarks drawn."""
    canvas = frame.copy() if frame.ndim == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    thickness = max(1, canvas.shape[1] // 320)
    for face in faces:
        x, y, w, h = face.box
        cv2.rectangle(canvas, (x, y), (x + w, y + h), colour, thickness)
        for px, py in face.landmarks:
            cv2.circle(canvas, (int(px), int(py)), thickness + 1, (0, 0, 255), -1)
    return canvas


def detections_figure(frames: dict[str, tuple[np.ndarray, list]], columns: int = 3) -> Figure:
    """Frames with their detections side by side: ``{title: (BGR frame, faces)}``."""
    rows = max(1, -(-len(frames) // columns))
    figure = Figure(figsize=(5 * columns, 3.2 * rows))
    axes = np.atleast_1d(figure.subplots(rows, columns)).ravel()
    for axis in axes:
        axis.axis("off")
    for axis, (title, (frame, faces)) in zip(axes, frames.items()):
        axis.imshow(cv2.cvtColor(draw_faces(frame, faces), cv2.COLOR_BGR2RGB))
        axis.set_title(title, fontsize=9)
    figure.tight_layout()
    return figure


def table_heatmap(table, title: str = "", fmt: str = ".2f", figsize=(8, 5)) -> Figure:
    """A pandas DataFrame as an annotated heatmap (rows and columns labelled by its index and columns)."""
    import seaborn as sns

    figure = Figure(figsize=figsize)
    axis = figure.subplots()
    sns.heatmap(table, annot=True, fmt=fmt, cmap="Blues", cbar=False, ax=axis)
    axis.set_title(title)
    figure.tight_layout()
    return figure


def alignment_steps_figure(frame: np.ndarray, face, framing, size: int = 48) -> Figure:
    """How ``ferlib.faces.align_face`` turns a detection into a training-style crop: the detection, the frame turned
    so the eyes are level (with the crop's square drawn), and the final size x size grayscale crop."""
    import math

    from ferlib.faces import align_face, alignment_matrix

    matrix = alignment_matrix(face, framing, size)
    angle = math.degrees(math.atan2(-matrix[1, 0], matrix[0, 0]))  # OpenCV's sense: anticlockwise on screen
    scale = math.hypot(matrix[0, 0], matrix[1, 0])
    centre = face.eyes.mean(axis=0) if face.eyes is not None else np.array(face.box[:2]) + np.array(face.box[2:]) / 2
    level = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, 1.0)
    levelled = cv2.warpAffine(frame, level, (frame.shape[1], frame.shape[0]), borderMode=cv2.BORDER_REPLICATE)
    # the crop's corners, mapped back from crop pixels to the levelled frame
    inverse = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0], [size, 0], [size, size], [0, size]], np.float64)
    in_frame = corners @ inverse[:, :2].T + inverse[:, 2]
    in_levelled = in_frame @ level[:, :2].T + level[:, 2]
    levelled = levelled.copy()
    cv2.polylines(levelled, [in_levelled.astype(np.int32)], True, (0, 255, 0), max(1, frame.shape[1] // 320))
    figure = Figure(figsize=(13, 3.6))
    axes = figure.subplots(1, 3, gridspec_kw={"width_ratios": [frame.shape[1] / frame.shape[0]] * 2 + [1]})
    panels = [(draw_faces(frame, [face]), "1. detection (box, landmarks)"),
              (levelled, f"2. turned {angle:+.1f} degrees: eyes level; the crop (x{scale:.2f})"),
              (align_face(frame, face, framing, size), f"3. the {size}x{size} crop the model sees")]
    for axis, (image, title) in zip(axes, panels):
        axis.imshow(image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2RGB), cmap="gray")
        axis.set_title(title, fontsize=9)
        axis.axis("off")
    figure.tight_layout()
    return figure


def framing_figure(images: np.ndarray, framings: dict) -> Figure:
    """The mean of FER images with each detector's measured eye points and box centre drawn on it."""
    mean_face = np.asarray(images, np.float64).mean(axis=0)
    figure = Figure(figsize=(4.5, 4.5))
    axis = figure.subplots()
    axis.imshow(mean_face, cmap="gray")
    for (name, framing), marker in zip(framings.items(), "o^s"):
        cx, cy = framing.eye_center
        half = framing.eye_distance / 2
        axis.plot([cx - half, cx + half], [cy, cy], marker, label=f"{name}: eyes", markersize=6)
        axis.plot(*framing.box_center, marker, fillstyle="none", markersize=8, label=f"{name}: box centre")
    axis.set_title(f"mean of {len(images):,} FER images, measured framing", fontsize=9)
    axis.legend(fontsize=7, loc="lower center")
    axis.axis("off")
    figure.tight_layout()
    return figure


def timeline_figure(series: dict, labelled: dict | None = None, ylabel: str = "p(happiness)") -> Figure:
    """Lines of a value per frame (``{name: (frames, values)}``), with labelled frame ranges shaded."""
    figure = Figure(figsize=(10, 3.5))
    axis = figure.subplots()
    for (first, last), label in (labelled or {}).items():
        axis.axvspan(first, last, alpha=0.12, color="green" if label == "happiness" else "grey")
        axis.text((first + last) / 2, 1.02, label, ha="center", fontsize=8)
    for name, (frames, values) in series.items():
        axis.plot(frames, values, label=name)
    axis.set_ylim(0, 1.08)
    axis.set_xlabel("frame")
    axis.set_ylabel(ylabel)
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def grouped_bars_figure(series: dict[str, dict[str, float]], title: str = "", ylabel: str = "",
                        percent: bool = True, decimals: int = 1, figsize=(9, 4)) -> Figure:
    """Bars grouped by key, one colour per series: ``{series name: {group: value}}`` (values in [0, 1] shown as
    percentages with ``percent``); a group a series lacks gets no bar."""
    groups = list(dict.fromkeys(group for values in series.values() for group in values))
    figure = Figure(figsize=figsize)
    axis = figure.subplots()
    positions = np.arange(len(groups))
    width = 0.8 / max(len(series), 1)
    scale = 100 if percent else 1
    for i, (name, values) in enumerate(series.items()):
        shown = [g for g in groups if g in values]
        bars = axis.bar(positions[[groups.index(g) for g in shown]] + (i - (len(series) - 1) / 2) * width,
                        [scale * values[g] for g in shown], width=width, label=name)
        axis.bar_label(bars, labels=[f"{v:.{decimals}f}" for v in bars.datavalues], fontsize=7, padding=1)
    axis.set_xticks(positions, groups)
    axis.set_ylabel(f"{ylabel} (%)" if percent and ylabel else ylabel)
    axis.set_title(title)
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def wrapped_label(name: str, width: int = 13) -> str:
    """A model's name broken into lines of about ``width`` characters after its underscores and spaces, so that
    neighbouring bar groups' labels do not run into each other ("ferplus_cnn_balanced" -> "ferplus_cnn_\nbalanced")."""
    lines = [""]
    for piece in re.findall(r"[^_ ]+[_ ]*|[_ ]+", name):
        if lines[-1] and len(lines[-1]) + len(piece.rstrip()) > width:
            lines[-1] = lines[-1].rstrip()
            lines.append("")
        lines[-1] += piece
    return "\n".join(line.rstrip() for line in lines)


def cross_dataset_figure(rows: list[dict], quoted: dict[str, float], titles: dict[str, str],
                         quoted_name: str = "fer\n(quoted)") -> Figure:
    """Accuracy on faces from outside FER: a bar per set (``titles``: set key -> title) for each model and input
    path of ``rows`` (``benchmarks/cross_dataset.py``'s results), and another library's ``quoted`` figures (set key ->
    accuracy) as a group of their own."""
    keys = [key for key in quoted if any(row["set"] == key for row in rows)]
    series = {titles[key]: {f"{wrapped_label(row['model'])}\n{row['path']}": row["accuracy"] for row in rows
                            if row["set"] == key}
              for key in keys}
    for key in keys:
        series[titles[key]][quoted_name] = quoted[key]
    groups = len({(row["model"], row["path"]) for row in rows}) + 1
    figure = grouped_bars_figure(series, "accuracy on faces from outside FER", "accuracy",
                                 figsize=(max(8.0, 1.6 * groups), 4.5))
    axis = figure.axes[0]
    axis.set_ylim(0, 100)  # room above the bars for the legend
    axis.legend(fontsize=8, ncol=2, loc="upper left")
    return figure


def label_modes_figure(measured: dict[str, float], paper: dict[str, float], measured_name: str = "this project",
                       paper_name: str = "FER+ paper (VGG13)") -> Figure:
    """Test accuracy per label mode beside the paper's: both ``{mode: accuracy in [0, 1]}``."""
    figure = grouped_bars_figure({measured_name: measured, paper_name: paper},
                                 "test accuracy per label mode (majority protocol)", "accuracy", decimals=2)
    axis = figure.axes[0]
    values = [100 * v for v in (*measured.values(), *paper.values())]
    if values:  # the differences are a few points: start the axis near them, not at 0
        axis.set_ylim(max(0.0, min(values) - 10), min(100.0, max(values) + 4))
    return figure


def per_class_recall_figure(runs: dict[str, dict], title: str = "recall per class (majority protocol)") -> Figure:
    """Recall of each class for several runs side by side: ``{run name: classification metrics}`` (the
    ``per_class`` dict of ``ferlib.evaluate.classification_metrics``, e.g. a report's ``test["majority"]``)."""
    series = {name: {c: metrics["per_class"][c]["recall"] for c in CLASS_NAMES} for name, metrics in runs.items()}
    figure = grouped_bars_figure(series, title, "recall", figsize=(11, 4))
    figure.axes[0].set_ylim(0, 105)
    return figure


def search_trials_figure(trials: list[dict], parameters=("lr", "weight_decay", "dropout")) -> Figure:
    """Validation accuracy of each random-search trial against each searched setting (``ferlib.tune``'s results)."""
    figure = Figure(figsize=(3.4 * len(parameters), 3.2))
    for axis, parameter in zip(np.atleast_1d(figure.subplots(1, len(parameters))), parameters):
        axis.scatter([t[parameter] for t in trials], [t["valid_accuracy"] for t in trials])
        axis.set_xscale("linear" if parameter == "dropout" else "log")
        axis.set_xlabel(parameter)
        axis.set_ylabel("validation accuracy")
    figure.tight_layout()
    return figure


def models_accuracy_figure(models: dict[str, tuple[str, float]], goals: dict[str, float] | None = None,
                           title: str = "test accuracy (majority protocol)") -> Figure:
    """One horizontal bar per model, coloured by its role: ``{model: (role, accuracy in [0, 1])}`` in the order
    given (roles such as "teacher", "ensemble", "student"), with ``goals`` ({label: accuracy}) as vertical lines."""
    names = list(models)
    roles = list(dict.fromkeys(role for role, _ in models.values()))
    colours = {role: f"C{i}" for i, role in enumerate(roles)}
    figure = Figure(figsize=(10.5, 0.5 + 0.32 * max(len(names), 1)))
    axis = figure.subplots()
    values = [100 * models[name][1] for name in names]
    bars = axis.barh(np.arange(len(names)), values, color=[colours[models[name][0]] for name in names])
    axis.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=7, padding=2)
    axis.set_yticks(np.arange(len(names)), names, fontsize=8)
    axis.invert_yaxis()  # the first model on top
    handles = [axis.axvline(100 * goal, color="k", linestyle=("--", ":", "-.")[i % 3], linewidth=1, label=label)
               for i, (label, goal) in enumerate((goals or {}).items())]
    handles += [Patch(color=colours[role], label=role) for role in roles]
    if values:  # the differences are a point or two: start near them, not at 0
        low = min(values + [100 * g for g in (goals or {}).values()])
        high = max(values + [100 * g for g in (goals or {}).values()])
        axis.set_xlim(max(0.0, low - 3), min(100.0, high + 1.5))
    axis.set_xlabel("accuracy (%)")
    axis.set_title(title)
    axis.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside, over no bar
    figure.tight_layout()
    return figure
