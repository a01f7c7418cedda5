"""Speed of the inference engines on this machine, side by side in one run.

    python benchmarks/model_benchmark.py [--weights models/ferplus_cnn.safetensors [OTHER ...]]
                                         [--latency-calls 300] [--training] [--train-steps 20]

For each model and its ONNX twins (``python -m ferlib.export`` writes them), runs ``ferlib.engine``'s engines: torch
fp32 (eager), torch bf16 (autocast), ONNX Runtime fp32 and ONNX Runtime int8. Each is timed end to end on
``.predict`` with random uint8 faces, as a user calls it (normalisation and softmax included): single-face latency
(median of many calls after warm-up) with 1 thread and with all threads, batch-256 throughput with all threads,
peak memory (growth of the resident set while the engine loads and runs batches of 256; approximate, Linux only),
and the ratios to torch fp32 eager. Prints a Markdown table and whether the best ONNX engine meets the goals. With
several models (a smaller network beside the headline one), a last table sets each model's fastest engine against
the first model's torch fp32 eager.

Then the ceiling: each network's multiply-adds per face (``ferlib.models.count_multiply_adds``) against the rate at
which this CPU multiplies two large int8 matrices (1,536 x 1,536 x 1,536, on 1 thread and on all), the faster of
ONNX Runtime's kernel (``MatMulInteger``) and oneDNN's (``torch._int_mm``), which no int8 network can beat: the
faces/s that rate allows each network, the share of it that its ONNX Runtime int8 engine reaches, and what it
leaves of the goals for the first model.

With ``--training``, also prints the training speed of the seed recipe's CNN and the default recipe (images/s for
forward + backward + AdamW step at batch 64, with the recipe's precision and memory format), and the default recipe
in the precision it does not use here: training asks for bfloat16 autocast only where the CPU computes it natively
(``ferlib.train.native_bf16``), and the row shows what the other choice would cost.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch
import torch.nn.functional as F

from ferlib.engine import OnnxEngine, TorchEngine, onnx_twin
from ferlib.models import build_model, count_multiply_adds, count_parameters
from ferlib.train import native_bf16

ENGINES = {
    # name: engine for (weights, threads)
    "torch fp32 (eager)": lambda weights, threads: TorchEngine(weights, threads),
    "torch bf16 (autocast)": lambda weights, threads: TorchEngine(weights, threads, bf16=True),
    "ONNX Runtime fp32": lambda weights, threads: OnnxEngine(onnx_twin(weights, "fp32"), threads),
    "ONNX Runtime int8": lambda weights, threads: OnnxEngine(onnx_twin(weights, "int8"), threads),
}
LATENCY_GOAL = 1 / 20  # of torch fp32 eager's single-face latency
THROUGHPUT_GOAL = 10_000  # faces/s at batch 256

NATIVE_BF16 = native_bf16(torch.device("cpu"))
RECIPES = {
    # name: (model kwargs, training precision bf16?, channels_last?); the default recipe's bf16 = true means bfloat16
    # autocast on a CPU that computes it natively and float32 elsewhere, as ferlib.train does
    "seed recipe (3-channel, float32)": ({"in_channels": 3}, False, False),
    f"default (1-channel, {'bf16 autocast' if NATIVE_BF16 else 'float32'}, channels-last)":
        ({"in_channels": 1}, NATIVE_BF16, True),
    f"default, {'float32' if NATIVE_BF16 else 'bf16 autocast emulated'} instead (not what training does here)":
        ({"in_channels": 1}, not NATIVE_BF16, True),
}


def latency_ms(engine, face: np.ndarray, calls: int, warmup: int = 20) -> float:
    timings = []
    for call in range(calls + warmup):
        started = time.perf_counter()
        engine.predict(face)
        if call >= warmup:
            timings.append(time.perf_counter() - started)
    return 1000 * statistics.median(timings)


def throughput(engine, faces: np.ndarray, seconds: float = 2.0, min_batches: int = 3) -> float:
    engine.predict(faces)
    batches, started = 0, time.perf_counter()
    while batches < min_batches or time.perf_counter() - started < seconds:
        engine.predict(faces)
        batches += 1
    return batches * len(faces) / (time.perf_counter() - started)


def resident_mb(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":")) / 1024


def reset_peak_memory() -> bool:
    """Reset the process's peak resident set size (Linux); False where it cannot be read or reset."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def measure_engine(make_engine, weights: Path, faces: np.ndarray, calls: int, all_threads: int) -> dict:
    """Timings of one engine. Sets torch's process-wide thread count for each measurement and restores it."""
    previous_threads = torch.get_num_threads()
    try:
        tracked = reset_peak_memory()
        before = resident_mb() if tracked else 0.0
        engine = make_engine(weights, all_threads)
        row = {"throughput": throughput(engine, faces)}
        row["memory"] = resident_mb("VmHWM") - before if tracked else None
        row[all_threads] = latency_ms(engine, faces[:1], calls)
        del engine
        row[1] = latency_ms(make_engine(weights, 1), faces[:1], calls)
    finally:
        torch.set_num_threads(previous_threads)
    return row


def engine_table(weights: Path, calls: int) -> dict:
    all_threads = os.cpu_count() or 1
    faces = np.random.default_rng(0).integers(0, 256, (256, 48, 48), dtype=np.uint8)
    print(f"model {weights}, random uint8 faces; 1-face latency: median of {calls} calls\n")
    print(f"| engine | 1-face ms (1 thread) | 1-face ms ({all_threads} threads) | faces/s (b=256, {all_threads} "
          f"threads) | peak memory MB | latency vs torch fp32 (1 thread) | latency vs torch fp32 ({all_threads} "
          "threads) | throughput vs torch fp32 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    rows = {}
    for name, make_engine in ENGINES.items():
        row = rows[name] = measure_engine(make_engine, weights, faces, calls, all_threads)
        base = rows["torch fp32 (eager)"]
        memory = "n/a" if row["memory"] is None else f"{row['memory']:.0f}"
        print(f"| {name} | {row[1]:.3f} | {row[all_threads]:.3f} | {row['throughput']:,.0f} | {memory} | "
              f"{row[1] / base[1]:.3f}x | {row[all_threads] / base[all_threads]:.3f}x | "
              f"{row['throughput'] / base['throughput']:.1f}x |", flush=True)
    base, onnx = rows["torch fp32 (eager)"], {name: row for name, row in rows.items() if name.startswith("ONNX")}
    print(f"\ngoal: 1-face latency <= 1/{1 / LATENCY_GOAL:.0f} of torch fp32 eager; batch >= {THROUGHPUT_GOAL:,} "
          "faces/s")
    verdicts = []
    for threads in (1, all_threads):
        best = min(onnx, key=lambda name: onnx[name][threads])
        ratio = onnx[best][threads] / base[threads]
        verdicts.append(f"latency {threads} thread{'s' if threads > 1 else ''}: 1/{1 / ratio:.1f} ({best}) "
                        f"{'met' if ratio <= LATENCY_GOAL else 'NOT met'}")
    best = max(onnx, key=lambda name: onnx[name]["throughput"])
    verdicts.append(f"batch: {onnx[best]['throughput']:,.0f} faces/s ({best}) "
                    f"{'met' if onnx[best]['throughput'] >= THROUGHPUT_GOAL else 'NOT met'}")
    print("best ONNX engine: " + "; ".join(verdicts))
    return rows


def comparison_table(tables: dict) -> None:
    """Each model's ONNX int8 engine against the first model's torch fp32 eager."""
    all_threads = os.cpu_count() or 1
    first = next(iter(tables))
    base = tables[first]["torch fp32 (eager)"]
    print(f"\nEach model's ONNX Runtime int8 against {first}'s torch fp32 eager\n")
    print(f"| model | parameters | 1-face ms (1 thread) | faces/s (b=256, {all_threads} threads) | latency vs {first} "
          f"torch fp32 (1 thread) | throughput vs {first} torch fp32 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for weights, rows in tables.items():
        row = rows["ONNX Runtime int8"]
        parameters = count_parameters(TorchEngine(weights).model)
        print(f"| {weights} | {parameters / 1e6:.2f}M | {row[1]:.3f} | {row['throughput']:,.0f} | "
              f"1/{base[1] / row[1]:.1f} | {row['throughput'] / base['throughput']:.1f}x |")


def timed_rate(run, work: float, seconds: float) -> float:
    """``work`` per call of ``run`` over the seconds it takes (after one call to warm up; at least three calls)."""
    run()
    runs, started = 0, time.perf_counter()
    while runs < 3 or time.perf_counter() - started < seconds:
        run()
        runs += 1
    return runs * work / (time.perf_counter() - started)


def int8_matmul_rate(threads: int, size: int = 1536, seconds: float = 1.5) -> float:
    """Multiply-adds per second of ONNX Runtime's int8 matrix product (uint8 x int8 -> int32, the kernel its int8
    convolutions run on) for two size x size matrices, on ``threads`` threads."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "int8_matmul",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [size, size]),
         helper.make_tensor_value_info("b", TensorProto.INT8, [size, size])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [size, size])])
    # IR version 9: what every onnxruntime ferlib pins can load
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    inputs = {"a": rng.integers(0, 256, (size, size), dtype=np.uint8),
              "b": rng.integers(-128, 128, (size, size), dtype=np.int8)}
    return timed_rate(lambda: session.run(None, inputs), size ** 3, seconds)


def onednn_int8_matmul_rate(threads: int, size: int = 1536, seconds: float = 1.5) -> float | None:
    """The same for PyTorch's int8 matrix product (``torch._int_mm``: int8 x int8 -> int32, which oneDNN runs with
    the CPU's dot-product instructions): a second opinion on what this CPU's int8 units give, from a library tuned
    separately. None where this torch has no such product on the CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        generator = torch.Generator().manual_seed(0)
        a, b = (torch.randint(-128, 128, (size, size), dtype=torch.int8, generator=generator) for _ in range(2))
        return timed_rate(lambda: torch._int_mm(a, b), size ** 3, seconds)
    except (AttributeError, NotImplementedError, RuntimeError):  # a private API: absent or CUDA-only in some builds
        return None
    finally:
        torch.set_num_threads(previous)


def ceiling_table(tables: dict) -> None:
    """Each network's work per face against this CPU's int8 matrix-product rate (the faster of ONNX Runtime's and
    oneDNN's): the most faces/s any int8 engine could run it at, and the share of that its ONNX Runtime int8 engine
    reaches."""
    all_threads = os.cpu_count() or 1
    kernels = {"ONNX Runtime (MatMulInteger)": int8_matmul_rate, "oneDNN (torch._int_mm)": onednn_int8_matmul_rate}
    measured = {name: {threads: rate(threads) for threads in sorted({1, all_threads})}
                for name, rate in kernels.items()}
    print("\nThe ceiling: int8 matrix products of 1,536^3 run at")
    for name, rates in measured.items():
        print(f"- {name}: " + (", ".join(f"{rate / 1e9:,.0f} G multiply-adds/s on {threads} thread"
                                          f"{'s' if threads > 1 else ''}" for threads, rate in rates.items())
                                if None not in rates.values() else "not available in this torch"))
    rates = {threads: max(r[threads] for r in measured.values() if r[threads] is not None)
             for threads in sorted({1, all_threads})}
    print(f"\n| model | multiply-adds per face | most faces/s (1 thread) | int8 1 face, 1 thread: share of the ceiling | "
          f"most faces/s ({all_threads} threads) | int8 batch-256: share of the ceiling |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    works = {weights: count_multiply_adds(TorchEngine(weights).model) for weights in tables}
    for weights, rows in tables.items():
        row = rows["ONNX Runtime int8"]
        most_one, most_all = rates[1] / works[weights], rates[all_threads] / works[weights]
        print(f"| {weights} | {works[weights] / 1e6:.1f}M | {most_one:,.0f} | {1000 / row[1] / most_one:.0%} | "
              f"{most_all:,.0f} | {row['throughput'] / most_all:.0%} |", flush=True)
    headline = next(iter(tables))
    eager_ms = tables[headline]["torch fp32 (eager)"][1]
    print(f"\nAt that rate {headline} would take at least {works[headline] / rates[1] * 1000:.2f} ms a face on 1 "
          f"thread (the goal: {eager_ms * LATENCY_GOAL:.2f} ms, 1/20 of its eager {eager_ms:.2f} ms) and run at most "
          f"{rates[all_threads] / works[headline]:,.0f} faces/s on {all_threads} threads (the goal: "
          f"{THROUGHPUT_GOAL:,}).")


def training_speed(model, channels: int, bf16: bool, channels_last: bool, steps: int, batch: int = 64) -> float:
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images, labels = torch.randn(batch, channels, 48, 48), torch.randint(0, 8, (batch,))
    if channels_last:
        model, images = model.to(memory_format=torch.channels_last), images.contiguous(memory_format=torch.channels_last)
    for step in range(steps + 3):
        if step == 3:
            started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(images).float(), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return steps * batch / (time.perf_counter() - started)


def training_table(steps: int) -> None:
    torch.manual_seed(0)
    print(f"\n| recipe | parameters | train img/s (b=64, {torch.get_num_threads()} threads) |")
    print("| --- | ---: | ---: |")
    speeds = []
    for name, (kwargs, bf16, channels_last) in RECIPES.items():
        model = build_model("seed_cnn", **kwargs)
        speeds.append(training_speed(model, kwargs["in_channels"], bf16, channels_last, steps))
        print(f"| {name} | {count_parameters(model):,} | {speeds[-1]:.0f} |", flush=True)
    print(f"default / seed: training {speeds[1] / speeds[0]:.2f}x; the default in the other precision / as trained "
          f"here: {speeds[2] / speeds[1]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, nargs="+", default=[Path("models/ferplus_cnn.safetensors")],
                        help="one or more models, each with its ONNX twins (the first is the baseline)")
    parser.add_argument("--latency-calls", type=int, default=300)
    parser.add_argument("--training", action="store_true", help="also time training of the two recipes")
    parser.add_argument("--train-steps", type=int, default=20)
    args = parser.parse_args()
    for weights in args.weights:
        if not weights.is_file():
            parser.exit(2, f"{weights}: model file not found\n")
        missing = [path.name for path in (onnx_twin(weights, "fp32"), onnx_twin(weights, "int8")) if not path.is_file()]
        if missing:
            parser.exit(2, f"{weights}: no ONNX twin {' / '.join(missing)}; write it with: python -m ferlib.export "
                           f"--weights {weights} --data data\n")
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {os.cpu_count()} CPUs, "
          f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}, native bfloat16: {NATIVE_BF16}")
    tables = {}
    for weights in args.weights:
        tables[weights] = engine_table(weights, args.latency_calls)
        print()
    if len(tables) > 1:
        comparison_table(tables)
    ceiling_table(tables)
    if args.training:
        training_table(args.train_steps)


if __name__ == "__main__":
    main()
