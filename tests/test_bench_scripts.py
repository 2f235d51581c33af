"""The benchmark scripts still run: bench/ is how performance is measured, so it must not rot.

Tiny sizes, one repetition, real subprocesses; no timing is asserted (figures go in commit
messages), only that every script produces the rows its report is built from.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"


def _run(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False)


def test_header_script_reports_both_parsers(tmp_path: Path) -> None:
    p = _run(str(BENCH / "header.py"), "--sizes", "10,200", "--reps", "1", "--json", tmp_path=tmp_path)
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout)
    assert {(r["tensors"], r["contender"]) for r in rows} == {(n, c) for n in (10, 200) for c in ("distillgan", "safetensors")}
    assert all(r["us_per_tensor"] > 0 and r["header_bytes"] > 0 for r in rows)


def test_library_script_reports_sequence_and_pairs(tmp_path: Path) -> None:
    p = _run(str(BENCH / "library.py"), "--n", "12", "--window", "3", "--rounds", "2", "--tmp", str(tmp_path), "--json", tmp_path=tmp_path)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout.strip().splitlines()[-1])
    assert set(doc["sequence"]) == {"10", "12"} and doc["sequence_ratio"]["last"] == 12
    assert doc["paired"]["small_wall_s"] > 0 and doc["paired"]["large_wall_s"] > 0
    assert doc["index_bytes"] > 12 * 100  # twelve entries' lines
    assert not any(tmp_path.glob("distillgan-bench-library-*")), "the script leaves its temporary folder behind"


def test_run_script_header_and_library_phases(tmp_path: Path) -> None:
    out = tmp_path / "results"
    p = _run(str(BENCH / "run.py"), "--phases", "header,library", "--header-sizes", "50", "--reps", "1",
             "--library-models", "12", "--library-rounds", "2", "--out", str(out), "--tmp", str(tmp_path), tmp_path=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "header parse ≤ 2 µs per tensor | 50 tensors" in p.stdout
    assert "save into 12 models ≤ 1.5× save into 10" in p.stdout
    (result,) = out.glob("bench-*.json")
    doc = json.loads(result.read_text())
    assert {r["contender"] for r in doc["header"]["rows"]} == {"distillgan", "safetensors"}
    assert doc["library"]["n"] == 12
    assert len(doc["targets"]) == 2 and all(isinstance(t["met"], bool) for t in doc["targets"])


def test_run_script_device_phase_on_the_cpu_and_report(tmp_path: Path) -> None:
    """The device phase (meant for a GPU) runs end to end with --device cpu; --report re-renders its JSON."""
    out = tmp_path / "results"
    p = _run(str(BENCH / "run.py"), "--phases", "device", "--device", "cpu", "--sizes", "1M", "--reps", "1",
             "--out", str(out), "--tmp", str(tmp_path), tmp_path=tmp_path)
    assert p.returncode == 0, p.stderr
    (result,) = out.glob("bench-*.json")
    doc = json.loads(result.read_text())
    rows = next(iter(doc["sizes"].values()))["device"]
    assert set(rows) == {"distillgan.load_model(device)", "safetensors.load_file(device)", "torch.load(mmap,weights_only,map_location)",
                         "distillgan.load_model(meta module, assign, device)", "safetensors.load_model(module on device)"}
    assert all(r["n"] == 1 and not r["errors"] for r in rows.values())
    whole = rows["distillgan.load_model(device)"]["samples"][0]
    assert whole["bytes_on_device"] == rows["safetensors.load_file(device)"]["samples"][0]["bytes_on_device"] > 0
    # on the CPU there is no device allocator: the copy-count target is n/a, the others are judged
    met = {t["target"]: t["met"] for t in doc["targets"]}
    assert met["load_model(device=cpu): each tensor copied to the device once"] is None
    assert isinstance(met["load_model(device=cpu): no intermediate CPU copy (ΔRssAnon < 64 MiB)"], bool)
    again = _run(str(BENCH / "run.py"), "--report", str(result), tmp_path=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "| load to cpu | distillgan.load_model(device) |" in again.stdout and "### targets" in again.stdout


def test_run_script_many_phase(tmp_path: Path) -> None:
    out = tmp_path / "results"
    p = _run(str(BENCH / "run.py"), "--phases", "many", "--many-tensors", "16", "--reps", "1", "--out", str(out),
             "--tmp", str(tmp_path), tmp_path=tmp_path)
    assert p.returncode == 0, p.stderr
    (result,) = out.glob("bench-*.json")
    row = json.loads(result.read_text())["many"]["16"]
    assert row["names"] == 18  # 16 tensors and an alias for every eighth
    assert all(row[c]["n"] == 1 for c in ("cli --no-tensors", "cli", "distillgan.safe_open+keys", "safetensors.safe_open+keys"))
    assert "`distillgan inspect --no-tensors` ≤ 0.15 s in a fresh process | 16 tensors" in p.stdout
