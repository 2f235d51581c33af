"""Per-save cost as the model folder grows.

1. **Sequence**: saves the same tiny model ``--n`` times (default 1 000) into one empty folder, in
   this process, and prints the median wall-clock and CPU time (user + system of this process) of
   the saves just before numbers 10, 100, 500 and 1 000 (a window of ``--window`` saves: a single
   save is dominated by fsync latency), and the ratio 1 000 / 10.
2. **Paired** (``--rounds``, default 40): the wall-clock figures of the sequence are taken minutes
   apart, and on a shared machine the disk's fsync latency drifts more than the effect being
   measured. So it also alternates saves into a folder of 10 models and one of ``--n`` models
   (each new model deleted again, untimed, so the sizes stay put) and compares the medians:
   both sides see the same disk at the same moment.
3. ``--fresh``: one save by a fresh process at 10 and at ``--n`` models (median of ``--fresh-reps``):
   the cost a CLI call or a new training run pays, with nothing cached in memory.

    .venv/bin/python bench/library.py                 # about 40 s on the 2-core test machine (1 000 saves, 80 paired)
    .venv/bin/python bench/library.py --fresh         # plus fresh-process saves
    .venv/bin/python bench/library.py --n 200 --tmp /dev/shm

No timing assertion lives in the test suite: the numbers go in commit messages.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHECKPOINTS = (10, 100, 500, 1000)

FRESH_CHILD = """
import sys, time, torch
from distillgan import ModelMetadata, save_model
sd = {"w": torch.arange(256, dtype=torch.float32), "b": torch.zeros(8)}
meta = ModelMetadata(name="bench model", description="the same tiny model every time", tags=["bench"])
t0 = time.perf_counter()
save_model(sd, {"n_mels": 32}, {"epochs": 1}, meta, sys.argv[1])
print(time.perf_counter() - t0, meta.model_id)
"""


def _save_once(folder: Path) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds, model id) of one save of the tiny model."""
    import torch

    from distillgan import ModelMetadata, save_model

    sd = {"w": torch.arange(256, dtype=torch.float32), "b": torch.zeros(8)}
    meta = ModelMetadata(name="bench model", description="the same tiny model every time", tags=["bench"])
    c0, t0 = time.process_time(), time.perf_counter()
    save_model(sd, {"n_mels": 32}, {"epochs": 1}, meta, folder)
    return time.perf_counter() - t0, time.process_time() - c0, meta.model_id


def _fresh_save(folder: Path) -> tuple[float, str]:
    out = subprocess.run([sys.executable, "-c", FRESH_CHILD, str(folder)], check=True, capture_output=True, text=True)
    seconds, model_id = out.stdout.split()
    return float(seconds), model_id


def _ms(x: float) -> str:
    return f"{x * 1e3:8.2f} ms"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="number of saves in the sequence; size of the large folder (default 1000)")
    ap.add_argument("--window", type=int, default=9, help="saves per median in the sequence (default 9)")
    ap.add_argument("--rounds", type=int, default=40, help="alternating rounds of the paired measurement (default 40; 0: skip)")
    ap.add_argument("--tmp", default=None, help="parent of the temporary folder (default: the system's)")
    ap.add_argument("--fresh", action="store_true", help="also time saves by fresh processes")
    ap.add_argument("--fresh-reps", type=int, default=5, help="fresh processes per folder size (default 5)")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object instead of text (bench/run.py reads it)")
    args = ap.parse_args(argv)
    result: dict = {"n": args.n, "window": args.window, "rounds": args.rounds}

    def say(line: str) -> None:
        if not args.json:
            result["fresh"] = {"large_s": fresh[large], "small_s": fresh.get(small)}
            say(line)

    from distillgan import delete_model

    root = Path(tempfile.mkdtemp(prefix="distillgan-bench-library-", dir=args.tmp))
    small, large = root / "small", root / "large"
    try:
        _save_once(root / "warm-up")  # imports, first-call costs
        wall: list[float] = []
        cpu: list[float] = []
        for _ in range(args.n):
            w, c, _id = _save_once(large)
            wall.append(w)
            cpu.append(c)
        index = large / "model_library.json"
        result["index_bytes"] = index.stat().st_size
        say(f"sequence: {args.n} saves of the same tiny model into one folder; index {index.stat().st_size / 1024:.0f} KiB at the end")
        say(f"{'save #':>8}  {'wall, median':>14}  {'CPU, median':>13}")
        med: dict[int, tuple[float, float]] = {}
        for k in (*CHECKPOINTS[:-1], args.n) if args.n not in CHECKPOINTS else CHECKPOINTS:
            if k > args.n:
                continue
            lo = max(0, k - args.window)
            med[k] = (statistics.median(wall[lo:k]), statistics.median(cpu[lo:k]))
            say(f"{k:>8}  {_ms(med[k][0]):>14}  {_ms(med[k][1]):>13}")
        last = max(med)
        result["sequence"] = {str(k): {"wall_s": w, "cpu_s": c} for k, (w, c) in med.items()}
        result["sequence_ratio"] = {"last": last, "wall": med[last][0] / med[10][0], "cpu": med[last][1] / med[10][1]}
        say(f"ratio save #{last} / save #10: wall {med[last][0] / med[10][0]:.2f}, CPU {med[last][1] / med[10][1]:.2f}; "
              f"mean wall {statistics.fmean(wall) * 1e3:.2f} ms, slowest {max(wall) * 1e3:.2f} ms (save #{wall.index(max(wall)) + 1})")

        if args.rounds:
            for _ in range(10):
                _save_once(small)
            timed: dict[Path, list[tuple[float, float]]] = {small: [], large: []}
            for r in range(args.rounds):
                for folder in ((small, large) if r % 2 == 0 else (large, small)):
                    w, c, model_id = _save_once(folder)
                    timed[folder].append((w, c))
                    delete_model(model_id, folder)
            s_w, s_c = (statistics.median(x[i] for x in timed[small]) for i in (0, 1))
            l_w, l_c = (statistics.median(x[i] for x in timed[large]) for i in (0, 1))
            result["paired"] = {"small_wall_s": s_w, "small_cpu_s": s_c, "large_wall_s": l_w, "large_cpu_s": l_c,
                                "ratio_wall": l_w / s_w, "ratio_cpu": l_c / s_c}
            say(f"paired, {args.rounds} rounds alternating: folder of 10 models {_ms(s_w)} wall, {_ms(s_c)} CPU; "
                  f"of {args.n}: {_ms(l_w)} wall, {_ms(l_c)} CPU; ratio wall {l_w / s_w:.2f}, CPU {l_c / s_c:.2f}")

        if args.fresh:
            fresh = {}
            for folder in (small if args.rounds else None, large):
                if folder is None:
                    continue
                times = []
                for _ in range(args.fresh_reps):
                    seconds, model_id = _fresh_save(folder)
                    times.append(seconds)
                    delete_model(model_id, folder)
                fresh[folder] = statistics.median(times)
            line = f"fresh process, median of {args.fresh_reps}: folder of {args.n} models {_ms(fresh[large])}"
            if small in fresh:
                line += f", of 10 models {_ms(fresh[small])}, ratio {fresh[large] / fresh[small]:.2f}"
            result["fresh"] = {"large_s": fresh[large], "small_s": fresh.get(small)}
            say(line)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
