"""Data-parallel training: the samplers that give each process its own faces, the process-group helpers, and a real
two-process run under torchrun on the CPU (gloo) on a tiny synthetic set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO_ROOT
from ferlib import distributed
from ferlib.distributed import SINGLE, WeightedShardSampler, World, world_from_env
from ferlib.models import load_model
from ferlib.train import RECORD_SAMPLES, TrainConfig, main, train_sampler

TWO = [World(rank=rank, local_rank=rank, size=2, backend="gloo") for rank in range(2)]


def test_each_rank_reads_its_own_share_of_the_faces_and_together_all_of_them():
    labels = torch.arange(11) % 3
    config = TrainConfig(seed=5)
    samplers = [train_sampler(config, labels, torch.Generator(), world) for world in TWO]
    for sampler in samplers:
        sampler.set_epoch(1)
    shares = [list(sampler) for sampler in samplers]
    assert len(shares[0]) == len(shares[1]) == 6  # equal shares (one face repeated) keep the processes in step
    assert set(shares[0]) | set(shares[1]) == set(range(11))
    assert len(set(shares[0]) & set(shares[1])) <= 1, "only the padding face may be read twice"
    assert shares[0] == list(samplers[0]), "an epoch's share depends on the epoch alone"
    samplers[0].set_epoch(2)
    assert list(samplers[0]) != shares[0], "another epoch, another order"


def test_oversampling_ranks_split_one_weighted_draw():
    labels = torch.tensor([0] * 90 + [7] * 10)
    config = TrainConfig(seed=3, oversample=True)
    samplers = [train_sampler(config, labels, torch.Generator(), world) for world in TWO]
    assert all(isinstance(s, WeightedShardSampler) for s in samplers)
    for sampler in samplers:
        sampler.set_epoch(4)
    shares = [list(sampler) for sampler in samplers]
    assert len(shares[0]) == len(shares[1]) == 50 and shares[0] != shares[1]
    draw = [index for pair in zip(*shares) for index in pair]
    rare = sum(labels[i] == 7 for i in draw) / len(draw)
    assert 0.3 < rare < 0.7, "the rare class is drawn about as often as the common one"
    assert shares == [list(s) for s in samplers], "the same draw when listed again (what the loader then reads)"


def test_a_single_process_keeps_its_samplers():
    labels = torch.arange(10) % 2
    assert type(train_sampler(TrainConfig(), labels, torch.Generator(), SINGLE)).__name__ == "RandomSampler"
    sampler = train_sampler(TrainConfig(oversample=True), labels, torch.Generator(), SINGLE)
    assert type(sampler).__name__ == "WeightedRandomSampler"


def test_torchrun_environment_picks_backend_and_device(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert distributed.launched_by_torchrun() and not distributed.is_main_process()
    world, device = world_from_env("cpu")
    assert (world.rank, world.size, world.backend, device.type) == (1, 2, "gloo", "cpu")
    assert world.describe(device) == "training on 2 processes (gloo, cpu)"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"local rank 1 needs cuda:1, but this machine has 1 CUDA device"):
        world_from_env("cuda")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert world_from_env("auto")[0].backend == "nccl" and world_from_env("cuda")[1] == torch.device("cuda", 1)
    with pytest.raises(ValueError, match="under torchrun each process picks its own device"):
        world_from_env("cuda:0")


def test_a_single_process_runs_main_only_actions_itself():
    assert distributed.on_main(SINGLE, lambda: 42) == 42
    assert distributed.gather_objects(SINGLE, "x") == ["x"] and distributed.broadcast_object(SINGLE, 1) == 1


def torchrun(data: Path, runs: Path, *args: str, **settings) -> subprocess.CompletedProcess:
    values = {**dict(data_dir=str(data), runs_dir=str(runs), width=0.25, epochs=1, batch_size=8, num_workers=0,
                     bf16=False, channels_last=False, ema_decay=0.0, device="cpu"), **settings}
    sets = [item for k, v in values.items()
            for item in ("--set", f"{k}={json.dumps(v) if isinstance(v, (str, bool)) else v}")]
    environment = {**os.environ, RECORD_SAMPLES: "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "ferlib.train", *sets, "--no-progress", *args]
    return subprocess.run(command, cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=240)


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="this PyTorch build has no gloo backend")
def test_two_processes_train_one_model_and_resume(tiny_dataset, tmp_path, capsys):
    runs, export = tmp_path / "runs", tmp_path / "model.safetensors"
    # a time budget this small stops the run after each epoch: a resumed run then trains exactly one more
    first = torchrun(tiny_dataset, runs, "--export", str(export), epochs=3, max_minutes=1e-6)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("training on 2 processes (gloo, cpu)") == 1, first.stdout
    assert first.stdout.count("epoch 1:") == 1, "only rank 0 reports"
    run = runs / "default"
    writers = {path.name.rsplit(".", 2)[1] for path in run.glob("events.out.tfevents.*")}
    assert len(writers) == 1, f"one process writes TensorBoard events, not {writers}"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["epochs"] == 1 and summary["stopped"].startswith("time budget")
    checkpoint = torch.load(run / "last.pt", weights_only=True)
    assert checkpoint["processes"] == 2 and len(checkpoint["rng"]["ranks"]) == 2
    assert not any(key.startswith("module.") for key in checkpoint["model"]), "saved without the DDP wrapper"
    model, metadata = load_model(export)
    assert model(torch.zeros(1, 1, 48, 48)).shape == (1, 8) and metadata["epoch"] == 1
    assert load_file(export).keys() == load_file(run / "best.safetensors").keys()
    shares = json.loads((run / "sampled_faces.epoch1.json").read_text())
    assert len(shares) == 2 and len(shares[0]) == len(shares[1]) > 0
    assert len(set(shares[0]) & set(shares[1])) <= 1, "the two ranks read different faces"

    again = torchrun(tiny_dataset, runs, "--resume", epochs=3, max_minutes=1e-6)
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = torch.load(run / "last.pt", weights_only=True)
    assert resumed["state"]["epoch"] == 2 and len(resumed["state"]["history"]) == 2
    assert resumed["state"]["history"][0] == checkpoint["state"]["history"][0]
    assert (run / "sampled_faces.epoch2.json").is_file() and not (run / "train.lock").exists()
    # bit-for-bit: an uninterrupted run (no time budget) validates the same losses after epochs 1 and 2
    straight = torchrun(tiny_dataset, runs, "--run-name", "straight", epochs=3)
    assert straight.returncode == 0, straight.stderr[-3000:]
    history = json.loads((runs / "straight" / "summary.json").read_text())["history"]
    assert [h["valid_loss"] for h in history[:2]] == [h["valid_loss"] for h in resumed["state"]["history"]]
    assert [h["train_loss"] for h in history[:2]] == [h["train_loss"] for h in resumed["state"]["history"]]
    # one process cannot continue what two started: each one's share, and so the schedule, would differ
    assert main([*again.args[again.args.index("ferlib.train") + 1:]]) == 2
    assert "saved by a run on 2 process(es), resumed on 1" in capsys.readouterr().err
