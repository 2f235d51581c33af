"""The write path: tensors go to the file as views of their own memory, small ones in vectored writes.

Every case writes a real archive and reads it back through the public reader, so a byte out of
place, a CRC over the wrong bytes or a dropped view fails here.
"""

from __future__ import annotations

import gc
import io
import os
from pathlib import Path

import pytest
import torch

from distillgan import archive, container, load_model, open_archive, verify
from distillgan.archive import write_archive


def _manifest(tmp: Path, state: dict[str, torch.Tensor], vocoder: dict[str, torch.Tensor] | None = None) -> dict:
    from distillgan import ModelMetadata, save_model

    # a manifest save_model accepted (metadata filled in), then our own tensors in it
    probe = save_model({"w": torch.zeros(1)}, {"n_mels": 8}, {"epochs": 1}, ModelMetadata(name="probe"), tmp / "lib")
    with open_archive(probe) as a:
        raw = a.manifest
    m = {k: raw[k] for k in ("latent_dim", "metadata", "spectrogram_config", "training_config", "analysis", "extra")}
    m["state_dict"] = state
    m["vocoder_state"] = None if vocoder is None else {"type": "hifigan", "generator_state_dict": vocoder}
    return m


def _many_small(count: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    dtypes = (torch.float32, torch.float16, torch.bfloat16, torch.int8, torch.int64, torch.bool, torch.float64)
    out = {}
    for i in range(count):
        dt = dtypes[i % len(dtypes)]
        n = 1 + (i * 37) % 300
        t = torch.randint(0, 2, (n,), generator=g) if dt is torch.bool else torch.randn(n, generator=g) * 100
        out[f"layers.{i}.w"] = t.to(dt)
    out["big"] = torch.randn(3 << 18, generator=g)  # 3 MiB: written as its own view, CRC on the worker thread
    return out


def _check(path: Path, state: dict[str, torch.Tensor], vocoder: dict[str, torch.Tensor] | None = None) -> None:
    verify(path)  # every CRC-32 against the bytes on disk
    loaded = load_model(path)
    assert list(loaded.state_dict) == list(state)
    for k, v in state.items():
        got = loaded.state_dict[k]
        assert got.dtype == v.dtype and got.shape == v.shape
        assert torch.equal(got.view(torch.uint8) if v.dtype is not torch.bool else got, v.view(torch.uint8) if v.dtype is not torch.bool else v), k
    if vocoder is not None:
        gsd = loaded.vocoder_state["generator_state_dict"]
        assert all(torch.equal(gsd[k], v) for k, v in vocoder.items())


def test_more_small_tensors_than_one_vectored_write_takes(tmp_path: Path) -> None:
    state = _many_small(3 * archive._BATCH_VIEWS + 7)  # several batches cut by count, not by bytes
    path = tmp_path / "m.distillgan"
    with open(path, "wb", buffering=0) as f:
        write_archive(f, _manifest(tmp_path, state, {"v": torch.arange(10.0)}))
    _check(path, state, {"v": torch.arange(10.0)})


def test_short_vectored_writes_are_resumed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """writev may write less than asked (POSIX allows it; a full pipe or a signal does it): the rest follows."""
    if not container._HAS_WRITEV:
        pytest.skip("no os.writev on this platform")
    real = os.writev
    calls = []

    def short_writev(fd: int, views: list) -> int:  # a real write of at most 1000 bytes, cut mid-view
        out, left = [], 1000
        for v in views:
            if left == 0:
                break
            part = memoryview(v)[:left]
            out.append(part)
            left -= part.nbytes
        n = real(fd, out)
        calls.append(n)
        return n

    monkeypatch.setattr(container.os, "writev", short_writev)
    state = _many_small(200)
    path = tmp_path / "m.distillgan"
    with open(path, "wb", buffering=0) as f:
        write_archive(f, _manifest(tmp_path, state))
    assert len(calls) > 20 and max(calls) == 1000
    _check(path, state)


def test_buffered_and_in_memory_files_get_the_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No vectored write behind a buffer's back: a buffered file, a BytesIO, a raw file and a raw file
    where the platform has no writev (Windows) agree byte for byte."""
    state = _many_small(600, seed=3)
    manifest = _manifest(tmp_path, state)
    raw_path, buf_path = tmp_path / "raw.distillgan", tmp_path / "buffered.distillgan"
    with open(raw_path, "wb", buffering=0) as f:
        write_archive(f, manifest)
    with open(buf_path, "wb") as f:  # io.BufferedWriter
        write_archive(f, manifest)
    mem = io.BytesIO()
    write_archive(mem, manifest)
    monkeypatch.setattr(container, "_HAS_WRITEV", False)
    nowritev_path = tmp_path / "no-writev.distillgan"
    with open(nowritev_path, "wb", buffering=0) as f:
        write_archive(f, manifest)
    assert raw_path.read_bytes() == buf_path.read_bytes() == mem.getvalue() == nowritev_path.read_bytes()
    _check(buf_path, state)


def test_tensors_freed_by_the_caller_during_the_write_stay_valid(tmp_path: Path) -> None:
    """The writer holds each tensor it is writing: a state dict emptied meanwhile still writes correctly."""
    state = _many_small(300, seed=5)
    expected = {k: v.clone() for k, v in state.items()}
    manifest = _manifest(tmp_path, state)
    plan = archive.plan_archive(manifest)
    state.clear()
    manifest["state_dict"] = None
    gc.collect()
    path = tmp_path / "m.distillgan"
    with open(path, "wb", buffering=0) as f:
        write_archive(f, plan)
    _check(path, expected)
