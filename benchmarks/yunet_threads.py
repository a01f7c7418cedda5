"""YuNet's time per frame on one thread and on two, on an idle machine and while other processes keep cores busy.

    python benchmarks/yunet_threads.py [--media ../shared/media] [--repeat 30] [--load 1] [--threads 1,2,auto]

torch is imported first, as in the app and the recognizer: torch puts its OpenMP runtime in the process's global
scope, and yuface's OpenMP calls go to it (``ferlib.faces._yuface_openmp``). Each row is ``YuNetDetector(threads=N,
tile=None)`` on one frame: the first frame of ``single_face.mp4`` (640x360) and ``multi_face.jpg`` (1000x667), or
seeded noise where the media folder lacks them; then a photo's whole search on ``multi_face.jpg``
(``YuNetDetector(upscale=2.5, threads=N)``: the shrunk frame, the full-resolution windows and the 2.5x enlarged
pass, as ``EmotionRecognizer(detector_threads=N).detect_emotions`` runs it), over a tenth as many calls (at least
three). ``auto`` is ``YuNetDetector(threads="auto")``, the recognizer's default for photos: every core unless
other programs keep half a core busy, then one (``ferlib.faces.other_programs_busy``, measured again every few
seconds). Median and 90th percentile of ``--repeat`` calls after three warm-up calls; the ratio is the median over
the one-thread median in the same conditions. The last column is torch's thread count after the calls, which a
YuNet call must leave as it found it. The load is a plain busy loop in another Python process. Prints a Markdown
table.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch  # noqa: F401  (first, as in the app: its OpenMP runtime is the one YuNet's calls reach)
import cv2
import numpy as np

from ferlib.faces import THREADS_AUTO, YuNetDetector, other_programs_busy
from ferlib.video import open_source


def frames(media: Path) -> dict[str, np.ndarray]:
    found = {}
    video, photo = media / "single_face.mp4", media / "multi_face.jpg"
    if video.is_file():
        found["single_face.mp4 (first frame)"] = next(iter(open_source(video))).image
    if photo.is_file():
        found["multi_face.jpg"] = cv2.imread(str(photo))
    if not found:
        found["noise 640x360"] = np.random.default_rng(0).integers(0, 255, (360, 640, 3), dtype=np.uint8)
    return found


def time_calls(detector: YuNetDetector, frame: np.ndarray, repeat: int) -> tuple[float, float]:
    for _ in range(3):
        detector(frame)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        detector(frame)
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times), statistics.quantiles(times, n=10)[-1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--media", default="../shared/media")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--load", type=int, default=1, help="busy processes beside, in the loaded rows")
    parser.add_argument("--threads", default="1,2,auto",
                        help="comma list of YuNet thread counts, and auto (chosen at each call by the load)")
    args = parser.parse_args(argv)
    try:
        counts = [n if n == THREADS_AUTO else int(n) for n in args.threads.split(",")]
    except ValueError:
        sys.exit(f"error: --threads {args.threads!r}: expected a comma list of whole numbers or auto, e.g. 1,2,auto")
    if args.repeat < 2 or any(n != THREADS_AUTO and n < 1 for n in counts):
        sys.exit("error: --repeat must be 2 or more and every --threads count 1 or more")
    print(f"{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads); "
          f"load: {args.load} busy process(es) in the loaded rows\n")
    print("| frame | size | load | YuNet threads | median ms | p90 ms | ratio to 1 thread | torch threads after |")
    print("|---|---|---|---|---|---|---|---|")
    found = frames(Path(args.media))
    cases = [(name, frame, {"tile": None}, args.repeat) for name, frame in found.items()]
    if "multi_face.jpg" in found:
        cases.append(("multi_face.jpg, photo search (windows + 2.5x)", found["multi_face.jpg"], {"upscale": 2.5},
                      max(3, args.repeat // 10)))
    for name, frame, options, repeat in cases:
        for load in sorted({0, args.load}):
            busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(load)]
            try:
                time.sleep(0.3 if load else 0)
                other_programs_busy(reuse_s=0)  # measured afresh: the last rows' load is gone or has come
                base = None
                for threads in counts:
                    median, p90 = time_calls(YuNetDetector(threads=threads, **options), frame, repeat)
                    base = base or (median if threads == 1 else None)
                    ratio = f"{median / base:.2f}" if base else ""
                    print(f"| {name} | {frame.shape[1]}x{frame.shape[0]} | {load} | {threads} | {median:.1f} "
                          f"| {p90:.1f} | {ratio} | {torch.get_num_threads()} |", flush=True)
            finally:
                for process in busy:
                    process.kill()
                    process.wait()


if __name__ == "__main__":
    main()
