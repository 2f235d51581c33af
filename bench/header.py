"""Safetensors header parsing per tensor: distillgan's reader vs safetensors ``safe_open`` + ``keys()``.

    python bench/header.py [--sizes 1000,10000,100000,1000000] [--reps 3] [--rev REV]

For each size a safetensors file of that many F32[1] tensors (names like ``layers.123.weight``,
the header as safetensors writes it) is parsed in fresh subprocesses, alternating the contenders:

- ``distillgan``: ``tensors.parse_header`` over the mapped file — every rule of FORMAT.md §5.1,
  duplicate keys included (the fast path, with the strict parser behind it);
- ``distillgan-strict``: the reference parser alone (``tensors._strict_header``), for comparison;
- ``safetensors``: ``safe_open(path, "np")`` then ``keys()``.

Each child first reads a one-tensor file untimed (imports and first calls), then times the real
one with ``time.process_time`` (CPU time of the process, so the figure does not grow when other
processes load the machine).

The figure is the median µs per tensor; the ratio is against safetensors in the same run.
``--rev REV`` also times ``parse_header`` of ``distillgan/`` as committed at REV (e.g. the commit
before the fast parser), with its limits raised so that it accepts the larger headers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CHILD = r"""
import gc, json, struct, sys, time
kind, path, warm = sys.argv[1], sys.argv[2], sys.argv[3]  # warm: a one-tensor file read first, untimed
if kind == "safetensors":
    from safetensors import safe_open
    with safe_open(warm, "np") as f:
        f.keys()
    t = time.process_time()
    with safe_open(path, "np") as f:
        keys = f.keys()
    dt = time.process_time() - t
    n = len(keys)
else:
    from distillgan import tensors
    from distillgan.source import MappedFile
    if kind == "distillgan-rev":  # an older parser: let it accept the sizes measured here
        tensors.MAX_TENSORS = 1 << 40
        tensors.MAX_HEADER_BYTES = 1 << 40
    w = MappedFile(warm)
    tensors.parse_header(w, 0, w.size, "warm")
    if kind == "distillgan-strict":
        tensors._strict_header(b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', 4, "warm")
    src = MappedFile(path)
    t = time.process_time()
    if kind == "distillgan-strict":
        (hn,) = struct.unpack("<Q", src.read(0, 8))
        gc.disable()
        infos, _ = tensors._strict_header(src.read(8, hn), src.size - 8 - hn, "bench")
        gc.enable()
        n = len(infos)
    else:
        n = len(tensors.parse_header(src, 0, src.size, "bench").tensors)
    dt = time.process_time() - t
print(json.dumps({"seconds": dt, "tensors": n}))
"""


def make_file(path: str, count: int) -> None:
    """A safetensors file of ``count`` F32[1] tensors, header written the way safetensors writes it."""
    parts = [b'{"__metadata__":{"format":"pt"}']
    for i in range(count):
        parts.append(b',"layers.%d.weight":{"dtype":"F32","shape":[1],"data_offsets":[%d,%d]}' % (i, 4 * i, 4 * i + 4))
    parts.append(b"}")
    header = b"".join(parts)
    header += b" " * ((-len(header)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
        f.write(bytes(4 * count))


def run_child(kind: str, path: str, pythonpath: str | None) -> float:
    warm = os.path.join(os.path.dirname(path), "warm.safetensors")
    if not os.path.exists(warm):
        make_file(warm, 1)
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    # cwd: not the source tree, whose distillgan/ would come before PYTHONPATH on sys.path
    out = subprocess.run([sys.executable, "-c", CHILD, kind, path, warm], capture_output=True, text=True, env=env, check=True, timeout=3600,
                         cwd=os.path.dirname(path))
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    return doc["seconds"] / doc["tensors"] * 1e6


def export_rev(rev: str, dest: str) -> str:
    """``distillgan/`` at ``rev`` into ``dest`` (for --rev); returns the folder to put on PYTHONPATH."""
    os.makedirs(dest, exist_ok=True)
    tar = subprocess.run(["git", "-C", ROOT, "archive", rev, "distillgan"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", dest], input=tar, check=True)
    return dest


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000,10000,100000,1000000")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--rev", help="also time parse_header of distillgan/ at this git revision")
    p.add_argument("--strict", action="store_true", help="also time the strict (reference) parser alone")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    tmp = tempfile.mkdtemp(prefix="distillgan-bench-header-")
    rows = []
    try:
        src = os.environ.get("BENCH_DISTILLGAN_SRC", ROOT)  # bench/run.py --rev points it at the exported revision
        contenders: list[tuple[str, str, str | None]] = [("distillgan", "distillgan", src), ("safetensors", "safetensors", None)]
        if args.strict:
            contenders.insert(1, ("distillgan (strict parser)", "distillgan-strict", ROOT))
        if args.rev:
            rev_dir = export_rev(args.rev, os.path.join(tmp, "rev"))
            contenders.insert(1, (f"distillgan @ {args.rev}", "distillgan-rev", rev_dir))
        for count in sizes:
            path = os.path.join(tmp, f"h{count}.safetensors")
            make_file(path, count)
            timings: dict[str, list[float]] = {label: [] for label, _, _ in contenders}
            for rep in range(args.reps):
                order = contenders[rep % len(contenders):] + contenders[: rep % len(contenders)]
                for label, kind, pythonpath in order:
                    timings[label].append(run_child(kind, path, pythonpath))
            anchor = statistics.median(timings["safetensors"])
            header_bytes = os.path.getsize(path) - 8 - 4 * count
            for label, values in timings.items():
                us = statistics.median(values)
                rows.append({"tensors": count, "header_bytes": header_bytes, "contender": label, "us_per_tensor": round(us, 3),
                             "ratio_vs_safetensors": round(us / anchor, 2)})
            os.remove(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'tensors':>9} {'header':>12}  {'contender':<28} {'µs/tensor':>10} {'vs safetensors':>15}")
    for r in rows:
        print(f"{r['tensors']:>9} {r['header_bytes']:>12}  {r['contender']:<28} {r['us_per_tensor']:>10.3f} {r['ratio_vs_safetensors']:>14.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
