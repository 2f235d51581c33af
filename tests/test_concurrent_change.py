"""Files that another process truncates or rewrites while they are read, and files larger than RAM.

Each scenario runs in a child interpreter, so that a SIGBUS — what reading a truncated mapping
does — fails the test with the signal instead of killing pytest; the truncation and the rewrite are
done by a second process, as another program would.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
import torch

import distillgan
from distillgan import ModelMetadata, save_model

pytestmark = pytest.mark.skipif(os.name == "nt", reason="a file that is open cannot be truncated on Windows")

_CHILD = r"""
import os, subprocess, sys
import distillgan
path, scenario = sys.argv[1], sys.argv[2]

def truncate_from_another_process(size):
    subprocess.run([sys.executable, "-c", f"import os; os.truncate({path!r}, {size})"], check=True)

def rewrite_from_another_process(offset, n):
    code = f"f = open({path!r}, 'r+b'); f.seek({offset}); f.write(bytes([255]) * {n}); f.close()"
    subprocess.run([sys.executable, "-c", code], check=True)

archive = distillgan.open_archive(path)
model = archive.members[1]
try:
    if scenario == "verify":
        truncate_from_another_process(model.data_offset + model.size // 2)
        archive.check_crcs()
    elif scenario == "copy":
        truncate_from_another_process(model.data_offset + 1000)
        archive.values(copy=True)
    elif scenario == "verified-load":
        archive.close()
        loaded = distillgan.load_model(path, verify=True)
        before = loaded.state_dict["big"].clone()
        rewrite_from_another_process(model.data_offset + 4096, 1 << 20)
        assert distillgan.verify(path) is None
    print("no error")
except distillgan.DistillganError as e:
    if scenario == "verified-load":
        after = loaded.state_dict["big"]
        print("unchanged" if bool((after == before).all()) else "changed", e.code)
    else:
        print("refused", e.code)
"""


@pytest.fixture
def big_model(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return save_model({"big": torch.randn(8 << 20), "small": torch.ones(3)}, {}, {}, ModelMetadata(name="big"), tmp_path)


def _child(path: Path, scenario: str) -> str:
    r = subprocess.run([sys.executable, "-c", _CHILD, str(path), scenario], capture_output=True, text=True, timeout=120)
    assert r.returncode != -signal.SIGBUS, f"SIGBUS in scenario {scenario}"
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.strip()


@pytest.mark.parametrize("scenario", ["verify", "copy"])
def test_truncation_while_reading_is_an_error_not_a_crash(big_model: Path, scenario: str) -> None:
    assert _child(big_model, scenario) == "refused file-changed"


def test_a_verified_load_is_not_changed_by_a_later_rewrite(big_model: Path) -> None:
    """load_model(verify=True) validates a private copy and returns it: the rewrite is seen by verify, not by the tensors."""
    assert _child(big_model, "verified-load") == "unchanged crc-mismatch"


def test_bool_check_reads_in_bounded_chunks(tmp_path: Path) -> None:
    """verify of a 256 MiB BOOL tensor used to copy it whole (a 1 GiB one cost 2 GiB)."""
    path = save_model({"mask": torch.ones(256 << 20, dtype=torch.bool)}, {}, {}, ModelMetadata(), tmp_path)
    tracemalloc.start()
    try:
        distillgan.verify(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 48 << 20, f"verify allocated {peak >> 20} MiB"


def _total_ram() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no MemTotal")


class _SparseWriter:
    """A file whose chunks cut from ``zeros`` are skipped with a seek: a huge member costs no disk."""

    def __init__(self, f: object, zeros: bytes) -> None:
        self._f = f
        self._zeros = zeros

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data)
        if view.obj is self._zeros:
            self._f.seek(view.nbytes, os.SEEK_CUR)  # type: ignore[attr-defined]
            return view.nbytes
        return self._f.write(data)  # type: ignore[attr-defined,no-any-return]

    def __getattr__(self, name: str) -> object:
        return getattr(self._f, name)


@pytest.mark.skipif(not sys.platform.startswith("linux") or not Path("/proc/meminfo").exists(), reason="Linux memory accounting")
def test_a_file_larger_than_ram_is_inspected_and_loaded(tmp_path: Path) -> None:
    """A copy-on-write mapping was charged as private memory: a file larger than RAM failed to map (ENOMEM)."""
    from distillgan.archive import ArchivePlan, encode_checked
    from distillgan.container import ContainerWriter
    from distillgan.manifest import coerce_metadata
    from distillgan.tensors import ALIGNMENT

    n = _total_ram() + (1 << 30)
    header = b'{"state_dict/w":{"dtype":"U8","shape":[%d],"data_offsets":[0,%d]}}' % (n, n)
    header += b" " * ((-(8 + len(header))) % ALIGNMENT)
    member = struct.pack("<Q", len(header)) + header
    raw = {"format": "distillgan_model", "version": 1, "latent_dim": None, "metadata": coerce_metadata({"name": "huge"}),
           "members": {"model.safetensors": {"aliases": {}, "size": len(member) + n}},
           "state_dict": {"$": "tensors", "prefix": "state_dict/", "keys": ["w"]}, "spectrogram_config": {},
           "training_config": {}, "analysis": None, "extra": None, "vocoder_state": None}  # fmt: skip
    zero_bytes = bytes(256 << 20)
    zeros = memoryview(zero_bytes)

    def chunks() -> object:
        yield member
        left = n
        while left:
            step = min(left, zeros.nbytes)
            yield zeros[:step]
            left -= step

    plan = ArchivePlan(raw, encode_checked(raw), [("model.safetensors", len(member) + n, chunks)])
    path = tmp_path / "huge.distillgan"
    with open(path, "wb") as f:
        writer = ContainerWriter(_SparseWriter(f, zero_bytes))  # type: ignore[arg-type]
        writer.write_member("manifest.msgpack", len(plan.manifest_bytes), [plan.manifest_bytes])
        writer.write_member("model.safetensors", len(member) + n, chunks())  # type: ignore[arg-type]
        writer.finish()
    if path.stat().st_blocks * 512 > 1 << 30:
        pytest.skip("this file system has no sparse files")
    info = distillgan.inspect(path)
    assert info["tensors"]["model.safetensors"][0]["shape"] == [n]
    loaded = distillgan.load_model(path)  # maps the file; touches nothing
    assert loaded.state_dict["w"].numel() == n and int(loaded.state_dict["w"][-1]) == 0
