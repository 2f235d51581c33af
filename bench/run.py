"""distillgan benchmark: save / load+touch / inspect / verify against safetensors, torch and zlib; remote vs local.

    python bench/run.py [--sizes 16M,256M] [--large] [--reps 5] [--out bench/results]

The remote phase serves the archives from a loopback HTTP server with Range
support (bench/httpserve.py, a thread of this process) and compares
inspect / load_model+touch / verify over HTTP with the local path.

Every timed repetition runs in a fresh subprocess (bench/worker.py), the
contenders alternate inside each repetition (the starting contender rotates
from one repetition to the next), and the figure reported is the median.
This process never imports torch, so the children start small.
See bench/README.md for what each row means.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata as md
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "worker.py")
MiB = 1 << 20
CHILD_ENV = dict(os.environ)  # set in main(): PYTHONPATH for --rev, BENCH_TORCH_THREADS
# Children use and write bytecode caches, as an installed package does (pip compiles on install): with
# PYTHONDONTWRITEBYTECODE set (some shells and CI images set it) every child would compile distillgan's
# modules from source, and the start-up and first-call rows would time the compiler (~40 ms).
CHILD_ENV.pop("PYTHONDONTWRITEBYTECODE", None)

SAVE_CONTENDERS = [
    "distillgan.save_model",
    "distillgan.write_archive+fsync",
    "safetensors.save_file+fsync",
    "torch.save+fsync",
    "distillgan.write_archive",
    "safetensors.save_file",
    "torch.save",
]
SAVE_PEER = {
    "distillgan.save_model": "safetensors.save_file+fsync",
    "distillgan.write_archive+fsync": "safetensors.save_file+fsync",
    "safetensors.save_file+fsync": "safetensors.save_file+fsync",
    "torch.save+fsync": "safetensors.save_file+fsync",
    "distillgan.write_archive": "safetensors.save_file",
    "safetensors.save_file": "safetensors.save_file",
    "torch.save": "safetensors.save_file",
}
LOAD_CONTENDERS = [
    "distillgan.load_model",
    "distillgan.load_model(copy)",  # tensors in memory of their own: nothing keeps the file mapped (FORMAT.md §15.1)
    "distillgan.load_model(verify)",  # the same, each member's CRC-32 checked on the bytes used
    "safetensors.load_file",
    "torch.load(weights_only)",
    "torch.load(mmap,weights_only)",
    "distillgan.load_model(meta module, assign)",
    "safetensors.load_model(module)",
]
LOAD_PEER = "safetensors.load_file"
LOAD_PEERS = {  # into a module: the generator alone, built on meta + assign vs built on the CPU + safetensors.load_model
    "distillgan.load_model(meta module, assign)": "safetensors.load_model(module)",
    "safetensors.load_model(module)": "safetensors.load_model(module)",
}
DEVICE_CONTENDERS = [  # --phases device: onto --device (a GPU), from a warm page cache
    "distillgan.load_model(device)",
    "safetensors.load_file(device)",
    "torch.load(mmap,weights_only,map_location)",
    "distillgan.load_model(meta module, assign, device)",
    "safetensors.load_model(module on device)",
]
DEVICE_PEERS = {
    "distillgan.load_model(device)": "safetensors.load_file(device)",
    "safetensors.load_file(device)": "safetensors.load_file(device)",
    "torch.load(mmap,weights_only,map_location)": "safetensors.load_file(device)",
    "distillgan.load_model(meta module, assign, device)": "safetensors.load_model(module on device)",
    "safetensors.load_model(module on device)": "safetensors.load_model(module on device)",
}
VERIFY_CONTENDERS = ["distillgan.verify", "zlib.crc32(in-memory)", "zlib.crc32(mmap)"]
VERIFY_PEER = "zlib.crc32(in-memory)"
REMOTE_OPS = ["inspect", "load+touch", "verify"]  # each: local path vs the same file over loopback HTTP
REMOTE_JOB = {"inspect": "remote_inspect", "load+touch": "remote_load", "verify": "remote_verify"}
REMOTE_CONTENDERS = ["local", "http"]

# the performance targets (ratios to report, not assertions)
LOAD_VS_ST = 1.10
LOAD_VS_TORCH = 10.0
LOAD_RSS_SLACK = 64 * MiB
SAVE_VS_ST = 1.25
SAVE_RSS = 64 * MiB
INSPECT_RATIO = 1.5
INSPECT_WARM_MS = 20.0
VERIFY_VS_ZLIB = 0.8
REMOTE_INSPECT_REQUESTS = 3
REMOTE_INSPECT_BYTES = 128 << 10
REMOTE_LOAD_BPS = 1.5e9  # remote load_model over loopback HTTP, 1 GiB model: at least this many bytes per second
REMOTE_LOAD_RSS_SLACK = 64 * MiB  # remote load peak RSS Δ ≤ tensor bytes + this
HEADER_US = 2.0  # safetensors header parsing: at most this many µs per tensor
LIBRARY_RATIO = 1.5  # save into a folder of 1 000 models ≤ this × save into a folder of 10
INSPECT_CLI_S = 0.15  # `distillgan inspect` of any local file, wall, fresh process
DEVICE_VS_ST = 1.10  # load_model(device=…) ≤ this × safetensors.load_file(device=…)
DEVICE_ANON_SLACK = 64 * MiB  # no intermediate CPU copy: anonymous memory grows by less than this


def parse_size(s: str) -> int:
    s = s.strip().upper().removesuffix("IB").removesuffix("B")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(s[-1:], 1)
    num = s[:-1] if s[-1:] in "KMG" else s
    return int(float(num) * mult)


def size_label(n: int) -> str:
    if n >= 1 << 30 and n % (1 << 30) == 0:
        return f"{n >> 30} GiB"
    if n % MiB == 0:
        return f"{n >> 20} MiB"
    return f"{n / MiB:.1f} MiB"


def fmt_time(s: float | None) -> str:
    if s is None:
        return "—"
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    return f"{s:.2f} s"


def fmt_mib(b: float | None) -> str:
    return "—" if b is None else f"{b / MiB:.1f} MiB"


# --- machine --------------------------------------------------------------------------


def _version(pkg: str) -> str | None:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return None


def _fs_of(path: str) -> str | None:
    try:
        best = ("", None)
        with open("/proc/mounts") as f:
            for line in f:
                dev, mnt, fstype, *_ = line.split()
                if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best[0]):
                    best = (mnt, f"{fstype} ({dev} on {mnt})")
        return best[1]
    except OSError:
        return None


def machine_info(tmp: str) -> dict[str, Any]:
    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    commit = None
    try:
        root = os.path.dirname(HERE)
        commit = subprocess.run(
            ["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "distillgan"], capture_output=True, text=True, check=False
        ).stdout.strip()
        commit += " (distillgan/ modified)" if dirty else ""
    except OSError:
        pass
    return {
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores_online": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "mem_total": mem,
        "kernel": platform.release(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "safetensors": _version("safetensors"),
        "numpy": _version("numpy"),
        "msgpack": _version("msgpack"),
        "distillgan": _version("distillgan"),
        "distillgan_commit": commit,
        "zlib_runtime": zlib.ZLIB_RUNTIME_VERSION,
        "tmp_dir_fs": _fs_of(tmp),
        "loadavg_start": os.getloadavg(),
    }


# --- children -------------------------------------------------------------------------


LOADAVG_SEEN: list[float] = []


def run_child(job: dict[str, Any], timeout: float = 3600) -> dict[str, Any]:
    load = os.getloadavg()[0]
    LOADAVG_SEEN.append(load)
    t0 = time.perf_counter()
    p = subprocess.run(
        [sys.executable, WORKER, json.dumps(job)], capture_output=True, text=True, timeout=timeout, env=CHILD_ENV, check=False
    )
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        return {"error": (p.stderr or p.stdout)[-2000:], "wall_s": wall, "loadavg_1min": load}
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    out = json.loads(lines[-1])
    out["wall_s"] = wall
    out["loadavg_1min"] = load
    return out


def rotate(items: list[str], k: int) -> list[str]:
    k %= len(items)
    return items[k:] + items[:k]


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def summarize(samples: list[dict[str, Any]], keys: tuple[str, ...] = ("time_s",)) -> dict[str, Any]:
    ok = [s for s in samples if "error" not in s]
    out: dict[str, Any] = {"n": len(ok), "errors": [s["error"] for s in samples if "error" in s]}
    for key in keys + ("rss_delta", "wall_s"):
        vals = [s[key] for s in ok if key in s and s[key] is not None]
        if vals:
            out[key] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}
    out["samples"] = samples
    return out


def med(summary: dict[str, Any] | None, key: str = "time_s") -> float | None:
    if not summary or key not in summary:
        return None
    return summary[key]["median"]


# --- phases ---------------------------------------------------------------------------


def warm(paths: list[str]) -> None:
    run_child({"op": "warm", "paths": paths})


def phase_save(model: dict[str, Any], reps: int, tmp: str) -> dict[str, Any]:
    samples: dict[str, list[dict[str, Any]]] = {c: [] for c in SAVE_CONTENDERS}
    warm([model["files"]["safetensors"]])
    for r in range(reps):
        for c in rotate(SAVE_CONTENDERS, r):
            out_dir = tempfile.mkdtemp(prefix="save-", dir=tmp)
            try:
                res = run_child(
                    {
                        "op": "save",
                        "contender": c,
                        "src": model["files"]["safetensors"],
                        "dg_file": model["files"]["distillgan"],
                        "out_dir": out_dir,
                        "rep": r,
                    }
                )
            finally:
                shutil.rmtree(out_dir, ignore_errors=True)
            samples[c].append(res)
            progress(f"  save {c:34s} rep {r + 1}/{reps}: {fmt_time(res.get('time_s'))}  ΔRSS {fmt_mib(res.get('rss_delta'))}")
    return {c: summarize(s) for c, s in samples.items()}


def phase_load(model: dict[str, Any], reps: int) -> dict[str, Any]:
    samples: dict[str, list[dict[str, Any]]] = {c: [] for c in LOAD_CONTENDERS}
    warm(list(model["files"].values()))  # every contender reads from the page cache
    for r in range(reps):
        for c in rotate(LOAD_CONTENDERS, r):
            res = run_child({"op": "load", "contender": c, "files": model["files"]})
            samples[c].append(res)
            progress(f"  load {c:34s} rep {r + 1}/{reps}: {fmt_time(res.get('time_s'))}  ΔRSS {fmt_mib(res.get('rss_delta'))}")
    return {c: summarize(s, ("time_s", "open_s", "touch_s")) for c, s in samples.items()}


def phase_device(model: dict[str, Any], reps: int, device: str) -> dict[str, Any]:
    samples: dict[str, list[dict[str, Any]]] = {c: [] for c in DEVICE_CONTENDERS}
    warm(list(model["files"].values()))
    for r in range(reps):
        for c in rotate(DEVICE_CONTENDERS, r):
            res = run_child({"op": "device_load", "contender": c, "files": model["files"], "device": device})
            samples[c].append(res)
            progress(f"  {device} {c:48s} rep {r + 1}/{reps}: {fmt_time(res.get('time_s'))}  "
                     f"device peak {fmt_mib(res.get('device_peak_delta'))}  ΔRssAnon {fmt_mib(res.get('anon_delta'))}"
                     + (f"  ERROR {res['error'][-300:]}" if "error" in res else ""))
    keys = ("time_s", "touch_s", "Bps", "anon_delta", "device_peak_delta", "device_allocations", "bytes_on_device")
    return {c: summarize(s, keys) for c, s in samples.items()}


def phase_verify(model: dict[str, Any], reps: int) -> dict[str, Any]:
    samples: dict[str, list[dict[str, Any]]] = {c: [] for c in VERIFY_CONTENDERS}
    path = model["files"]["distillgan"]
    warm([path])
    for r in range(reps):
        for c in rotate(VERIFY_CONTENDERS, r):
            res = run_child({"op": "verify", "contender": c, "path": path})
            samples[c].append(res)
            progress(f"  verify {c:32s} rep {r + 1}/{reps}: {fmt_time(res.get('time_s'))}")
    return {c: summarize(s, ("time_s", "throughput_Bps")) for c, s in samples.items()}


def phase_inspect(small: dict[str, Any], big: dict[str, Any], reps: int, warm_calls: int) -> dict[str, Any]:
    targets = {"small": small, "big": big}
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {k: {"child": [], "proc": [], "import_only": [], "cli": []} for k in targets}
    script = os.path.join(os.path.dirname(sys.executable), "distillgan")  # the console script, as a user runs it
    warm([small["files"]["distillgan"], big["files"]["distillgan"]])
    cmd_inspect = "import sys, distillgan; distillgan.inspect(sys.argv[1])"
    for r in range(reps):
        for k in rotate(list(targets), r):
            path = targets[k]["files"]["distillgan"]
            res = run_child({"op": "inspect", "path": path, "warm_calls": warm_calls})
            samples[k]["child"].append(res)
            for kind, code in (("proc", cmd_inspect), ("import_only", "import sys, distillgan")):
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-c", code, path], check=True, env=CHILD_ENV)
                samples[k][kind].append({"time_s": time.perf_counter() - t0})
            if os.path.exists(script):
                t0 = time.perf_counter()
                subprocess.run([script, "inspect", "--no-tensors", path], check=True, env=CHILD_ENV, stdout=subprocess.DEVNULL)
                samples[k]["cli"].append({"time_s": time.perf_counter() - t0})
            progress(
                f"  inspect {k:5s} rep {r + 1}/{reps}: first {fmt_time(res.get('time_s'))}, warm median {fmt_time(res.get('warm_median_s'))}"
            )
    # cold: evict the archive with posix_fadvise(DONTNEED), then one inspect; mincore tells what it read
    cold: dict[str, list[dict[str, Any]]] = {k: [] for k in targets}
    for r in range(reps):
        for k in rotate(list(targets), r):
            cold[k].append(run_child({"op": "inspect_cold", "path": targets[k]["files"]["distillgan"]}))
    out: dict[str, Any] = {}
    for k in targets:
        out[k] = {
            "label": targets[k]["label"],
            "file_bytes": targets[k]["file_bytes"]["distillgan"],
            "child": summarize(samples[k]["child"], ("time_s", "warm_median_s", "warm_p10_s", "warm_p90_s")),
            "process_wall": summarize(samples[k]["proc"]),
            "import_only_wall": summarize(samples[k]["import_only"]),
            "cli_wall": summarize(samples[k]["cli"]),
            "cold": summarize(cold[k], ("time_s", "bytes_brought_in")),
        }
    return out


def phase_many(counts: list[int], reps: int, tmp: str) -> dict[str, Any]:
    """`distillgan inspect` CLI wall on files of many tensors, against safetensors' safe_open + keys() in a fresh process."""
    script = os.path.join(os.path.dirname(sys.executable), "distillgan")
    st_keys = "import sys; from safetensors import safe_open\nwith safe_open(sys.argv[1], 'np') as f: f.keys()"
    dg_keys = "import sys, distillgan\nwith distillgan.safe_open(sys.argv[1]) as f: f.keys()"
    out: dict[str, Any] = {}
    for n in counts:
        d = tempfile.mkdtemp(prefix=f"many-{n}-", dir=tmp)
        b = run_child({"op": "build_many", "n": n, "dir": d})
        if "error" in b:
            out[str(n)] = {"error": b["error"]}
            continue
        files = b["files"]
        warm(list(files.values()))
        runs: dict[str, list[dict[str, Any]]] = {"cli --no-tensors": [], "cli": [], "distillgan.safe_open+keys": [], "safetensors.safe_open+keys": []}
        for r in range(reps):
            for c in rotate(list(runs), r):
                if c.startswith("cli"):
                    cmd = [script, "inspect", *(["--no-tensors"] if "no-tensors" in c else []), files["distillgan"]]
                elif c.startswith("distillgan"):
                    cmd = [sys.executable, "-c", dg_keys, files["distillgan"]]
                else:
                    cmd = [sys.executable, "-c", st_keys, files["safetensors"]]
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True, env=CHILD_ENV, stdout=subprocess.DEVNULL)
                runs[c].append({"time_s": time.perf_counter() - t0})
        out[str(n)] = {"names": b["names"], "file_bytes": b["file_bytes"], **{c: summarize(v) for c, v in runs.items()}}
        progress(f"  {n} tensors: cli --no-tensors {fmt_time(med(out[str(n)]['cli --no-tensors']))}, "
                 f"safetensors keys {fmt_time(med(out[str(n)]['safetensors.safe_open+keys']))}")
        shutil.rmtree(d, ignore_errors=True)
    return out


def phase_remote(model: dict[str, Any], reps: int, server: Any) -> dict[str, Any]:
    """inspect / load_model+touch / verify of the same archive: local path vs loopback HTTP (bench/httpserve.py)."""
    path = model["files"]["distillgan"]
    url = server.add(path, f"{model['label'].replace(' ', '')}/model.distillgan")
    stats_url = server.base_url + "/_stats"
    targets = {"local": path, "http": url}
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {op: {c: [] for c in REMOTE_CONTENDERS} for op in REMOTE_OPS}
    warm([path])  # the server reads the file from the page cache, as the local contender does
    for r in range(reps):
        for op in REMOTE_OPS:
            for c in rotate(REMOTE_CONTENDERS, r):
                server.reset()
                res = run_child({"op": REMOTE_JOB[op], "contender": c, "target": targets[c], "stats_url": stats_url,
                                 "file_bytes": model["file_bytes"]["distillgan"]})
                if c == "http":
                    res["server_total"] = {k: v for k, v in server.stats().items() if k != "log"}
                samples[op][c].append(res)
                extra = f"  {res['requests']} req, {res['bytes_sent'] / 1024:.1f} KiB" if "requests" in res else ""
                progress(
                    f"  remote {op:10s} {c:5s} rep {r + 1}/{reps}: {fmt_time(res.get('time_s'))}  "
                    f"ΔRSS {fmt_mib(res.get('rss_delta'))}{extra}"
                )
    keys = {
        "inspect": ("time_s", "warm_median_s", "requests", "bytes_sent", "import_remote_s"),
        "load+touch": ("time_s", "open_s", "touch_s", "requests", "bytes_sent", "load_Bps", "max_in_flight", "touched_bytes"),
        "verify": ("time_s", "requests", "bytes_sent", "verify_Bps", "max_in_flight"),
    }
    out: dict[str, Any] = {"url": url, "file_bytes": model["file_bytes"]["distillgan"]}
    for op in REMOTE_OPS:
        out[op] = {c: summarize(samples[op][c], keys[op]) for c in REMOTE_CONTENDERS}
    return out


def _script(name: str, *args: str) -> Any:
    """Run bench/<name> with ``--json`` and return what it printed last, or ``{"error": ...}``."""
    cmd = [sys.executable, os.path.join(HERE, name), *args, "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=CHILD_ENV, timeout=7200, check=False)
    if p.returncode != 0:
        return {"error": (p.stderr or p.stdout)[-2000:]}
    return json.loads(p.stdout)


def phase_header(sizes: str, reps: int) -> dict[str, Any]:
    """bench/header.py: µs per tensor to parse a safetensors header, distillgan vs safe_open + keys()."""
    rows = _script("header.py", "--sizes", sizes, "--reps", str(reps))
    return rows if isinstance(rows, dict) else {"rows": rows}


def phase_library(n: int, rounds: int, tmp: str) -> dict[str, Any]:
    """bench/library.py: one save into a folder of 10 models vs one of ``n``, alternating (and the sequence)."""
    result: dict[str, Any] = _script("library.py", "--n", str(n), "--rounds", str(rounds), "--tmp", tmp)
    return result


def _max(summary: dict[str, Any], key: str) -> float | None:
    return summary[key]["max"] if key in summary else None


# --- report ---------------------------------------------------------------------------


def paired(a: dict[str, Any], b: dict[str, Any], key: str = "time_s") -> float | None:
    """Median over repetitions of a/b, each repetition's two samples taken moments apart (less drift on a shared machine)."""
    rs = [x[key] / y[key] for x, y in zip(a["samples"], b["samples"]) if key in x and key in y and y[key]]
    return statistics.median(rs) if rs else None


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def fmt_ratio(r: float | None) -> str:
    return "—" if r is None else f"{r:.2f}×"


def tables(res: dict[str, Any]) -> str:
    out = []
    m = res["machine"]
    out.append(f"## distillgan benchmark — {m['date_utc']}\n")
    out.append(
        f"- machine: {m['cpu']}, {m['cores_usable']}/{m['cores_online']} cores usable, "
        f"{(m['mem_total'] or 0) / (1 << 30):.1f} GiB RAM, Linux {m['kernel']}; temp files on {m['tmp_dir_fs']}"
    )
    out.append(
        f"- software: Python {m['python']}, torch {m['torch']} ({res.get('torch_threads')} intra-op threads), "
        f"safetensors {m['safetensors']}, numpy {m['numpy']}, msgpack {m['msgpack']}, zlib {m['zlib_runtime']}, "
        f"distillgan {m['distillgan']} @ {m['distillgan_commit']} (imported from {res.get('distillgan_file')})"
    )
    seen = m.get("loadavg_1min_seen") or [0.0]
    out.append(
        f"- shared machine: 1-min load average {min(seen):.2f} … {max(seen):.2f} (median {statistics.median(seen):.2f}) "
        f"when the {len(seen)} children started; at start {tuple(round(x, 2) for x in m['loadavg_start'])}, "
        f"at end {tuple(round(x, 2) for x in m.get('loadavg_end', ()))}"
    )
    out.append(
        f"- method: median of {res['config']['reps']} repetitions, each in a fresh subprocess, contenders alternating "
        "(rotating start); all reads from a warm page cache (every file read once before its phase); "
        "peak RSS Δ = ru_maxrss after the operation − the same child's RSS just before it (high-water mark reset after imports and setup)\n"
    )
    for size in res["sizes"]:
        s = res["sizes"][size]
        mdl = s["model"]
        lay = mdl["layout"]
        out.append(
            f"### {mdl['label']} model — {mdl['tensors']} tensors "
            f"({lay['model']['tensors']} model + {lay['vocoder']['tensors']} vocoder), "
            f"{mdl['model_bytes'] / MiB:.1f} MiB of tensor data; files: distillgan {fmt_mib(mdl['file_bytes']['distillgan'])}, "
            f"safetensors {fmt_mib(mdl['file_bytes']['safetensors'])}, torch {fmt_mib(mdl['file_bytes']['torch'])}\n"
        )
        out.append("| operation | contender | median | min … max | ratio to peer (peer) | peak RSS Δ (median) | notes |")
        out.append("|---|---|---:|---:|---|---:|---|")
        if "save" in s:
            for c in SAVE_CONTENDERS:
                row = s["save"][c]
                peer = SAVE_PEER[c]
                t = row.get("time_s")
                note = "full API: temp file + fsync + link + dir fsync + index" if c == "distillgan.save_model" else ""
                if row["errors"]:
                    note += f" ERRORS: {len(row['errors'])}"
                out.append(
                    f"| save | {c} | {fmt_time(med(row))} | {fmt_time(t and t['min'])} … {fmt_time(t and t['max'])} | "
                    f"{fmt_ratio(ratio(med(row), med(s['save'][peer])))} ({peer}) | {fmt_mib(med(row, 'rss_delta'))} | {note} |"
                )
        if "load" in s:
            for c in LOAD_CONTENDERS:
                row = s["load"][c]
                t = row.get("time_s")
                note = f"call {fmt_time(med(row, 'open_s'))} + touch {fmt_time(med(row, 'touch_s'))}"
                if row["errors"]:
                    note += f" ERRORS: {len(row['errors'])}"
                peer = LOAD_PEERS.get(c, LOAD_PEER)
                out.append(
                    f"| load+touch | {c} | {fmt_time(med(row))} | {fmt_time(t and t['min'])} … {fmt_time(t and t['max'])} | "
                    f"{fmt_ratio(ratio(med(row), med(s['load'][peer])))} ({peer}) | {fmt_mib(med(row, 'rss_delta'))} | {note} |"
                )
        if "device" in s:
            for c in DEVICE_CONTENDERS:
                row = s["device"][c]
                t = row.get("time_s")
                notes = []
                if med(row, "Bps") is not None:
                    notes.append(f"{med(row, 'Bps') / 1e9:.2f} GB/s of {fmt_mib(med(row, 'bytes_on_device'))}")
                if med(row, "device_peak_delta") is not None:
                    notes.append(f"device peak {fmt_mib(med(row, 'device_peak_delta'))}, {med(row, 'device_allocations'):.0f} allocations")
                notes.append(f"ΔRssAnon {fmt_mib(med(row, 'anon_delta'))}")
                if row["errors"]:
                    notes.append(f"ERRORS: {len(row['errors'])}")
                peer = DEVICE_PEERS[c]
                out.append(
                    f"| load to {res['config'].get('device')} | {c} | {fmt_time(med(row))} | {fmt_time(t and t['min'])} … {fmt_time(t and t['max'])} | "
                    f"{fmt_ratio(ratio(med(row), med(s['device'][peer])))} ({peer}) | {fmt_mib(med(row, 'rss_delta'))} | {'; '.join(notes)} |"
                )
        if "verify" in s:
            for c in VERIFY_CONTENDERS:
                row = s["verify"][c]
                t = row.get("time_s")
                thr = med(row, "throughput_Bps")
                note = f"{thr / (1 << 30):.2f} GiB/s" if thr else ""
                if row["errors"]:
                    note += f" ERRORS: {len(row['errors'])}"
                out.append(
                    f"| verify | {c} | {fmt_time(med(row))} | {fmt_time(t and t['min'])} … {fmt_time(t and t['max'])} | "
                    f"{fmt_ratio(ratio(med(row), med(s['verify'][VERIFY_PEER])))} ({VERIFY_PEER}) | {fmt_mib(med(row, 'rss_delta'))} | {note} |"
                )
        if "remote" in s:
            R = s["remote"]
            for op in REMOTE_OPS:
                for c in REMOTE_CONTENDERS:
                    row = R[op][c]
                    t = row.get("time_s")
                    notes = []
                    if op == "inspect":
                        notes.append(f"first call in a fresh process; warm in-process {fmt_time(med(row, 'warm_median_s'))}")
                    if op == "load+touch":
                        notes.append(f"call {fmt_time(med(row, 'open_s'))} + touch {fmt_time(med(row, 'touch_s'))}")
                        if med(row, "load_Bps") is not None:
                            notes.append(f"load {med(row, 'load_Bps') / 1e9:.2f} GB/s")
                    if op == "verify" and med(row, "verify_Bps") is not None:
                        notes.append(f"{med(row, 'verify_Bps') / 1e9:.2f} GB/s")
                    if op == "inspect" and any(x.get("torch_imported") for x in row["samples"] if "error" not in x):
                        notes.append("torch imported: YES")
                    if c == "http":
                        req, sent = med(row, "requests"), med(row, "bytes_sent")
                        if req is not None and sent is not None:
                            notes.append(
                                f"{req:.0f} requests, {sent / 1024:.1f} KiB sent"
                                if op == "inspect"
                                else f"{req:.0f} requests, {sent / MiB:.1f} MiB sent"
                            )
                        if op == "inspect" and med(row, "import_remote_s") is not None:
                            notes.append(f"fsspec import {fmt_time(med(row, 'import_remote_s'))} (untimed setup)")
                        if op == "load+touch" and med(row, "rss_delta") is not None:
                            notes.append(f"ΔRSS − tensor bytes = {fmt_mib(med(row, 'rss_delta') - mdl['model_bytes'])}")
                        if med(row, "max_in_flight") is not None:
                            notes.append(f"{med(row, 'max_in_flight'):.0f} requests in flight at most")
                    if row["errors"]:
                        notes.append(f"ERRORS: {len(row['errors'])}")
                    out.append(
                        f"| remote {op} | distillgan ({c}) | {fmt_time(med(row))} | {fmt_time(t and t['min'])} … {fmt_time(t and t['max'])} | "
                        f"{fmt_ratio(ratio(med(row), med(R[op]['local'])))} (local) | {fmt_mib(med(row, 'rss_delta'))} | {'; '.join(notes)} |"
                    )
        out.append("")
    if "inspect" in res:
        ins = res["inspect"]
        out.append("### inspect (distillgan.inspect, no torch)\n")
        out.append(
            "| archive | file | warm in-process median [p10…p90] | fresh-process first call | process wall (start+import+inspect) "
            "| process wall, import only | `distillgan inspect` CLI wall | peak RSS Δ (first call) | evicted-cache call: time, bytes read |"
        )
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---|")
        for k in ("small", "big"):
            row = ins[k]
            ch = row["child"]
            out.append(
                f"| {row['label']} | {fmt_mib(row['file_bytes'])} | {fmt_time(med(ch, 'warm_median_s'))} "
                f"[{fmt_time(med(ch, 'warm_p10_s'))}…{fmt_time(med(ch, 'warm_p90_s'))}] | {fmt_time(med(ch))} | "
                f"{fmt_time(med(row['process_wall']))} | {fmt_time(med(row['import_only_wall']))} | "
                f"{fmt_time(med(row.get('cli_wall')))} | {fmt_mib(med(ch, 'rss_delta'))} | "
                f"{fmt_time(med(row['cold']))}, {(med(row['cold'], 'bytes_brought_in') or 0) / 1024:.0f} KiB |"
            )
        torch_seen = any(
            s.get("torch_imported") for k in ("small", "big") for s in ins[k]["child"]["samples"] if "error" not in s
        )
        out.append(f"\ntorch imported by inspect: {'YES' if torch_seen else 'no'}\n")
    if "many" in res:
        out.append("### inspect of files with many tensors (fresh processes, wall; each file has one alias per eight tensors)\n")
        out.append("| tensors | file | `distillgan inspect --no-tensors` | `distillgan inspect` (table to /dev/null) | `distillgan.safe_open` + `keys()` | `safetensors.safe_open` + `keys()` |")
        out.append("|---:|---:|---:|---:|---:|---:|")
        for n, row in res["many"].items():
            if "error" in row:
                out.append(f"| {int(n):,} | ERROR | | | | |")
                continue
            out.append(f"| {int(n):,} | {fmt_mib(row['file_bytes'])} | {fmt_time(med(row['cli --no-tensors']))} | {fmt_time(med(row['cli']))} | "
                       f"{fmt_time(med(row['distillgan.safe_open+keys']))} | {fmt_time(med(row['safetensors.safe_open+keys']))} |")
        out.append("")
    if "header" in res:
        h = res["header"]
        out.append("### safetensors header parsing (bench/header.py; CPU time of a fresh process, median)\n")
        if "error" in h:
            out.append(f"ERROR: {h['error']}\n")
        else:
            out.append("| tensors | header bytes | contender | µs per tensor | ratio to safetensors |")
            out.append("|---:|---:|---|---:|---:|")
            for r in h["rows"]:
                out.append(f"| {r['tensors']:,} | {r['header_bytes']:,} | {r['contender']} | {r['us_per_tensor']:.2f} | {r['ratio_vs_safetensors']:.2f}× |")
            out.append("")
    if "library" in res:
        lib = res["library"]
        out.append("### per-save cost as the folder grows (bench/library.py; the same tiny model, save_model with fsync)\n")
        if "error" in lib:
            out.append(f"ERROR: {lib['error']}\n")
        else:
            out.append("| measurement | folder of 10 | folder of " + f"{lib['n']:,}" + " | ratio |")
            out.append("|---|---:|---:|---:|")
            seq, last = lib["sequence"], str(lib["sequence_ratio"]["last"])
            out.append(
                f"| sequence: median of the {lib['window']} saves before save #10 / #{last}, wall | {fmt_time(seq['10']['wall_s'])} | "
                f"{fmt_time(seq[last]['wall_s'])} | {lib['sequence_ratio']['wall']:.2f}× |"
            )
            out.append(f"| same, CPU | {fmt_time(seq['10']['cpu_s'])} | {fmt_time(seq[last]['cpu_s'])} | {lib['sequence_ratio']['cpu']:.2f}× |")
            if "paired" in lib:
                pr = lib["paired"]
                out.append(f"| paired, {lib['rounds']} rounds alternating, wall | {fmt_time(pr['small_wall_s'])} | {fmt_time(pr['large_wall_s'])} | {pr['ratio_wall']:.2f}× |")
                out.append(f"| same, CPU | {fmt_time(pr['small_cpu_s'])} | {fmt_time(pr['large_cpu_s'])} | {pr['ratio_cpu']:.2f}× |")
            out.append(f"\nindex after {lib['n']:,} saves: {lib['index_bytes'] / 1024:.0f} KiB\n")
    out.append("### targets\n")
    out.append("| target | size | figure | result |")
    out.append("|---|---|---|---|")
    for t in res["targets"]:
        out.append(f"| {t['target']} | {t['size']} | {t['figure']} | {t['result']} |")
    out.append("")
    return "\n".join(out)


def evaluate(res: dict[str, Any]) -> list[dict[str, Any]]:
    targets: list[dict[str, Any]] = []

    def add(name: str, size: str, figure: str, ok: bool | None) -> None:
        targets.append(
            {
                "target": name,
                "size": size,
                "figure": figure,
                "met": ok,
                "result": "n/a" if ok is None else ("MET" if ok else "NOT MET"),
            }
        )

    for n, row in res.get("many", {}).items():
        if "error" not in row:
            t = med(row["cli --no-tensors"])
            add(f"`distillgan inspect --no-tensors` ≤ {INSPECT_CLI_S:.2f} s in a fresh process", f"{int(n):,} tensors",
                f"{fmt_time(t)} (safetensors safe_open + keys() {fmt_time(med(row['safetensors.safe_open+keys']))})",
                None if t is None else t <= INSPECT_CLI_S)
    for size in res["sizes"]:
        s = res["sizes"][size]
        label = s["model"]["label"]
        if "device" in s:
            D, dev = s["device"], res["config"].get("device")
            for c in ("distillgan.load_model(device)", "distillgan.load_model(meta module, assign, device)"):
                row, peer = D[c], D[DEVICE_PEERS[c]]
                r = ratio(med(row), med(peer))
                add(f"{c} ≤ {DEVICE_VS_ST:.2f}× {DEVICE_PEERS[c]} ({dev})", label,
                    f"{fmt_time(med(row))} vs {fmt_time(med(peer))} = {fmt_ratio(r)} (paired {fmt_ratio(paired(row, peer))})",
                    None if r is None else r <= DEVICE_VS_ST)
            row = D["distillgan.load_model(device)"]
            anon = _max(row, "anon_delta")
            add(f"load_model(device={dev}): no intermediate CPU copy (ΔRssAnon < {DEVICE_ANON_SLACK // MiB} MiB)", label,
                f"largest ΔRssAnon {fmt_mib(anon)} for {fmt_mib(med(row, 'bytes_on_device'))} of tensors", None if anon is None else anon < DEVICE_ANON_SLACK)
            # a second copy of any tensor is one more device allocation; the peak is compared with
            # safetensors.load_file(device), which allocates each tensor once (allocator rounding included)
            allocs, tensors = _max(row, "device_allocations"), s["model"]["tensors"]
            peak, st_peak = _max(row, "device_peak_delta"), _max(D["safetensors.load_file(device)"], "device_peak_delta")
            add(f"load_model(device={dev}): each tensor copied to the device once", label,
                f"{allocs if allocs is None else int(allocs)} device allocations for {tensors} tensors; device peak {fmt_mib(peak)} "
                f"vs {fmt_mib(st_peak)} for safetensors.load_file ({fmt_mib(med(row, 'bytes_on_device'))} of tensors)",
                None if allocs is None or peak is None or st_peak is None else (allocs <= tensors and peak <= 1.05 * st_peak))
        if "load" in s:
            L = s["load"]
            dg, stv, tl = med(L["distillgan.load_model"]), med(L[LOAD_PEER]), med(L["torch.load(weights_only)"])
            r = ratio(dg, stv)
            pr = paired(L["distillgan.load_model"], L[LOAD_PEER])
            add(
                f"load+touch ≤ {LOAD_VS_ST:.2f}× safetensors.load_file",
                label,
                f"{fmt_time(dg)} vs {fmt_time(stv)} = {fmt_ratio(r)} (paired per-rep median {fmt_ratio(pr)})",
                None if r is None else r <= LOAD_VS_ST,
            )
            r = ratio(tl, dg)
            pr = paired(L["torch.load(weights_only)"], L["distillgan.load_model"])
            add(
                f"load+touch ≥ {LOAD_VS_TORCH:.0f}× faster than torch.load(weights_only=True)",
                label,
                f"{fmt_time(tl)} / {fmt_time(dg)} = {fmt_ratio(r)} faster (paired {fmt_ratio(pr)}; both from page cache)",
                None if r is None else r >= LOAD_VS_TORCH,
            )
            rss = med(L["distillgan.load_model"], "rss_delta")
            lim = s["model"]["model_bytes"] + LOAD_RSS_SLACK
            add(
                "load peak RSS Δ ≤ model bytes + 64 MiB",
                label,
                f"{fmt_mib(rss)} vs limit {fmt_mib(lim)}",
                None if rss is None else rss <= lim,
            )
        if "save" in s:
            S = s["save"]
            sm, wa = med(S["distillgan.save_model"]), med(S["distillgan.write_archive+fsync"])
            s["save_model_overhead"] = None if sm is None or wa is None else {"seconds": sm - wa, "ratio": sm / wa}
            peer = med(S["safetensors.save_file+fsync"])
            for c in ("distillgan.save_model", "distillgan.write_archive+fsync"):
                r = ratio(med(S[c]), peer)
                pr = paired(S[c], S["safetensors.save_file+fsync"])
                add(
                    f"save (fsync) ≤ {SAVE_VS_ST:.2f}× safetensors.save_file+fsync",
                    label,
                    f"{c}: {fmt_time(med(S[c]))} vs {fmt_time(peer)} = {fmt_ratio(r)} (paired {fmt_ratio(pr)})",
                    None if r is None else r <= SAVE_VS_ST,
                )
            r = ratio(med(S["distillgan.write_archive"]), med(S["safetensors.save_file"]))
            pr = paired(S["distillgan.write_archive"], S["safetensors.save_file"])
            add(
                f"save (no fsync) ≤ {SAVE_VS_ST:.2f}× safetensors.save_file",
                label,
                f"{fmt_time(med(S['distillgan.write_archive']))} vs {fmt_time(med(S['safetensors.save_file']))} = {fmt_ratio(r)} (paired {fmt_ratio(pr)})",
                None if r is None else r <= SAVE_VS_ST,
            )
            worst = max(
                (
                    (med(S[c], "rss_delta"), c)
                    for c in SAVE_CONTENDERS
                    if c.startswith("distillgan") and med(S[c], "rss_delta") is not None
                ),
                default=(None, None),
            )
            add(
                "save peak RSS Δ ≤ 64 MiB",
                label,
                f"worst distillgan variant {worst[1]}: {fmt_mib(worst[0])}",
                None if worst[0] is None else worst[0] <= SAVE_RSS,
            )
        if "verify" in s:
            V = s["verify"]
            a, b = med(V["distillgan.verify"], "throughput_Bps"), med(V[VERIFY_PEER], "throughput_Bps")
            r = ratio(a, b)
            pr = paired(V["distillgan.verify"], V[VERIFY_PEER], "throughput_Bps")
            add(
                f"verify throughput ≥ {VERIFY_VS_ZLIB:.1f}× zlib.crc32 (in-memory)",
                label,
                f"{(a or 0) / (1 << 30):.2f} vs {(b or 0) / (1 << 30):.2f} GiB/s = {fmt_ratio(r)} (paired {fmt_ratio(pr)})",
                None if r is None else r >= VERIFY_VS_ZLIB,
            )
        if "remote" in s:
            R = s["remote"]
            h = R["inspect"]["http"]
            req, sent = _max(h, "requests"), _max(h, "bytes_sent")
            add(
                f"remote inspect ≤ {REMOTE_INSPECT_REQUESTS} requests and ≤ {REMOTE_INSPECT_BYTES >> 10} KiB (loopback HTTP)",
                label,
                f"{'—' if req is None else f'{req:.0f}'} requests, {'—' if sent is None else f'{sent / 1024:.1f}'} KiB of body "
                f"(worst of {h['n']} reps, one call; archive {fmt_mib(R['file_bytes'])}); "
                f"{fmt_time(med(h))} vs {fmt_time(med(R['inspect']['local']))} local",
                None if req is None or sent is None else req <= REMOTE_INSPECT_REQUESTS and sent <= REMOTE_INSPECT_BYTES,
            )
            L = R["load+touch"]
            bps = med(L["http"], "load_Bps")
            add(
                f"remote load_model ≥ {REMOTE_LOAD_BPS / 1e9:.1f} GB/s (loopback HTTP; the target is for 1 GiB)",
                label,
                f"{'—' if bps is None else f'{bps / 1e9:.2f}'} GB/s ({fmt_time(med(L['http'], 'open_s'))} for {fmt_mib(R['file_bytes'])}); "
                f"local {fmt_time(med(L['local'], 'open_s'))}",
                None if bps is None else bps >= REMOTE_LOAD_BPS,
            )
            rss, tb = med(L["http"], "rss_delta"), med(L["http"], "touched_bytes")
            add(
                "remote load peak RSS Δ ≤ tensor bytes + 64 MiB",
                label,
                f"{fmt_mib(rss)} vs limit {fmt_mib(None if tb is None else tb + REMOTE_LOAD_RSS_SLACK)} (local {fmt_mib(med(L['local'], 'rss_delta'))})",
                None if rss is None or tb is None else rss <= tb + REMOTE_LOAD_RSS_SLACK,
            )
            r = ratio(med(L["http"]), med(L["local"]))
            add(
                "remote load+touch vs local (information)",
                label,
                f"{fmt_time(med(L['http']))} vs {fmt_time(med(L['local']))} = {fmt_ratio(r)} (paired {fmt_ratio(paired(L['http'], L['local']))}); "
                f"ΔRSS {fmt_mib(med(L['http'], 'rss_delta'))} vs {fmt_mib(med(L['local'], 'rss_delta'))}",
                None,
            )
    if "inspect" in res:
        ins = res["inspect"]
        small, big = ins["small"], ins["big"]
        lbl = f"{big['label']} vs {small['label']}"
        a, b = med(big["child"], "warm_median_s"), med(small["child"], "warm_median_s")
        r = ratio(a, b)
        add(
            f"inspect big ≤ {INSPECT_RATIO}× inspect 16 MiB (warm, in-process)",
            lbl,
            f"{fmt_time(a)} vs {fmt_time(b)} = {fmt_ratio(r)}",
            None if r is None else r <= INSPECT_RATIO,
        )
        a2, b2 = med(big["child"]), med(small["child"])
        r2 = ratio(a2, b2)
        add(
            f"inspect big ≤ {INSPECT_RATIO}× inspect 16 MiB (first call, fresh process)",
            lbl,
            f"{fmt_time(a2)} vs {fmt_time(b2)} = {fmt_ratio(r2)}",
            None if r2 is None else r2 <= INSPECT_RATIO,
        )
        add(
            f"inspect big < {INSPECT_WARM_MS:.0f} ms (warm, in-process)",
            big["label"],
            fmt_time(a),
            None if a is None else a * 1e3 < INSPECT_WARM_MS,
        )
    if "header" in res and "rows" in res["header"]:
        for r in res["header"]["rows"]:
            if r["contender"] != "distillgan":
                continue
            add(
                f"header parse ≤ {HEADER_US:.0f} µs per tensor",
                f"{r['tensors']:,} tensors",
                f"{r['us_per_tensor']:.2f} µs per tensor ({r['ratio_vs_safetensors']:.2f}× safetensors safe_open + keys())",
                r["us_per_tensor"] <= HEADER_US,
            )
    if "library" in res and "sequence_ratio" in res["library"]:
        lib = res["library"]
        pr = lib.get("paired")
        figure = f"sequence {lib['sequence_ratio']['wall']:.2f}× wall, {lib['sequence_ratio']['cpu']:.2f}× CPU"
        if pr:
            figure = f"paired {pr['ratio_wall']:.2f}× wall, {pr['ratio_cpu']:.2f}× CPU; " + figure
        worst = pr["ratio_wall"] if pr else lib["sequence_ratio"]["wall"]
        add(f"save into {lib['n']:,} models ≤ {LIBRARY_RATIO}× save into 10", "tiny model", figure, worst <= LIBRARY_RATIO)
    return targets


# --- main -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--sizes", default="16M,256M", help="comma-separated model sizes (tensor bytes, model + vocoder); default 16M,256M"
    )
    ap.add_argument("--large", action="store_true", help="also run a 1 GiB model")
    ap.add_argument("--reps", type=int, default=5, help="repetitions per contender (default 5; each one a fresh subprocess)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"), help="folder for the JSON and markdown results")
    ap.add_argument("--tmp", default="/tmp", help="where the temporary models go (default /tmp)")
    ap.add_argument(
        "--phases",
        default="save,load,verify,inspect,remote,header,library,many",
        help="subset of save,load,verify,inspect,remote,header,library,many,device (default: all but device, which needs a GPU)",
    )
    ap.add_argument("--device", default="cuda", help="torch device of the device phase (default cuda; that phase runs only when named)")
    ap.add_argument("--many-tensors", default="1000,10000,100000", help="tensor counts of the many phase (inspect CLI wall)")
    ap.add_argument("--header-sizes", default="1000,10000,100000,1000000", help="tensor counts of the header phase")
    ap.add_argument("--library-models", type=int, default=1000, help="size of the large folder in the library phase (default 1000)")
    ap.add_argument("--library-rounds", type=int, default=40, help="alternating rounds of the library phase (default 40)")
    ap.add_argument("--inspect-calls", type=int, default=200, help="warm inspect calls per child (capped at ~3 s)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument(
        "--rev",
        help="benchmark distillgan/ as committed at this git revision (exported to the temp folder) "
        "instead of the working tree, e.g. HEAD while the library is being edited",
    )
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads in the children (default 1)")
    ap.add_argument("--report", metavar="JSON", help="print the tables and targets of an earlier run's JSON (re-evaluated) and exit")
    args = ap.parse_args(argv)

    if args.report:
        with open(args.report) as f:
            earlier = json.load(f)
        earlier["targets"] = evaluate(earlier)
        print(tables(earlier))
        return 0

    sizes = [parse_size(x) for x in args.sizes.split(",") if x.strip()]
    if args.large and (1 << 30) not in sizes:
        sizes.append(1 << 30)
    sizes = sorted(set(sizes))
    phases = {p.strip() for p in args.phases.split(",")}
    tmp = tempfile.mkdtemp(prefix="distillgan-bench-", dir=args.tmp)
    CHILD_ENV["BENCH_TORCH_THREADS"] = str(args.threads)
    machine = machine_info(tmp)
    if args.rev:
        src, full = export_rev(args.rev, tmp)
        CHILD_ENV["PYTHONPATH"] = src + (os.pathsep + CHILD_ENV["PYTHONPATH"] if CHILD_ENV.get("PYTHONPATH") else "")
        machine["distillgan_commit"] = f"{full[:7]} (exported with --rev {args.rev})"
        CHILD_ENV["BENCH_DISTILLGAN_SRC"] = src
    res: dict[str, Any] = {
        "machine": machine,
        "config": {
            "sizes": [size_label(s) for s in sizes],
            "size_bytes": sizes,
            "reps": args.reps,
            "phases": sorted(phases),
            "device": args.device if "device" in phases else None,
            "tmp": tmp,
        },
        "sizes": {},
    }
    t_start = time.perf_counter()
    server = None
    try:
        if "remote" in phases:
            if HERE not in sys.path:
                sys.path.insert(0, HERE)
            from httpserve import RangeServer

            server = RangeServer()  # loopback, port 0; a thread of this process (idle while a child runs)
            res["config"]["http_server"] = server.base_url
            progress(f"HTTP server on {server.base_url}")
        models: dict[str, dict[str, Any]] = {}
        model_phases = {"save", "load", "verify", "inspect", "remote", "device"} & phases
        for size in sizes if model_phases else []:
            label = size_label(size)
            d = os.path.join(tmp, label.replace(" ", ""))
            os.makedirs(d)
            progress(f"building {label} model in {d} ...")
            b = run_child({"op": "build", "size_bytes": size, "dir": d, "label": label.replace(" ", "")})
            if "error" in b:
                raise RuntimeError(f"build failed: {b['error']}")
            b["label"] = label
            res["distillgan_file"] = b.get("distillgan_file")
            models[label] = b
            res["sizes"][label] = {"model": b}
            progress(f"  {b['tensors']} tensors, {b['model_bytes'] / MiB:.1f} MiB, built in {b['build_s']:.1f} s")
        res["torch_threads"] = None
        for label, mdl in models.items():
            s = res["sizes"][label]
            if "save" in phases:
                progress(f"[{label}] save")
                s["save"] = phase_save(mdl, args.reps, tmp)
            if "load" in phases:
                progress(f"[{label}] load+touch")
                s["load"] = phase_load(mdl, args.reps)
            if "device" in phases:
                progress(f"[{label}] load onto {args.device}")
                s["device"] = phase_device(mdl, args.reps, args.device)
            if "verify" in phases:
                progress(f"[{label}] verify")
                s["verify"] = phase_verify(mdl, args.reps)
            if server is not None:
                progress(f"[{label}] remote (loopback HTTP) vs local")
                s["remote"] = phase_remote(mdl, args.reps, server)
        if "inspect" in phases:
            labels = list(models)
            progress(f"inspect {labels[0]} vs {labels[-1]}")
            res["inspect"] = phase_inspect(models[labels[0]], models[labels[-1]], args.reps, args.inspect_calls)
        if "many" in phases:
            progress(f"inspect of files with {args.many_tensors} tensors")
            res["many"] = phase_many([int(x) for x in args.many_tensors.split(",") if x.strip()], args.reps, tmp)
        if "header" in phases:
            progress(f"header parsing, {args.header_sizes} tensors")
            res["header"] = phase_header(args.header_sizes, min(args.reps, 3))
        if "library" in phases:
            progress(f"per-save cost, folder of 10 vs {args.library_models} models")
            res["library"] = phase_library(args.library_models, args.library_rounds, tmp)
        res["torch_threads"] = _torch_threads()
    finally:
        if server is not None:
            server.close()
        if args.keep:
            progress(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    res["machine"]["loadavg_end"] = os.getloadavg()
    res["machine"]["loadavg_1min_seen"] = LOADAVG_SEEN
    res["elapsed_s"] = time.perf_counter() - t_start
    res["targets"] = evaluate(res)
    text = tables(res)
    print(text)
    os.makedirs(args.out, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    tag = "-".join(x.replace(" ", "") for x in res["config"]["sizes"])
    base = os.path.join(args.out, f"bench-{stamp}-{tag}")
    with open(base + ".json", "w") as f:
        json.dump(res, f, indent=1, default=str)
    with open(base + ".md", "w") as f:
        f.write(text)
    progress(f"wrote {base}.json and {base}.md ({res['elapsed_s']:.0f} s)")
    return 0


def _torch_threads() -> int | None:
    return int(CHILD_ENV.get("BENCH_TORCH_THREADS", "1"))


def export_rev(rev: str, tmp: str) -> tuple[str, str]:
    """Export distillgan/ at git revision ``rev`` into ``tmp``; return (folder for PYTHONPATH, full commit)."""
    root = os.path.dirname(HERE)
    full = subprocess.run(
        ["git", "-C", root, "rev-parse", "--verify", rev + "^{commit}"], capture_output=True, text=True, check=True
    ).stdout.strip()
    dest = os.path.join(tmp, "src")
    os.makedirs(dest)
    arch = subprocess.run(["git", "-C", root, "archive", full, "distillgan"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", dest], input=arch, check=True)
    return dest, full


if __name__ == "__main__":
    sys.exit(main())
