"""python -m ferlib.train on bad input and bad luck: each case ends in the right result or in one line on stderr with
a non-zero exit (2 for bad input), never a traceback, and never leaves a file that looks complete but is not."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO_ROOT
from ferlib.train import LOCK_NAME, TrainConfig, check_run_name, load_config, main, reported_write, train
from ferlib.tune import random_search

TINY = dict(width=0.25, epochs=1, batch_size=8, num_workers=0, bf16=False, channels_last=False, ema_decay=0.0)


def cli_args(data: Path, runs: Path, *args: str, **settings) -> list[str]:
    """Command-line arguments for a tiny training (TINY, then ``settings``) of the synthetic dataset into ``runs``."""
    values = {"data_dir": str(data), "runs_dir": str(runs), **TINY, **settings}
    sets = [f"{k}={json.dumps(v) if isinstance(v, (str, bool)) else v}" for k, v in values.items()]
    return [item for s in sets for item in ("--set", s)] + ["--no-progress", *args]


def one_line(err: str) -> str:
    """The single line a failure may print on stderr."""
    assert "Traceback" not in err, err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    return err.strip()


def trained_run(data: Path, runs: Path) -> Path:
    """A finished one-epoch run named "default" in ``runs``."""
    train(TrainConfig(data_dir=str(data), runs_dir=str(runs), run_name="default", **TINY), progress=False)
    return runs / "default"


# 1. types

def test_set_values_are_toml_and_must_have_the_settings_type():
    config = load_config(None, ["bf16=false", "oversample=true", "lr=1", "run_name=2024", "max_faces=none",
                                "label_mode=no_unknown", 'data_dir="my data"'])
    assert (config.bf16, config.oversample, config.run_name, config.data_dir) == (False, True, "2024", "my data")
    assert type(config.lr) is float and config.lr == 1.0 and config.max_faces is None
    for setting, expected in [("bf16=False", "true or false"), ("oversample=no", "true or false"),
                              ("bf16=1", "true or false"), ("lr=abc", "a number"), ("lr=true", "a number"),
                              ("epochs=1.5", "a whole number"), ("epochs=true", "a whole number"),
                              ("max_faces=many", "a whole number or none"), ("label_mode=3", None)]:
        if expected is None:  # a string setting keeps the text it was given, and then fails its range check
            with pytest.raises(ValueError, match="label_mode = '3': expected one of"):
                load_config(None, [setting])
            continue
        with pytest.raises(ValueError, match=f"^--set {setting}: expected {expected}$"):
            load_config(None, [setting])


def test_config_file_values_must_have_the_settings_type(tmp_path):
    config = tmp_path / "c.toml"
    for text, message in [('lr = "fast"', 'lr = "fast": expected a number'),
                          ('bf16 = "no"', 'bf16 = "no": expected true or false'),
                          ("epochs = 2.0", "epochs = 2.0: expected a whole number"),
                          ("run_name = 5", "run_name = 5: expected a string"),
                          ("[model]\nwidth = 1", 'model = {"width": 1}: expected a string')]:
        config.write_text(text + "\n")
        with pytest.raises(ValueError) as error:
            load_config(config)
        assert str(error.value).startswith(f"{config}: {message}"), error.value
    config.write_text("width = 1\nbf16 = false\n")
    assert load_config(config).width == 1.0 and load_config(config).bf16 is False
    config.write_text("learning_rate = 0.1\n")
    with pytest.raises(ValueError, match=r"unknown setting\(s\) learning_rate"):
        load_config(config)
    with pytest.raises(ValueError, match=r"^--set lrr=\.\.\.: unknown setting \(did you mean lr\?\)"):
        load_config(None, ["lrr=0.1"])


def test_command_line_reports_a_wrong_type_in_one_line(tmp_path, capsys):
    assert main(["--set", "bf16=False", "--set", f"runs_dir={json.dumps(str(tmp_path / 'runs'))}"]) == 2
    assert one_line(capsys.readouterr().err) == "error: --set bf16=False: expected true or false"
    config = tmp_path / "c.toml"
    config.write_text('lr = "fast"\n')
    assert main(["--config", str(config)]) == 2
    assert one_line(capsys.readouterr().err) == f'error: {config}: lr = "fast": expected a number'
    assert not (tmp_path / "runs").exists()


# 2. ranges

@pytest.mark.parametrize("setting, expected", [
    ("epochs=-1", "a whole number >= 1"), ("epochs=0", "a whole number >= 1"),
    ("max_faces=0", "a whole number >= 1, or none"), ("batch_size=0", "a whole number >= 1"),
    ("lr=0", "a number > 0"), ("lr=-0.1", "a number > 0"), ("lr=nan", "a number > 0"), ("lr=inf", "a number > 0"),
    ("weight_decay=-1", "a number >= 0"), ("dropout=1", r"a number in \[0, 1\)"),
    ("dropout=-0.1", r"a number in \[0, 1\)"), ("ema_decay=1", r"a number in \[0, 1\)"),
    ("patience=0", "a whole number >= 1"), ("label_smoothing=1", r"a number in \[0, 1\)"),
    ("augment_p=1.5", r"a probability in \[0, 1\]"), ("num_workers=-1", "a whole number >= 0"),
    ("max_minutes=0", "a number > 0, or none"), ("width=0", "a number from 0.05 to 4.0"), ("in_channels=2", "1 .grayscale."),
    ("seed=-1", "a whole number in"), ("label_mode=votes", "one of majority"), ("optimizer=sgd", "adam or adamw"),
    ("scheduler=step", "onecycle, cosine or none"), ("augmentation=heavy", "one of none"), ("model=resnet", "one of"),
    ("small_size=64", "a whole number of pixels from 16 to 48"), ("small_size=8", "a whole number of pixels from 16"),
    ("small_size_epochs=-1", r"a whole number of epochs from 0 \(off\) to epochs \(40\)"),
    ("small_size_epochs=41", r"a whole number of epochs from 0 \(off\) to epochs \(40\)"),
])
def test_settings_out_of_range_are_named(setting, expected):
    key, value = setting.split("=")
    with pytest.raises(ValueError, match=f"^{key} = .*: expected {expected}"):
        load_config(None, [setting])


def test_out_of_range_stops_before_anything_is_written(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(cli_args(tmp_path / "no-data", runs, epochs=0)) == 2
    assert one_line(capsys.readouterr().err) == "error: epochs = 0: expected a whole number >= 1"
    assert not runs.exists()
    with pytest.raises(ValueError, match="max_faces = 0"):  # the same checks for notebooks calling train()
        train(TrainConfig(max_faces=0, runs_dir=str(runs)))


# 3. one run per folder

def test_training_a_run_again_is_refused_unless_resumed(tiny_dataset, tmp_path, capsys):
    run = trained_run(tiny_dataset, tmp_path / "runs")
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    assert main(cli_args(tiny_dataset, tmp_path / "runs")) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"error: {run}: holds an earlier run (last.pt, best.safetensors, summary.json")
    assert "use --resume to continue it, or another --run-name" in line
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # nothing replaced, no events added
    assert main(cli_args(tiny_dataset, tmp_path / "runs", "--run-name", "second")) == 0
    assert (tmp_path / "runs" / "second" / "summary.json").is_file()
    assert not list((tmp_path / "runs").glob(f"*/{LOCK_NAME}"))


def test_run_names_must_be_one_folder_inside_runs_dir(tiny_dataset, tmp_path, capsys):
    runs = tmp_path / "a" / "runs"
    for name in ["../../x", "a/b", "..", ".", "", "/tmp/x", "a\\b"]:
        assert main(cli_args(tiny_dataset, runs, "--run-name", name)) == 2, name
        assert "expected a single folder name" in one_line(capsys.readouterr().err)
        assert main(cli_args(tiny_dataset, runs, run_name=name)) == 2, name
        assert "run_name" in one_line(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.rglob("*")) == [], "nothing written anywhere"
    check_run_name("enhancements/seed", nested=True)  # notebooks and ferlib.tune group runs one level down
    with pytest.raises(ValueError, match="inside runs_dir"):
        check_run_name("group/../../x", nested=True)


def test_a_run_folder_in_use_by_a_live_process_is_refused(tiny_dataset, tmp_path, capsys):
    run = trained_run(tiny_dataset, tmp_path / "runs")
    (run / LOCK_NAME).write_text(f"{os.getpid()} {socket.gethostname()}\n")  # this process runs
    assert main(cli_args(tiny_dataset, tmp_path / "runs", "--resume")) == 1
    assert one_line(capsys.readouterr().err).startswith(f"error: {run}: in use by another training (process "
                                                        f"{os.getpid()} on {socket.gethostname()}")
    assert (run / LOCK_NAME).is_file(), "another process's lock is left alone"


def test_a_stale_lock_is_taken_over_with_a_warning(tiny_dataset, tmp_path, capsys):
    run = trained_run(tiny_dataset, tmp_path / "runs")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # its id names no process any more
    (run / LOCK_NAME).write_text(f"{gone.pid} {socket.gethostname()}\n")
    assert main(cli_args(tiny_dataset, tmp_path / "runs", "--resume")) == 0
    assert f"taking over the lock of process {gone.pid}, which no longer runs" in capsys.readouterr().err
    assert not (run / LOCK_NAME).exists()


def test_a_search_never_reuses_the_trials_of_an_earlier_one(tmp_path):
    (tmp_path / "search" / "trial_00").mkdir(parents=True)
    base = TrainConfig(runs_dir=str(tmp_path))
    with pytest.raises(ValueError, match="holds the trials of an earlier search; choose another --name"):
        random_search(base, trials=1, name="search")
    with pytest.raises(ValueError, match="inside runs_dir"):
        random_search(base, trials=1, name="../elsewhere")


# 4. the export path is checked before training

def test_an_export_path_that_cannot_be_written_is_refused_before_training(tiny_dataset, tmp_path, capsys):
    runs = tmp_path / "runs"
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    for export, message in [(tmp_path, "is a folder"), (a_file / "model.safetensors", f"{a_file} is a file"),
                            (a_file / "sub" / "model.safetensors", f"{a_file} is a file")]:
        assert main(cli_args(tiny_dataset, runs, "--export", str(export))) == 2
        assert one_line(capsys.readouterr().err).startswith(f"error: --export {export}: {message}")
    assert not runs.exists(), "no training started"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_export_into_a_read_only_folder_is_refused_before_training(tiny_dataset, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        assert main(cli_args(tiny_dataset, tmp_path / "runs", "--export", str(locked / "m.safetensors"))) == 2
    finally:
        locked.chmod(0o755)
    assert "cannot be written there (Permission denied)" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "runs").exists() and not list(locked.iterdir())


def test_a_writable_export_path_leaves_no_probe_file_and_gets_the_model(tiny_dataset, tmp_path):
    export = tmp_path / "new" / "folder" / "m.safetensors"
    assert main(cli_args(tiny_dataset, tmp_path / "runs", "--export", str(export))) == 0
    assert sorted(p.name for p in export.parent.iterdir()) == ["m.safetensors"]


# 5. damaged checkpoints, devices

def test_resuming_from_a_damaged_or_foreign_checkpoint_is_one_line(tiny_dataset, tmp_path, capsys):
    run = trained_run(tiny_dataset, tmp_path / "runs")
    last = run / "last.pt"
    whole = last.read_bytes()
    last.write_bytes(whole[: len(whole) // 2])
    assert main(cli_args(tiny_dataset, tmp_path / "runs", "--resume")) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"error: {last}: truncated or damaged checkpoint") and "another run_name" in line
    torch.save({"config": {}, "trick": argparse.Namespace(a=1)}, last)  # weights_only=True refuses the object
    assert main(cli_args(tiny_dataset, tmp_path / "runs", "--resume")) == 2
    assert "holds Python objects that are not loaded" in one_line(capsys.readouterr().err)
    torch.save({"weights": torch.zeros(2)}, last)
    assert main(cli_args(tiny_dataset, tmp_path / "runs", "--resume")) == 2
    assert "not a checkpoint written by ferlib.train" in one_line(capsys.readouterr().err)
    assert not (run / LOCK_NAME).exists()


def test_a_device_this_machine_lacks_is_one_line(tiny_dataset, tmp_path, capsys, monkeypatch):
    for args in (["--device", "bogus"], ["--set", "device=bogus"]):
        assert main(cli_args(tiny_dataset, tmp_path / "runs", *args)) == 2
        assert one_line(capsys.readouterr().err) == "error: device 'bogus': expected auto, cpu, cuda, cuda:N or mps"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(cli_args(tiny_dataset, tmp_path / "runs", "--device", "cuda")) == 2
    assert "device 'cuda': CUDA is not available on this machine" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "runs").exists()


# 6. a full disk

def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tiny_dataset, tmp_path, capsys, monkeypatch):
    real_save, calls = torch.save, []

    def save_until_the_disk_is_full(obj, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 1:
            return real_save(obj, path, *args, **kwargs)
        Path(path).write_bytes(b"PK" + bytes(1000))  # what torch had written when the disk filled up
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 42600320 vs 42600208")

    monkeypatch.setattr(torch, "save", save_until_the_disk_is_full)
    run = tmp_path / "runs" / "default"
    assert main(cli_args(tiny_dataset, tmp_path / "runs", epochs=3)) == 1
    assert one_line(capsys.readouterr().err) == (f"error: cannot write {run / 'last.pt'}: [enforce fail at "
                                                 "inline_container.cc:626] . unexpected pos 42600320 vs 42600208 "
                                                 "(is the disk full?)")
    assert torch.load(run / "last.pt", weights_only=True)["state"]["epoch"] == 1, "the previous checkpoint is kept"
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith("events.")) == ["best.safetensors", "last.pt"]


def test_write_errors_name_the_file_and_the_reason(tmp_path):
    with pytest.raises(OSError, match=r"^cannot write x\.pt: No space left on device \(is the disk full\?\)$"):
        with reported_write("x.pt"):
            raise OSError(28, "No space left on device", str(tmp_path / ".x.123.partial.pt"))
    with pytest.raises(OSError, match=r"^cannot write x\.pt: Permission denied$"):
        with reported_write("x.pt"):
            raise PermissionError(13, "Permission denied")


# 7. Ctrl-C

@pytest.mark.skipif(os.name != "posix", reason="process groups and SIGINT")
def test_ctrl_c_during_training_says_what_was_kept_and_exits_130(tiny_dataset, tmp_path):
    command = [sys.executable, "-m", "ferlib.train", *cli_args(tiny_dataset, tmp_path / "runs", epochs=200,
                                                               patience=200, num_workers=1)]
    # its own process group, signalled as a whole like a terminal's Ctrl-C: the DataLoader worker gets it too
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        for line in process.stdout:
            if line.startswith("epoch 1:"):
                break
        os.killpg(process.pid, signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    run = tmp_path / "runs" / "default"
    assert process.returncode == 130, err
    line = one_line(err)
    assert line.startswith(f"interrupted: {run / 'last.pt'} keeps epoch ") and line.endswith(
        " of 200; run the same command with --resume to continue"), line
    epoch = int(line.split("keeps epoch ")[1].split()[0])
    assert torch.load(run / "last.pt", weights_only=True)["state"]["epoch"] == epoch >= 1
    assert not (run / LOCK_NAME).exists() and not list(run.glob(".*.partial.*"))


def test_ctrl_c_before_the_first_epoch_keeps_nothing_and_says_how_to_start_again(tiny_dataset, tmp_path, capsys,
                                                                                  monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("ferlib.train.load_split", interrupted)
    assert main(cli_args(tiny_dataset, tmp_path / "runs")) == 130
    assert one_line(capsys.readouterr().err).startswith("interrupted before the first epoch ended")
    assert not (tmp_path / "runs" / "default").exists(), "the empty run folder and its lock are removed"


# 8. hidden partial files of a killed training

def test_resuming_removes_the_partial_files_of_a_killed_training(tiny_dataset, tmp_path, capsys):
    run = trained_run(tiny_dataset, tmp_path / "runs")
    for name in (".last.k2j4x_1.partial.pt", ".best.8fh3z2.partial.safetensors"):
        (run / name).write_bytes(bytes(1000))
    (run / ".notes.abc.partial.txt").write_text("not ours")
    assert main(cli_args(tiny_dataset, tmp_path / "runs", "--resume")) == 0
    assert (f"removed 2 unfinished file(s) (0.0 MB) left in {run} by a training that was killed"
            in capsys.readouterr().err)
    assert sorted(p.name for p in run.glob(".*")) == [".notes.abc.partial.txt"]


def test_resuming_a_run_that_never_finished_an_epoch_starts_it_again(tiny_dataset, tmp_path, capsys):
    run = trained_run(tiny_dataset, tmp_path / "runs")
    for name in ("last.pt", "best.safetensors", "summary.json"):  # as left by Ctrl-C in the first epoch
        (run / name).unlink()
    assert main(cli_args(tiny_dataset, tmp_path / "runs")) == 2
    assert "holds an earlier run (TensorBoard events)" in one_line(capsys.readouterr().err)
    assert main(cli_args(tiny_dataset, tmp_path / "runs", "--resume")) == 0
    assert "no checkpoint at" in capsys.readouterr().err and (run / "summary.json").is_file()
