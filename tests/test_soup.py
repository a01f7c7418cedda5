"""Model soups (ferlib.models.average_models, ferlib.soup): the mean of the weights, the greedy choice on validation,
and the command's files and errors."""
import json

import pytest
import torch

from ferlib.models import SeedCNN, average_models, interpolate_models, load_model, save_model
from ferlib.soup import greedy_soup, main
from test_distill import saved, tiny_model


def first_weight(model) -> float:
    return float(model.features[0][0].weight.detach().flatten()[0])


def with_first_weight(value: float) -> SeedCNN:
    model = tiny_model(0)
    with torch.no_grad():
        model.features[0][0].weight.flatten()[0] = value
    return model


def test_the_soup_is_the_mean_of_the_weights_and_batchnorm_statistics():
    models = [tiny_model(seed) for seed in (0, 1, 2)]
    with torch.no_grad():
        for i, model in enumerate(models):
            model.features[0][1].running_mean.fill_(float(i))
    soup = average_models(models)
    for key, value in soup.state_dict().items():
        if value.is_floating_point():
            expected = torch.stack([m.state_dict()[key] for m in models]).mean(dim=0)
            assert torch.allclose(value, expected, atol=1e-6), key
    assert torch.allclose(soup.features[0][1].running_mean, torch.ones(8))
    two = average_models(models[:2])
    halfway = interpolate_models(models[0], models[1], 0.5)
    assert all(torch.allclose(two.state_dict()[k].float(), halfway.state_dict()[k].float(), atol=1e-6)
               for k in two.state_dict())
    assert first_weight(models[0]) != first_weight(soup)  # the ingredients are left as they were


def test_networks_that_differ_make_no_soup():
    with pytest.raises(ValueError, match="not the same network"):
        average_models([tiny_model(0), SeedCNN(width=0.5)])
    with pytest.raises(ValueError, match="at least one"):
        average_models([])


def test_the_greedy_soup_keeps_an_ingredient_only_when_validation_does_not_fall():
    """Scored by how close the first weight is to 1: 0 and 2 are each 1 away, their mean is exact; 10 spoils it."""
    models = [with_first_weight(v) for v in (0.0, 2.0, 10.0)]
    chosen, steps = greedy_soup(models, lambda model: -abs(first_weight(model) - 1.0))
    assert chosen == [0, 1]
    assert [(s["ingredient"], s["kept"]) for s in steps] == [(0, True), (1, True), (2, False)]
    assert steps[1]["soup"] == pytest.approx(0.0, abs=1e-6) and steps[2]["soup"] == pytest.approx(-3.0, abs=1e-5)


def test_the_command_writes_the_soup_and_its_report(tiny_dataset, tmp_path, capsys):
    paths = [saved(tiny_model(seed), tmp_path / f"m{seed}.safetensors") for seed in (0, 1)]
    out, report = tmp_path / "soup.safetensors", tmp_path / "soup.json"
    assert main(["--weights", *paths, "--data", str(tiny_dataset), "--out", str(out), "--json", str(report)]) == 0
    written = json.loads(report.read_text())
    assert written["split"] == "valid" and len(written["steps"]) == 2 and written["chosen"]
    model, info = load_model(out)
    assert info["model"] == "seed_cnn" and info["soup"]["ingredients"] == written["chosen"]
    assert "uniform soup of all 2" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["one model", "different networks", "out is an ingredient"])
def test_bad_arguments_are_one_line_and_write_nothing(tiny_dataset, tmp_path, capsys, case):
    first = saved(tiny_model(0), tmp_path / "a.safetensors")
    other = tmp_path / "wide.safetensors"
    save_model(SeedCNN(width=0.5), other, "seed_cnn", {"width": 0.5})
    out = tmp_path / "soup.safetensors"
    weights = {"one model": [first], "different networks": [first, str(other)],
               "out is an ingredient": [first, str(other)]}[case]
    target = first if case == "out is an ingredient" else str(out)
    assert main(["--weights", *weights, "--data", str(tiny_dataset), "--out", target]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error
    assert {"one model": "expected 2 or more", "different networks": "not the same network",
            "out is an ingredient": "one of the --weights"}[case] in error
    assert not out.exists()
