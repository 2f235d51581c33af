"""Benchmark: the app's resumable vocoder checkpoint through save_model/load_model vs safetensors, side by side.

    python bench/checkpoint.py [--reps 5] [--small] [--out bench/results]

The input is what app v1.1's HiFi-GAN trainer hands to ``save_model`` when
vocoder training is cancelled (tests/support/appshapes.py rebuilds it from the app's
code): ``vocoder_state`` with the generator's state dict, config, training
metadata and a ``checkpoint`` holding the generator, multi-period and
multi-scale discriminators, two AdamW and two ExponentialLR states — about
1 800 tensors and 860 MB at full size. The anchor is ``safetensors`` with the
same tensor bytes flattened into one dict (``save_file`` / ``load_file``):
distinct views only, because safetensors refuses shared tensors.

Rows (median of ``--reps``, each repetition a fresh subprocess, contenders
alternating, starting contender rotating):

- save + fsync: ``distillgan.save_model`` vs ``safetensors.save_file`` + fsync
  (input: the state in anonymous memory, as after training);
- load + touch: ``distillgan.load_model`` + read every byte vs
  ``safetensors.load_file`` + the same;
- manifest encode + decode of the checkpoint's skeleton (in-process, no
  tensor data): ``Splitter`` + ``encode_manifest`` + ``decode_manifest``.

Targets (issue: value trees): save and load ≤ 1.15× the anchor; manifest
encode + decode < 10 ms. Ratios are reported, never asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TESTS = os.path.join(ROOT, "tests", "support")  # appshapes lives with the tests; the benchmark reuses it, the library never does


def _flatten(state: Any) -> dict[str, Any]:
    """The distinct tensor views a distillgan file of ``state`` stores, under their names (safetensors' input)."""
    from distillgan.tensors import unique_views
    from distillgan.values import Splitter

    splitter = Splitter()
    splitter.encode(state, ("vocoder_state",), "vocoder.safetensors")
    stored, _aliases = unique_views({c.name: c.tensor for c in splitter.claims}, {c.name: c.kind for c in splitter.claims})
    return {k: v.contiguous() for k, v in stored.items()}


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _touch(tensors: list[Any]) -> float:
    return sum(float(t.float().sum()) if t.dtype.is_complex is False else float(t.abs().sum()) for t in tensors)


def _tensors_of(value: Any, out: list[Any]) -> list[Any]:
    import torch

    if isinstance(value, torch.Tensor):
        out.append(value)
    elif isinstance(value, dict):
        for v in value.values():
            _tensors_of(v, out)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _tensors_of(v, out)
    return out


def _resolve(distillgan: Any) -> None:
    """distillgan's lazy imports (PEP 562) done before the timing, as bench/worker.py does."""
    for name in distillgan.__all__:
        getattr(distillgan, name)


def _quiet_gc() -> None:
    """As bench/worker.py does for every contender: collect and freeze what the imports left.

    After ``import torch`` a full collection walks a few hundred thousand
    objects (~80 ms here) and lands inside whichever contender happens to
    allocate enough containers to trigger it.
    """
    import gc

    gc.collect()
    gc.freeze()


# --- child jobs ---------------------------------------------------------------------------------


def job_build(j: dict[str, Any]) -> dict[str, Any]:
    import safetensors.torch as st
    import torch

    sys.path.insert(0, TESTS)
    import appshapes

    t0 = time.perf_counter()
    state = appshapes.vocoder_state(small=j["small"], with_checkpoint=True, seed=0)
    build_s = time.perf_counter() - t0
    torch.save(state, j["pt"])
    flat = _flatten(state)
    st.save_file(flat, j["flat"])
    return {
        "build_s": build_s,
        "tensors": len(_tensors_of(state, [])),
        "stored_tensors": len(flat),
        "bytes": sum(t.numel() * t.element_size() for t in flat.values()),
    }


def job_save(j: dict[str, Any]) -> dict[str, Any]:
    import safetensors.torch as st
    import torch

    import distillgan

    _resolve(distillgan)
    state = torch.load(j["pt"], weights_only=True)  # untimed: the state in anonymous memory, as after training
    flat = _flatten(state) if j["contender"] == "safetensors" else None
    out = os.path.join(j["dir"], f"rep{j['rep']}")
    os.makedirs(out)
    _quiet_gc()
    t0 = time.perf_counter()
    if j["contender"] == "distillgan":
        meta = distillgan.ModelMetadata(name="bench checkpoint")
        path = distillgan.save_model({"w": torch.zeros(1)}, {}, {}, meta, out, vocoder_state=state)
    else:
        path = os.path.join(out, "flat.safetensors")
        st.save_file(flat, path)
        _fsync(path)
    elapsed = time.perf_counter() - t0
    return {"time_s": elapsed, "file_bytes": os.path.getsize(path), "path": str(path)}


def job_load(j: dict[str, Any]) -> dict[str, Any]:
    import safetensors.torch as st
    import torch

    import distillgan

    torch.set_num_threads(1)
    float(torch.ones(8).sum())  # lazy initialisation outside the timing
    _resolve(distillgan)
    _quiet_gc()
    t0 = time.perf_counter()
    if j["contender"] == "distillgan":
        loaded = distillgan.load_model(j["path"])
        tensors = _tensors_of(loaded.vocoder_state, [])
    else:
        tensors = list(st.load_file(j["path"]).values())
    checksum = _touch(tensors)
    return {"time_s": time.perf_counter() - t0, "checksum": checksum, "tensors": len(tensors)}


def job_manifest(j: dict[str, Any]) -> dict[str, Any]:
    import torch

    from distillgan.manifest import decode_manifest, encode_manifest
    from distillgan.values import Splitter

    state = torch.load(j["pt"], weights_only=True)
    samples = []
    size = 0
    for _ in range(j["reps"]):
        t0 = time.perf_counter()
        splitter = Splitter()
        raw = {
            "format": "distillgan_model", "version": 1, "latent_dim": None,
            "metadata": {"model_id": "x", "name": "n", "description": "", "dataset_name": "", "dataset_file_count": 0,
                         "dataset_total_duration_s": 0.0, "training_date": "", "save_date": "", "training_epochs": 0,
                         "final_train_loss": 0.0, "final_val_loss": 0.0, "tags": [], "has_analysis": False,
                         "n_active_components": 0},
            "members": {"model.safetensors": {"aliases": {}, "size": 0}, "vocoder.safetensors": {"aliases": {}, "size": 0}},
            "state_dict": {}, "spectrogram_config": {}, "training_config": {}, "analysis": None, "extra": None,
            "vocoder_state": splitter.encode(state, ("vocoder_state",), "vocoder.safetensors"),
        }  # fmt: skip
        data = encode_manifest(raw)
        decode_manifest(data)
        samples.append(time.perf_counter() - t0)
        size = len(data)
    return {"samples_s": samples, "manifest_bytes": size, "placeholders": len(splitter.claims)}


JOBS = {"build": job_build, "save": job_save, "load": job_load, "manifest": job_manifest}


# bytecode caches used and written, as for an installed package (see bench/run.py's CHILD_ENV)
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run_child(job: dict[str, Any]) -> dict[str, Any]:
    p = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)], capture_output=True, text=True, check=False,
                       env=CHILD_ENV)
    if p.returncode != 0:
        raise RuntimeError(f"{job['op']} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


# --- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--small", action="store_true", help="the small variant (2 MB): a quick check of the script itself")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        job = json.loads(args.child)
        print(json.dumps(JOBS[job["op"]](job)))
        return 0
    tmp = tempfile.mkdtemp(prefix="distillgan-bench-ckpt-")
    try:
        pt, flat = os.path.join(tmp, "state.pt"), os.path.join(tmp, "flat.safetensors")
        print("building the vocoder checkpoint ...", file=sys.stderr)
        built = run_child({"op": "build", "pt": pt, "flat": flat, "small": args.small})
        print(f"  {built['tensors']} tensors, {built['stored_tensors']} stored, {built['bytes'] / 2**20:.1f} MiB", file=sys.stderr)
        saves: dict[str, list[float]] = {"distillgan": [], "safetensors": []}
        loads: dict[str, list[float]] = {"distillgan": [], "safetensors": []}
        paths: dict[str, str] = {}
        order = ["distillgan", "safetensors"]
        for rep in range(args.reps):
            for c in order[rep % 2 :] + order[: rep % 2]:
                r = run_child({"op": "save", "contender": c, "pt": pt, "dir": os.path.join(tmp, c), "rep": rep})
                saves[c].append(r["time_s"])
                paths[c] = r["path"]
        for rep in range(args.reps):
            for c in order[rep % 2 :] + order[: rep % 2]:
                loads[c].append(run_child({"op": "load", "contender": c, "path": paths[c]})["time_s"])
        man = run_child({"op": "manifest", "pt": pt, "reps": 20})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in saves.items()}
    lmed = {k: statistics.median(v) for k, v in loads.items()}
    mmed = statistics.median(man["samples_s"])
    lines = [
        f"# vocoder checkpoint benchmark ({dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')})",
        "",
        f"input: {built['tensors']} tensors ({built['stored_tensors']} distinct views stored), {built['bytes'] / 2**20:.1f} MiB; "
        f"medians of {args.reps} fresh-process repetitions; load average {os.getloadavg()[0]:.2f}",
        "",
        "| operation | distillgan | safetensors (flattened) | ratio | target |",
        "|---|---:|---:|---:|---:|",
        f"| save + fsync | {med['distillgan']:.3f} s | {med['safetensors']:.3f} s | {med['distillgan'] / med['safetensors']:.2f}× | ≤ 1.15× |",
        f"| load + touch | {lmed['distillgan']:.3f} s | {lmed['safetensors']:.3f} s | {lmed['distillgan'] / lmed['safetensors']:.2f}× | ≤ 1.15× |",
        f"| manifest encode + decode ({man['placeholders']} placeholders, {man['manifest_bytes']} B) | {mmed * 1e3:.2f} ms | — | — | < 10 ms |",
    ]
    text = "\n".join(lines)
    print(text)
    os.makedirs(args.out, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    with open(os.path.join(args.out, f"checkpoint-{stamp}.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(args.out, f"checkpoint-{stamp}.json"), "w") as f:
        json.dump({"built": built, "save_s": saves, "load_s": loads, "manifest": man}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
