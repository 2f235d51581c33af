"""The JavaScript reader (js/, FORMAT.md §10): its own tests under node, and every vector in both runner modes.

CI installs node (`.ci/run` fails without it); a machine without node skips these with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed (.ci/run requires it)")
READER = ROOT / "js" / "bin" / "distillgan-read.mjs"


def _runner(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "distillgan.conformance", *args], capture_output=True, text=True, timeout=900,
                          check=False, cwd=ROOT)


def test_node_version_is_at_least_18() -> None:
    out = subprocess.run([str(NODE), "--version"], capture_output=True, text=True, check=True).stdout
    assert int(out.strip().lstrip("v").split(".")[0]) >= 18, out


def test_node_test_runner_passes(tmp_path: Path) -> None:
    """`node --test js/test/` (the reader's API), with a 64 MiB model to show that opening reads only headers."""
    import torch

    from distillgan import save_file

    big = tmp_path / "big.distillgan"
    save_file({"w": torch.zeros(16 << 20), "b": torch.ones(3)}, big)
    proc = subprocess.run([str(NODE), "--test", "js/test/"], capture_output=True, text=True, timeout=300, check=False, cwd=ROOT,
                          env={**os.environ, "DISTILLGAN_BIG_MODEL": str(big)})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "# fail 0" in proc.stdout and "# skipped 0" in proc.stdout, proc.stdout[-2000:]


def test_js_reader_passes_every_vector_in_batch() -> None:
    proc = _runner("--batch", "--reader", f"node {READER} --batch")
    assert proc.returncode == 0, "\n".join(line for line in proc.stdout.splitlines() if not line.startswith("PASS"))[-4000:]
    assert " 0 failed" in proc.stdout


def test_js_reader_passes_every_vector_one_process_per_file() -> None:
    proc = _runner("--reader", f"node {READER} {{path}}")
    assert proc.returncode == 0, "\n".join(line for line in proc.stdout.splitlines() if not line.startswith("PASS"))[-4000:]
    assert " 0 failed" in proc.stdout


def test_js_reader_refuses_a_bad_command_line() -> None:
    proc = subprocess.run([str(NODE), str(READER)], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "usage" in proc.stderr
