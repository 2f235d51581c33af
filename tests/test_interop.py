"""Other readers see what distillgan sees: zipfile, unzip, msgpack and safetensors, without distillgan."""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import torch
from safetensors import safe_open

from distillgan import inspect, load_model

ELEMENT_SIZE = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E4M3FNUZ": 1, "F8_E5M2FNUZ": 1,
    "C64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
}  # fmt: skip

# Reads an archive with zipfile, msgpack and safetensors only; prints a JSON summary.
READER_SCRIPT = r"""
import hashlib, json, sys, zipfile
import msgpack, torch
from safetensors import safe_open
from safetensors.torch import load as st_load

path, out_dir = sys.argv[1], sys.argv[2]

def digest(t):
    return [str(t.dtype).removeprefix("torch."), list(t.shape),
            hashlib.sha256(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()]

with zipfile.ZipFile(path) as z:
    assert z.testzip() is None
    names = z.namelist()
    manifest = msgpack.unpackb(z.read("manifest.msgpack"), raw=False, strict_map_key=True)
    in_memory = {m: st_load(z.read(m)) for m in names[1:]}
    z.extractall(out_dir)
result = {"names": names, "manifest": manifest, "tensors": {}}
for m in names[1:]:
    with safe_open(f"{out_dir}/{m}", framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    assert sorted(tensors) == sorted(in_memory[m])
    for k, t in tensors.items():
        assert digest(t) == digest(in_memory[m][k]), k
    for alias, target in manifest["members"][m]["aliases"].items():
        tensors[alias] = tensors[target]
    result["tensors"][m] = {k: digest(t) for k, t in tensors.items()}
leaked = sorted(name for name in sys.modules if name.split(".")[0] == "distillgan")
assert not leaked, leaked
print(json.dumps(result))
"""


def _digest(value: Any) -> list[Any]:
    if isinstance(value, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(value))
    else:
        t = value
    return [
        str(t.dtype).removeprefix("torch."),
        list(t.shape),
        hashlib.sha256(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest(),
    ]


def _analysis_pairs(skeleton: Any, restored: Any) -> list[tuple[str, Any]]:
    """(tensor name, restored array) for every placeholder of the manifest's analysis."""
    out: list[tuple[str, Any]] = []
    if isinstance(skeleton, dict):
        if skeleton.get("$") in ("ndarray", "tensor"):  # a placeholder (FORMAT.md §4.4)
            return [(skeleton["name"], restored)]
        for k, v in skeleton.items():
            out += _analysis_pairs(v, restored[k])
    elif isinstance(skeleton, list):
        for s, r in zip(skeleton, restored, strict=True):
            out += _analysis_pairs(s, r)
    return out


@pytest.fixture
def rich_model(save: Callable[..., Path], generator: torch.nn.Module, vocoder_state: dict[str, Any]) -> Path:
    """A model with many dtypes, a tied pair, odd shapes, an analysis and a vocoder."""
    torch.manual_seed(3)
    shared = torch.randn(5, 3)
    state = {
        **generator.state_dict(),
        "extra.f64": torch.randn(3, dtype=torch.float64),
        "extra.f16": torch.randn(7, dtype=torch.float16),
        "extra.bf16": torch.randn(2, 3, dtype=torch.bfloat16),
        "extra.f8": torch.randn(9).to(torch.float8_e4m3fn),
        "extra.c64": torch.randn(3, dtype=torch.complex64),
        "extra.u16": torch.arange(5, dtype=torch.int32).to(torch.uint16),
        "extra.i8": torch.arange(-3, 3, dtype=torch.int8),
        "extra.bool": torch.tensor([True, False, True]),
        "extra.scalar": torch.tensor(2.5),
        "extra.empty": torch.empty(3, 0),
        "tied.first": shared,
        "tied.second": shared,
        "extra.ünïcode name": torch.ones(2),
    }
    analysis = {
        "n_active_components": 2,
        "pca_components": np.arange(16, dtype=np.float32).reshape(2, 8),
        "pca_mean": np.linspace(0, 1, 8),
        "latent": torch.randn(4, dtype=torch.float16),
        "labels": ["a", "b"],
    }
    return save(state, analysis=analysis, vocoder_state=vocoder_state)


def test_plain_readers_see_the_same_tensors_and_manifest(rich_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "extracted"
    out.mkdir()
    r = subprocess.run(
        [sys.executable, "-W", "error", "-c", READER_SCRIPT, str(rich_model), str(out)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-1500:]
    plain = json.loads(r.stdout)

    info = inspect(rich_model)
    assert plain["manifest"] == json.loads(json.dumps(info["manifest"]))
    assert plain["names"] == [m["name"] for m in info["members"]]
    assert plain["names"] == ["manifest.msgpack", "model.safetensors", "vocoder.safetensors"]

    loaded = load_model(rich_model)
    model_tensors = plain["tensors"]["model.safetensors"]
    # the state dict is one 'tensors' placeholder: its keys, in order, under a prefix (FORMAT.md §4.4)
    sd = plain["manifest"]["state_dict"]
    assert sd["$"] == "tensors" and sd["prefix"] == "state_dict/" and sd["keys"] == list(loaded.state_dict)
    weights = {k: v for k, v in model_tensors.items() if k.startswith("state_dict/")}
    assert weights == {f"state_dict/{k}": _digest(t) for k, t in loaded.state_dict.items()}
    assert weights["state_dict/tied.second"] == weights["state_dict/tied.first"]
    pairs = _analysis_pairs(plain["manifest"]["analysis"], loaded.analysis)
    assert len(pairs) == 3
    assert sorted(name for name, _ in pairs) == sorted(k for k in model_tensors if k.startswith("analysis/"))
    assert set(model_tensors) == set(weights) | {name for name, _ in pairs}
    for name, restored in pairs:
        assert model_tensors[name] == _digest(restored), name
    vocoder = plain["tensors"]["vocoder.safetensors"]
    prefix = plain["manifest"]["vocoder_state"]["state_dict"]["prefix"]
    assert vocoder == {prefix + k: _digest(t) for k, t in loaded.vocoder_state["state_dict"].items()}


def test_zipfile_accepts_the_archive(rich_model: Path) -> None:
    with zipfile.ZipFile(rich_model) as z:
        assert z.testzip() is None
        infos = z.infolist()
        assert [i.filename for i in infos] == ["manifest.msgpack", "model.safetensors", "vocoder.safetensors"]
        for i in infos:
            assert i.compress_type == zipfile.ZIP_STORED
            assert i.file_size == i.compress_size
            assert not i.is_dir()
            assert i.flag_bits & 0x1 == 0  # not encrypted
        assert z.comment == b""


def test_zipfile_reads_an_archive_without_vocoder(save: Callable[..., Path]) -> None:
    path = save()
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None
        assert z.namelist() == ["manifest.msgpack", "model.safetensors"]
        assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())


@pytest.mark.skipif(not Path("/usr/bin/unzip").exists(), reason="/usr/bin/unzip is not installed")
def test_unzip_tests_the_archive(rich_model: Path) -> None:
    r = subprocess.run(["/usr/bin/unzip", "-t", str(rich_model)], check=False, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "No errors detected" in r.stdout
    for name in ("manifest.msgpack", "model.safetensors", "vocoder.safetensors"):
        assert f"testing: {name}" in r.stdout


def test_safe_open_on_extracted_members(rich_model: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(rich_model) as z:
        z.extractall(tmp_path)
        manifest = msgpack.unpackb(z.read("manifest.msgpack"), raw=False)
    loaded = load_model(rich_model)
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as f:
        names = set(f.keys())
        assert "state_dict/tied.second" not in names  # stored once, as an alias in the manifest
        assert manifest["members"]["model.safetensors"]["aliases"] == {"state_dict/tied.second": "state_dict/tied.first"}
        for name in {n for n in names if n.startswith("state_dict/")}:
            t = f.get_tensor(name)
            assert _digest(t) == _digest(loaded.state_dict[name.removeprefix("state_dict/")]), name
    with safe_open(str(tmp_path / "vocoder.safetensors"), framework="pt") as f:
        prefix = "vocoder_state/state_dict/"
        assert set(f.keys()) == {prefix + k for k in loaded.vocoder_state["state_dict"]}
        for name in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
            assert torch.equal(f.get_tensor(name), loaded.vocoder_state["state_dict"][name.removeprefix(prefix)])


def test_manifest_decodes_with_msgpack_alone(saved_model: Path) -> None:
    with zipfile.ZipFile(saved_model) as z:
        raw = z.read("manifest.msgpack")
    manifest = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    assert list(manifest)[:2] == ["format", "version"]
    assert manifest["format"] == "distillgan_model" and manifest["version"] == 1
    assert manifest["metadata"]["name"] == "Saved Model"
    assert manifest == inspect(saved_model)["manifest"]
    # canonical: re-encoding the decoded map gives the same bytes
    assert msgpack.packb(manifest, use_bin_type=True) == raw


def _local_data_offset(data: bytes, header_offset: int) -> int:
    sig, *_rest, name_len, extra_len = struct.unpack_from("<4sHHHHHIIIHH", data, header_offset)
    assert sig == b"PK\x03\x04"
    return header_offset + 30 + name_len + extra_len


def test_tensor_members_and_tensors_are_aligned(rich_model: Path) -> None:
    data = rich_model.read_bytes()
    checked = 0
    with zipfile.ZipFile(rich_model) as z:
        for info in z.infolist()[1:]:
            start = _local_data_offset(data, info.header_offset)
            assert start % 64 == 0, (info.filename, start)
            assert data[start : start + info.file_size] == z.read(info.filename)
            (header_len,) = struct.unpack_from("<Q", data, start)
            header = json.loads(data[start + 8 : start + 8 + header_len])
            tensor_base = start + 8 + header_len
            for name, spec in header.items():
                if name == "__metadata__":
                    continue
                size = ELEMENT_SIZE[spec["dtype"]]
                absolute = tensor_base + spec["data_offsets"][0]
                assert absolute % size == 0, (info.filename, name, absolute, size)
                checked += 1
    assert checked > 25


def test_magic_bytes(saved_model: Path, save: Callable[..., Path]) -> None:
    for path in (saved_model, save()):
        head = path.read_bytes()[:72]
        assert head[:4] == b"PK\x03\x04"
        assert head[30:46] == b"manifest.msgpack"
        assert head[46] == 0x8B  # fixmap of the 11 top-level keys (FORMAT.md §4.3)
        assert head[47:71] == b"\xa6format\xb0distillgan_model"
        assert head[71] == 0xA7 and path.read_bytes()[72:79] == b"version"
