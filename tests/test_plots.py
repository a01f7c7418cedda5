"""ferlib.plots' bar charts for the enhancement results: the bars show the numbers they are given."""

from __future__ import annotations

import json

import pytest

from conftest import REPO_ROOT
from ferlib.data import CLASS_NAMES
from ferlib.plots import (cross_dataset_figure, grouped_bars_figure, label_modes_figure, models_accuracy_figure,
                          per_class_recall_figure)

REPORTS = REPO_ROOT / "reports" / "enhancements"


def bar_heights(figure) -> list[list[float]]:
    """Heights of each series' bars (one container per series), in drawing order."""
    return [[bar.get_height() for bar in container] for container in figure.axes[0].containers]


def test_label_modes_beside_the_paper():
    measured = {"majority": 0.8093, "crossentropy": 0.8207}
    paper = {"majority": 0.8385, "crossentropy": 0.8472}
    figure = label_modes_figure(measured, paper)
    assert bar_heights(figure) == [pytest.approx([80.93, 82.07]), pytest.approx([83.85, 84.72])]
    axis = figure.axes[0]
    assert [t.get_text() for t in axis.get_xticklabels()] == ["majority", "crossentropy"]
    assert [t.get_text() for t in axis.get_legend().get_texts()] == ["this project", "FER+ paper (VGG13)"]
    assert axis.get_ylim()[0] <= 80.93 and axis.get_ylim()[1] >= 84.72  # every bar's top is on the chart


def test_per_class_recall_from_the_committed_reports():
    runs = {name: json.loads((REPORTS / f"{name}.json").read_text())["test"]["majority"]
            for name in ("label_crossentropy", "oversample")}
    figure = per_class_recall_figure(runs)
    expected = [[100 * metrics["per_class"][c]["recall"] for c in CLASS_NAMES] for metrics in runs.values()]
    assert bar_heights(figure) == [pytest.approx(row) for row in expected]
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == list(CLASS_NAMES)


def test_a_missing_value_gets_no_bar_at_its_groups_place():
    figure = grouped_bars_figure({"a": {"x": 0.5, "y": 0.25}, "b": {"y": 0.75}})
    first, second = figure.axes[0].containers
    assert [bar.get_height() for bar in second] == [75.0]
    assert second[0].get_x() > first[1].get_x()  # b's only bar stands in group y, beside a's


def test_cross_dataset_bars_from_the_committed_report_beside_the_quoted_figures():
    report = json.loads((REPO_ROOT / "reports" / "cross_dataset" / "cross_dataset.json").read_text())
    rows = [row for row in report["results"] if row["path"] == "direct"]
    quoted = report["fer_quoted_not_measured"]
    figure = cross_dataset_figure(rows, quoted, {key: key.upper() for key in quoted})
    heights = bar_heights(figure)
    assert len(heights) == len(quoted)  # a series per set
    for key, series in zip(quoted, heights):
        expected = [100 * row["accuracy"] for row in rows if row["set"] == key] + [100 * quoted[key]]
        assert series == pytest.approx(expected)
    labels = [t.get_text() for t in figure.axes[0].get_xticklabels()]
    assert labels[-1] == "fer\n(quoted)" and labels[0] == f"{rows[0]['model']}\ndirect"


def test_models_accuracy_bars_are_coloured_by_role_with_the_goals_as_lines():
    models = {"teacher a": ("teacher", 0.855), "ensemble": ("ensemble", 0.874), "teacher b": ("teacher", 0.84),
              "student": ("student", 0.861)}
    figure = models_accuracy_figure(models, {"goal, one network": 0.88})
    axis = figure.axes[0]
    bars = axis.containers[0]
    assert [bar.get_width() for bar in bars] == pytest.approx([85.5, 87.4, 84.0, 86.1])
    assert [t.get_text() for t in axis.get_yticklabels()] == list(models)
    colours = [bar.get_facecolor() for bar in bars]
    assert colours[0] == colours[2] and len({colours[0], colours[1], colours[3]}) == 3  # one colour per role
    assert [line.get_xdata()[0] for line in axis.get_lines()] == pytest.approx([88.0])
    assert axis.get_xlim()[0] <= 84.0 and axis.get_xlim()[1] >= 88.0  # every bar's end and the goal are on the chart
    legend = axis.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["goal, one network", "teacher", "ensemble", "student"]
    assert [patch.get_facecolor() for patch in legend.get_patches()] == [colours[0], colours[1], colours[3]]
