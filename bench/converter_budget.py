"""Time and peak RSS of `distillgan convert` on each hostile checkpoint of tests/support/hostile_checkpoints.py.

    python bench/converter_budget.py [--timeout 60] [--only NAME]

Each input is written to a temporary folder and converted in a fresh subprocess; the line shows
the input's size, the exit status (or the signal), the seconds, the conversion's own seconds and the growth of the child's peak RSS (ru_maxrss) over its imports
and the error line. Set PYTHONPATH to another checkout's root to measure that one instead.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "support"))
from hostile_checkpoints import FINDINGS

CHILD = """
import resource, sys, time
import torch
from distillgan.cli import main
import distillgan.convert, distillgan.pickled
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    code = main(["convert", sys.argv[1], "--dir", sys.argv[2]])
finally:
    print(f"seconds={time.perf_counter() - start}", file=sys.stderr)
    print(f"maxrss_kib={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base}", file=sys.stderr)
sys.exit(code)
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    for name, (build, _before) in FINDINGS.items():
        if args.only and args.only not in name:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / f"{name}.pt"
            src.write_bytes(build())
            out = Path(tmp) / "out"
            out.mkdir()
            start = time.perf_counter()
            try:
                proc = subprocess.run([sys.executable, "-c", CHILD, str(src), str(out)], check=False, capture_output=True, text=True,
                                      timeout=args.timeout, env=dict(os.environ), cwd=tmp)  # fmt: skip
                status = f"rc={proc.returncode}" if proc.returncode >= 0 else f"signal={-proc.returncode}"
                err = proc.stderr
            except subprocess.TimeoutExpired:
                status, err = f"timeout>{args.timeout:.0f}s", ""
            seconds = time.perf_counter() - start
            seconds = next((float(l.split("=")[1]) for l in err.splitlines() if l.startswith("seconds=")), seconds)
            rss = next((int(l.split("=")[1]) for l in err.splitlines() if l.startswith("maxrss_kib=")), 0)
            line = next((l for l in err.splitlines() if "error" in l.lower() or "Error" in l), "")
            written = sum(p.stat().st_size for p in out.iterdir())
            print(f"{name:24} {src.stat().st_size:>10} B  {status:14} {seconds:6.2f} s  +rss {rss / 1024:7.0f} MiB  "
                  f"out {written:>10} B  {line[:110]}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
