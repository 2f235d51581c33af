"""Legacy .distill files, torch checkpoints and pickles: recognised by their bytes, refused, never unpickled."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from distillgan import LegacyFormatError, inspect, load_model, verify

V1_MESSAGE = "This model was saved in v1 format which is no longer supported. Please retrain your model."
READERS = [load_model, inspect, verify]
READER_IDS = ["load_model", "inspect", "verify"]


class CreatesMarker:
    """Unpickling this object creates a directory: proof that a pickle was executed."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (self.path,)


def _state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {"encoder.weight": torch.randn(4, 3), "encoder.bias": torch.zeros(4), "steps": torch.tensor(3)}


def _legacy_dict() -> dict[str, object]:
    return {
        "format": "distill_model",
        "version": 1,
        "model_state_dict": _state_dict(),
        "latent_dim": 8,
        "spectrogram_config": {"sample_rate": 48000},
        "metadata": {"name": "old"},
    }


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# Each builder writes one file into a folder and returns its path.
V1_BUILDERS: dict[str, Callable[[Path], Path]] = {
    "torch-zip": lambda d: (torch.save(_legacy_dict(), d / "model.distill"), d / "model.distill")[1],
    "torch-pre-1.6-stream": lambda d: (
        torch.save(_legacy_dict(), d / "model.distill", _use_new_zipfile_serialization=False),
        d / "model.distill",
    )[1],
    **{
        f"pickle-protocol-{p}": (lambda d, p=p: _write(d / "model.distill", pickle.dumps(_legacy_dict(), protocol=p)))
        for p in (2, 3, 4, 5)
    },
}
PICKLE_BUILDERS: dict[str, Callable[[Path], Path]] = {
    "torch-zip-checkpoint": lambda d: (torch.save({"model_state_dict": _state_dict(), "epoch": 3}, d / "ckpt.pt"), d / "ckpt.pt")[
        1
    ],
    "torch-stream-checkpoint": lambda d: (
        torch.save({"model_state_dict": _state_dict()}, d / "ckpt.pt", _use_new_zipfile_serialization=False),
        d / "ckpt.pt",
    )[1],
    "torch-zip-tensor": lambda d: (torch.save(torch.ones(3), d / "t.pt"), d / "t.pt")[1],
    **{
        f"plain-pickle-protocol-{p}": (lambda d, p=p: _write(d / "data.pkl", pickle.dumps({"a": [1, 2.5, "x"]}, protocol=p)))
        for p in (2, 3, 4, 5)
    },
}


def _as_distillgan(path: Path) -> Path:
    """The same bytes under the .distillgan extension."""
    target = path.with_name("renamed.distillgan")
    shutil.copyfile(path, target)
    return target


@pytest.fixture(params=[False, True], ids=["own-extension", "as-.distillgan"])
def rename(request: pytest.FixtureRequest) -> Callable[[Path], Path]:
    return _as_distillgan if request.param else (lambda p: p)


@pytest.mark.parametrize("reader", READERS, ids=READER_IDS)
@pytest.mark.parametrize("kind", list(V1_BUILDERS))
def test_legacy_distill_v1_is_refused_with_the_seed_message(
    kind: str, reader: Callable[[Path], object], rename: Callable[[Path], Path], tmp_path: Path
) -> None:
    path = rename(V1_BUILDERS[kind](tmp_path))
    with pytest.raises(LegacyFormatError) as e:
        reader(path)
    assert e.value.code == "legacy-distill-v1"
    assert str(e.value) == V1_MESSAGE


def test_legacy_error_is_a_value_error_as_the_seed_plan_says(tmp_path: Path) -> None:
    path = V1_BUILDERS["torch-zip"](tmp_path)
    with pytest.raises(ValueError, match="retrain your model"):
        load_model(path)


@pytest.mark.parametrize("reader", READERS, ids=READER_IDS)
@pytest.mark.parametrize("kind", list(PICKLE_BUILDERS))
def test_other_pickles_are_refused_as_pickles(
    kind: str, reader: Callable[[Path], object], rename: Callable[[Path], Path], tmp_path: Path
) -> None:
    path = rename(PICKLE_BUILDERS[kind](tmp_path))
    with pytest.raises(LegacyFormatError) as e:
        reader(path)
    assert e.value.code == "pickle"
    assert "never unpickles" in str(e.value)


def _malicious_files(folder: Path, marker: Path) -> list[Path]:
    """Pickles that would create ``marker`` if anything unpickled them."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for p in (2, 3, 4, 5):
        files.append(_write(folder / f"evil-p{p}.distillgan", pickle.dumps(CreatesMarker(marker), protocol=p)))
        v1 = {**_legacy_dict(), "model_state_dict": CreatesMarker(marker)}
        files.append(_write(folder / f"evil-v1-p{p}.distill", pickle.dumps(v1, protocol=p)))
    torch.save({"model_state_dict": CreatesMarker(marker)}, folder / "evil-zip.distillgan")
    torch.save({**_legacy_dict(), "payload": CreatesMarker(marker)}, folder / "evil-v1-zip.distill")
    torch.save({"x": CreatesMarker(marker)}, folder / "evil-stream.pt", _use_new_zipfile_serialization=False)
    files += [folder / "evil-zip.distillgan", folder / "evil-v1-zip.distill", folder / "evil-stream.pt"]
    return files


def test_the_malicious_payload_works_when_unpickled(tmp_path: Path) -> None:
    """Sanity check of the payload used below: unpickling it does create the marker."""
    marker = tmp_path / "pwned-by-sanity-check"
    pickle.loads(pickle.dumps(CreatesMarker(marker)))
    assert marker.is_dir()


@pytest.mark.parametrize("reader", READERS, ids=READER_IDS)
def test_malicious_pickles_never_run(reader: Callable[[Path], object], tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    files = _malicious_files(tmp_path / "files", marker)
    for path in files:
        with pytest.raises(LegacyFormatError) as e:
            reader(path)
        expected = "legacy-distill-v1" if "-v1-" in path.name else "pickle"
        assert e.value.code == expected, path.name
    assert not marker.exists()


# --- audit hook proof -------------------------------------------------------------------------

AUDIT_SCRIPT = r"""
import sys

WATCH = {"pickle.find_class", "exec", "compile", "os.system", "os.mkdir", "subprocess.Popen",
         "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "ctypes.dlopen"}
events = []
phase = ["startup"]

def hook(event, args):
    if event in WATCH:
        events.append([phase[0], event, repr(args)[:160]])

sys.addaudithook(hook)

import collections, json, pickle
import torch
import distillgan

cases = json.loads(open(sys.argv[1], encoding="utf-8").read())

def run_all():
    results = []
    for path in cases:
        for fn in (distillgan.load_model, distillgan.inspect, distillgan.verify):
            try:
                fn(path)
                outcome = "ok"
            except distillgan.DistillganError as e:
                outcome = e.code
            results.append([path, fn.__name__, outcome])
    return results

phase[0] = "warmup"    # first pass: lazy imports may compile and exec module code
run_all()
phase[0] = "check"     # second pass: nothing at all may be executed or unpickled
results = run_all()
phase[0] = "sanity"    # the hook does see an unpickled global
pickle.loads(pickle.dumps(collections.OrderedDict(a=1)))
phase[0] = "done"
print(json.dumps({"events": events, "results": results}))
"""


def test_audit_hook_sees_no_unpickling(
    tmp_path: Path, save: Callable[..., Path], vocoder_state: dict[str, object], models_dir: Path
) -> None:
    marker = tmp_path / "pwned"
    expected: dict[str, str] = {}
    valid = [save(), save(vocoder_state=vocoder_state, analysis={"a": torch.ones(2), "n_active_components": 1})]
    for path in valid:
        expected[str(path)] = "ok"
    for group, builders, code in (("v1", V1_BUILDERS, "legacy-distill-v1"), ("pickle", PICKLE_BUILDERS, "pickle")):
        for kind, build in builders.items():
            folder = tmp_path / group / kind
            folder.mkdir(parents=True)
            path = build(folder)
            expected[str(path)] = code
            expected[str(_as_distillgan(path))] = code
    for path in _malicious_files(tmp_path / "evil", marker):
        expected[str(path)] = "legacy-distill-v1" if "-v1-" in path.name else "pickle"
    cases = tmp_path / "cases.json"
    cases.write_text(json.dumps(sorted(expected)), encoding="utf-8")

    r = subprocess.run([sys.executable, "-c", AUDIT_SCRIPT, str(cases)], check=False, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout)

    results = report["results"]
    assert len(results) == 3 * len(expected)
    for path, reader, outcome in results:
        assert outcome == expected[path], (path, reader)
    events = report["events"]
    unpickled = [e for e in events if e[1] == "pickle.find_class" and e[0] != "sanity"]
    assert unpickled == []
    dangerous = [e for e in events if e[0] in ("warmup", "check") and e[1] not in ("exec", "compile")]
    assert dangerous == []
    assert [e for e in events if e[0] == "check"] == []  # nothing compiled or executed while reading files
    sanity = [e for e in events if e[0] == "sanity" and e[1] == "pickle.find_class"]
    assert sanity and "OrderedDict" in sanity[0][2]
    assert not marker.exists()
