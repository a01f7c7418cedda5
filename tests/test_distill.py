"""Distillation (ferlib.distill and the training run that uses it), ensembles (ferlib.engine.EnsembleEngine and
``ferlib.evaluate --weights A B``) and logit adjustment (ferlib.adjust)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ferlib import adjust, distill, evaluate
from ferlib.data import CLASS_NAMES, NUM_CLASSES, load_dataset
from ferlib.distill import distillation_targets, load_teachers, teacher_paths, teacher_probabilities
from ferlib.engine import EnsembleEngine, TorchEngine
from ferlib.evaluate import dataset_images, predict_probabilities
from ferlib.models import SeedCNN, interpolate_models, load_model, save_model
from ferlib.train import build_loaders, build_training, load_config, train_one_epoch
from ferlib.transforms import build_transform
from test_train import CPU, tiny_config

CONTEMPT = CLASS_NAMES.index("contempt")


def tiny_model(seed: int, in_channels: int = 1) -> SeedCNN:
    torch.manual_seed(seed)
    return SeedCNN(in_channels=in_channels, width=0.25).eval()


def saved(model: SeedCNN, path) -> str:
    save_model(model, path, "seed_cnn", {"in_channels": model.features[0][0].in_channels, "width": 0.25})
    return str(path)


def test_targets_mix_the_faces_own_with_the_teachers():
    teacher = torch.full((2, NUM_CLASSES), 1 / NUM_CLASSES)
    classes = torch.tensor([1, 7])
    mixed = distillation_targets(classes, teacher, 0.25)
    assert torch.allclose(mixed, 0.75 * F.one_hot(classes, NUM_CLASSES) + 0.25 / NUM_CLASSES)
    votes = torch.tensor([[0.5, 0.5, 0, 0, 0, 0, 0, 0]]).float()
    assert torch.allclose(distillation_targets(votes, teacher[:1], 0.0), votes)
    assert torch.allclose(distillation_targets(votes, teacher[:1], 1.0), teacher[:1])
    assert torch.allclose(mixed.sum(dim=1), torch.ones(2))


def test_teachers_answer_on_the_face_and_its_mirror_image_averaged():
    images = torch.randn(4, 1, 48, 48)
    first, second = tiny_model(0), tiny_model(1)
    expected = sum(m(x).softmax(dim=1) for m in (first, second) for x in (images, images.flip(-1))) / 4
    assert torch.allclose(teacher_probabilities([first, second], images), expected, atol=1e-6)
    # temperature softens: the same logits divided by 3
    softened = sum(m(x).div(3).softmax(dim=1) for m in (first,) for x in (images, images.flip(-1))) / 2
    assert torch.allclose(teacher_probabilities([first], images, temperature=3.0), softened, atol=1e-6)


def test_a_three_channel_teacher_sees_the_gray_face_repeated():
    images = torch.randn(3, 1, 48, 48)
    rgb = tiny_model(2, in_channels=3)
    repeated = images.repeat(1, 3, 1, 1)
    expected = (rgb(repeated).softmax(dim=1) + rgb(repeated.flip(-1)).softmax(dim=1)) / 2
    assert torch.allclose(teacher_probabilities([rgb], images), expected, atol=1e-6)


def test_teacher_files_are_checked(tmp_path):
    assert teacher_paths(None) == [] and teacher_paths("") == []
    assert [p.name for p in teacher_paths("a.safetensors, b.safetensors")] == ["a.safetensors", "b.safetensors"]
    with pytest.raises(ValueError, match="none empty"):
        teacher_paths("a.safetensors,,b.safetensors")
    with pytest.raises(ValueError, match="missing.safetensors: model file not found"):
        load_teachers(str(tmp_path / "missing.safetensors"), CPU)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="teachers: .*junk.safetensors"):
        load_teachers(str(junk), CPU)
    teachers = load_teachers(saved(tiny_model(0), tmp_path / "t.safetensors"), CPU)
    assert len(teachers) == 1 and not teachers[0].training
    assert not any(p.requires_grad for p in teachers[0].parameters())


@pytest.mark.parametrize("setting, message", [
    (["teachers=a.safetensors", "label_mode=multi_target"], "teachers"),
    (["distill_weight=1.5"], "distill_weight"),
    (["distill_temperature=0"], "distill_temperature"),
])
def test_distillation_settings_are_checked(setting, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, setting)


def confident_teacher(path, answer: int) -> str:
    """A model that answers ``answer`` for every face (its last bias far above the others)."""
    model = tiny_model(3)
    with torch.no_grad():
        model.head[-1].bias[answer] = 50.0
    return saved(model, path)


def test_a_student_learns_its_teachers_answer(tiny_dataset, tmp_path):
    """With the teachers' share at 1 the faces' own votes are ignored: a student of a teacher that answers contempt
    for everything comes to answer contempt, which none of the faces' votes say; without distillation it does not."""
    answers = {}
    for weight in (0.0, 1.0):
        config = tiny_config(tiny_dataset, tmp_path, ema_decay=0.0, augmentation="none", scheduler="none", lr=0.01,
                             dropout=0.0, teachers=confident_teacher(tmp_path / "teacher.safetensors", CONTEMPT),
                             distill_weight=weight)
        torch.manual_seed(0)
        data = build_loaders(config)
        parts = build_training(config, CPU, len(data.loader), data.train_labels)
        assert len(parts.teachers) == 1
        for _ in range(4):
            train_one_epoch(parts, data.loader, config, CPU)
        probabilities = predict_probabilities(parts.model, dataset_images(data.loader.dataset))
        answers[weight] = (probabilities.argmax(dim=1) == CONTEMPT).float().mean().item()
    assert answers[1.0] > 0.9, answers
    assert answers[0.0] < 0.5, answers
    # the epoch's training accuracy is measured against the faces' own classes (none is contempt), not the teachers'
    assert train_one_epoch(parts, data.loader, config, CPU)["train_accuracy"] < 0.5
    with pytest.raises(ValueError, match="class_weighted_loss"):
        load_config(None, ["teachers=a.safetensors", "class_weighted_loss=true"])


def test_an_ensemble_answers_the_mean_of_its_members():
    members = [TorchEngine(tiny_model(0)), TorchEngine(tiny_model(1))]
    faces = np.random.default_rng(0).integers(0, 256, (5, 48, 48), dtype=np.uint8)
    expected = (members[0].predict(faces) + members[1].predict(faces)) / 2
    assert np.allclose(EnsembleEngine(members).predict(faces), expected, atol=1e-6)
    with pytest.raises(ValueError, match="at least one"):
        EnsembleEngine([])


def biased_model(path, biases: dict[int, float]) -> str:
    """A tiny model whose answer its last layer's biases decide."""
    model = tiny_model(5)
    with torch.no_grad():
        model.head[-1].weight.zero_()
        for answer, bias in biases.items():
            model.head[-1].bias[answer] = bias
    return saved(model, path)


def test_evaluate_scores_several_weights_as_one_ensemble(tiny_dataset, tmp_path, capsys):
    """Alone, the first model answers happiness (p 0.74) and the second neutral (p 1.0); their mean answers
    neutral (0.52 against 0.37), which neither the first alone nor a vote between them would."""
    happy = biased_model(tmp_path / "happy.safetensors", {1: 3.0})
    neutral = biased_model(tmp_path / "neutral.safetensors", {0: 50.0})
    answered = {}
    for name, weights in {"happy": [happy], "ensemble": [happy, neutral]}.items():
        out = tmp_path / f"{name}.json"
        assert evaluate.main(["--weights", *weights, "--data", str(tiny_dataset), "--split", "test", "--json",
                              str(out), "--no-progress", "--device", "cpu", "--tta"]) == 0
        report = json.loads(out.read_text())
        confusion = np.array(report["protocols"]["majority"]["confusion"])
        answered[name] = int(confusion.sum(axis=0).argmax())
        assert confusion.sum(axis=0).max() == confusion.sum()  # one answer for every face
    assert answered == {"happy": 1, "ensemble": 0}
    assert report["weights"] == [happy, neutral] and len(report["model"]["ensemble"]) == 2
    assert f"{happy} + {neutral} on" in capsys.readouterr().out


def test_logit_adjustment_favours_rare_classes_by_their_prior():
    priors = np.array([0.5, 0.3, 0.1, 0.05, 0.03, 0.01, 0.009, 0.001])
    probabilities = np.array([[0.40, 0.30, 0.1, 0.1, 0.05, 0.02, 0.02, 0.01]])
    assert adjust.adjusted_predictions(probabilities, priors, 0.0)[0] == 0
    # at tau = 1 the answer is arg max of p / prior: contempt's 0.01 / 0.001 = 10 beats every other ratio
    assert adjust.adjusted_predictions(probabilities, priors, 1.0)[0] == CONTEMPT


def test_tau_is_chosen_within_the_allowed_accuracy_loss():
    sweep = [{"tau": 0.0, "accuracy": 0.80, "f1_macro": 0.50}, {"tau": 0.5, "accuracy": 0.796, "f1_macro": 0.55},
             {"tau": 1.0, "accuracy": 0.75, "f1_macro": 0.60}]
    assert adjust.choose_tau(sweep, 0.005)["tau"] == 0.5
    assert adjust.choose_tau(sweep, 0.001)["tau"] == 0.0
    assert adjust.choose_tau(sweep, 0.1)["tau"] == 1.0
    # a model trained on balanced draws is most accurate at a negative tau: the drop is counted from there
    balanced = [{"tau": -0.5, "accuracy": 0.86, "f1_macro": 0.62}, {"tau": -0.25, "accuracy": 0.857, "f1_macro": 0.66},
                {"tau": 0.0, "accuracy": 0.82, "f1_macro": 0.68}]
    assert adjust.choose_tau(balanced, 0.005)["tau"] == -0.25
    assert adjust.choose_tau(balanced, 0.05)["tau"] == 0.0


def test_the_adjusted_model_file_answers_as_the_adjustment(tiny_dataset, tmp_path, capsys):
    weights = saved(tiny_model(4), tmp_path / "m.safetensors")
    out, report = tmp_path / "adjusted.safetensors", tmp_path / "adjust.json"
    assert adjust.main(["--weights", weights, "--data", str(tiny_dataset), "--out", str(out), "--tau", "0.7",
                        "--json", str(report)]) == 0
    adjusted, info = load_model(out)
    assert info["logit_adjustment"]["tau"] == 0.7
    priors = np.array(info["logit_adjustment"]["priors"])
    test = load_dataset(tiny_dataset, "test", "majority", build_transform(False))
    plain = predict_probabilities(load_model(weights)[0], dataset_images(test)).numpy()
    folded = predict_probabilities(adjusted, dataset_images(test)).numpy()
    assert (folded.argmax(axis=1) == adjust.adjusted_predictions(plain, priors, 0.7)).all()
    assert len(json.loads(report.read_text())["sweep"]) == len(adjust.TAU_GRID)
    capsys.readouterr()
    assert adjust.main(["--weights", str(tmp_path / "none.safetensors"), "--data", str(tiny_dataset),
                        "--out", str(tmp_path / "x.safetensors")]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    assert not (tmp_path / "x.safetensors").exists()
    assert adjust.main(["--weights", weights, "--data", str(tiny_dataset), "--out", weights]) == 2
    assert "same file as --weights" in capsys.readouterr().err
    for bad in (["--tau", "nan"], ["--max-accuracy-drop", "-0.1"]):
        with pytest.raises(SystemExit) as stop:
            adjust.main(["--weights", weights, "--data", str(tiny_dataset), "--out", str(out), *bad])
        assert stop.value.code == 2


def test_a_failed_report_leaves_no_adjusted_model(tiny_dataset, tmp_path, monkeypatch):
    weights = saved(tiny_model(4), tmp_path / "m.safetensors")

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(adjust, "write_json", full_disk)
    out = tmp_path / "adjusted.safetensors"
    assert adjust.main(["--weights", weights, "--data", str(tiny_dataset), "--out", str(out), "--tau", "0.5",
                        "--json", str(tmp_path / "adjust.json")]) == 2
    assert not out.exists() and not (tmp_path / "adjust.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_tau_is_chosen_on_validation_end_to_end(tiny_dataset, tmp_path):
    weights = saved(tiny_model(6), tmp_path / "m.safetensors")
    report = tmp_path / "adjust.json"
    assert adjust.main(["--weights", weights, "--data", str(tiny_dataset), "--out", str(tmp_path / "a.safetensors"),
                        "--max-accuracy-drop", "1", "--json", str(report)]) == 0
    sweep = json.loads(report.read_text())
    best = max(row["f1_macro"] for row in sweep["sweep"])
    assert sweep["chosen"]["f1_macro"] == best  # with any loss of accuracy allowed, the best macro F1 wins
    assert load_model(tmp_path / "a.safetensors")[1]["logit_adjustment"]["chosen_on"].startswith("valid")


def test_interpolation_share_and_tau_are_chosen_together_on_validation(tiny_dataset, tmp_path, capsys):
    base, tuned = saved(tiny_model(6), tmp_path / "base.safetensors"), saved(tiny_model(7), tmp_path / "t.safetensors")
    out, report = tmp_path / "mixed.safetensors", tmp_path / "adjust.json"
    assert adjust.main(["--weights", tuned, "--interpolate-from", base, "--data", str(tiny_dataset), "--out", str(out),
                        "--max-accuracy-drop", "1", "--json", str(report)]) == 0
    sweep = json.loads(report.read_text())
    assert len(sweep["sweep"]) == len(adjust.SHARE_GRID) * len(adjust.TAU_GRID)
    assert sweep["chosen"]["f1_macro"] == max(row["f1_macro"] for row in sweep["sweep"])
    chosen = sweep["chosen"]
    written, info = load_model(out)
    assert info["interpolation"] == {"from": base, "share": chosen["share"], "chosen_on": "valid (majority protocol)"}
    expected = interpolate_models(load_model(base)[0], load_model(tuned)[0], chosen["share"])
    priors = np.array(info["logit_adjustment"]["priors"])
    test = load_dataset(tiny_dataset, "test", "majority", build_transform(False))
    plain = predict_probabilities(expected, dataset_images(test)).numpy()
    folded = predict_probabilities(written, dataset_images(test)).numpy()
    assert (folded.argmax(axis=1) == adjust.adjusted_predictions(plain, priors, chosen["tau"])).all()
    assert "<- chosen" in capsys.readouterr().out
    # a fixed share and tau: one row, that row
    assert adjust.main(["--weights", tuned, "--interpolate-from", base, "--share", "0.3", "--tau", "0.1",
                        "--data", str(tiny_dataset), "--out", str(out)]) == 0
    assert load_model(out)[1]["interpolation"]["share"] == 0.3
    capsys.readouterr()
    for bad in (["--share", "0.5"], ["--interpolate-from", base, "--share", "2"],
                ["--interpolate-from", str(tmp_path / "missing.safetensors")]):
        assert adjust.main(["--weights", tuned, "--data", str(tiny_dataset), "--out", str(tmp_path / "x.safetensors"),
                            *bad]) == 2
        error = capsys.readouterr().err
        assert error.startswith("error: ") and error.strip().count("\n") == 0
    assert not (tmp_path / "x.safetensors").exists()
    wide = str(tmp_path / "wide.safetensors")
    save_model(SeedCNN(width=0.5), wide, "seed_cnn", {"width": 0.5})
    assert adjust.main(["--weights", tuned, "--interpolate-from", wide, "--data", str(tiny_dataset),
                        "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "not the same network" in capsys.readouterr().err


def test_an_onnx_teacher_answers_as_its_pytorch_model(tmp_path):
    from ferlib.export import export_model_onnx

    weights = saved(tiny_model(3), tmp_path / "t.safetensors")
    export_model_onnx(weights, None, int8=False)
    onnx_path = tmp_path / "t.onnx"
    assert onnx_path.is_file()
    images = torch.randn(5, 1, 48, 48).contiguous(memory_format=torch.channels_last)
    (onnx_teacher,) = load_teachers(str(onnx_path), CPU)
    expected = teacher_probabilities([tiny_model(3)], images, temperature=2.0)
    assert torch.allclose(teacher_probabilities([onnx_teacher], images, temperature=2.0), expected, atol=1e-5)
    # mixed with a PyTorch teacher: the mean of the two
    both = teacher_probabilities([onnx_teacher, tiny_model(4)], images)
    assert torch.allclose(both, (teacher_probabilities([tiny_model(3)], images)
                                 + teacher_probabilities([tiny_model(4)], images)) / 2, atol=1e-5)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="teachers: .*junk.onnx: not an ONNX model"):
        load_teachers(str(junk), CPU)
    with pytest.raises(ValueError, match="teachers: .*missing.int8.onnx: file not found"):
        load_teachers(str(tmp_path / "missing.int8.onnx"), CPU)


def test_a_student_learns_the_answer_in_its_teacher_targets_file(tiny_dataset, tmp_path, capsys):
    """Offline distillation: python -m ferlib.distill writes a teacher's probabilities on the training faces, and a
    student trained on them with the teachers' share at 1 comes to answer what the file says (contempt, which no
    face's votes say); the epoch's training accuracy is still measured against the faces' own classes."""
    out = tmp_path / "targets.npz"
    teacher = confident_teacher(tmp_path / "teacher.safetensors", CONTEMPT)
    assert distill.main(["--weights", teacher, "--data", str(tiny_dataset), "--out", str(out), "--no-progress"]) == 0
    assert "faces of the train split" in capsys.readouterr().out
    with np.load(out, allow_pickle=False) as archive:
        assert (archive["probabilities"].argmax(axis=1) == CONTEMPT).all()
        assert json.loads(str(archive["source"]))["weights"] == [teacher]
    config = tiny_config(tiny_dataset, tmp_path, ema_decay=0.0, augmentation="none", scheduler="none", lr=0.01,
                         dropout=0.0, teacher_targets=str(out), distill_weight=1.0)
    torch.manual_seed(0)
    data = build_loaders(config)
    parts = build_training(config, CPU, len(data.loader), data.train_labels)
    for _ in range(4):
        metrics = train_one_epoch(parts, data.loader, config, CPU)
    faces = data.loader.dataset.dataset
    probabilities = predict_probabilities(parts.model, dataset_images(faces))
    assert (probabilities.argmax(dim=1) == CONTEMPT).float().mean().item() > 0.9
    assert metrics["train_accuracy"] < 0.5


def test_teacher_targets_are_read_by_image_name_and_checked(tiny_dataset, tmp_path):
    names = np.array(["b.png", "a.png", "c.png"])
    probabilities = np.eye(NUM_CLASSES, dtype=np.float32)[[1, 2, 3]]
    path = tmp_path / "targets.npz"
    distill.save_teacher_targets(path, names, probabilities, {"weights": []})
    assert distill.load_teacher_targets(path, ["a.png", "c.png"]).argmax(dim=1).tolist() == [2, 3]
    with pytest.raises(ValueError, match=r"targets.npz: no probabilities for 1 of the 2 training faces, d.png first"):
        distill.load_teacher_targets(path, ["a.png", "d.png"])
    with pytest.raises(ValueError, match="missing.npz: file not found"):
        distill.load_teacher_targets(tmp_path / "missing.npz", ["a.png"])
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not an archive")
    with pytest.raises(ValueError, match="junk.npz: not a file of teachers' probabilities"):
        distill.load_teacher_targets(junk, ["a.png"])
    distill.save_teacher_targets(junk, names, probabilities * 2, {})
    with pytest.raises(ValueError, match="summing to 1"):
        distill.load_teacher_targets(junk, ["a.png"])
    config = tiny_config(tiny_dataset, tmp_path, teacher_targets=str(path))
    with pytest.raises(ValueError, match="no probabilities for"):
        build_loaders(config)


@pytest.mark.parametrize("setting", [
    ["teacher_targets=t.npz", "teachers=a.safetensors"],
    ["teacher_targets=t.npz", "label_mode=multi_target"],
    ["teacher_targets=t.npz", "distill_temperature=2"],
])
def test_teacher_targets_settings_are_checked(setting):
    with pytest.raises(ValueError, match="teacher_targets"):
        load_config(None, setting)
    with pytest.raises(ValueError, match="class_weighted_loss"):
        load_config(None, ["teacher_targets=t.npz", "class_weighted_loss=true"])
