"""Everyday use: the file-level API, errors that say what to do, devices, builders, logging, progress.

OS failures are real: a folder the test user cannot write (a child process that drops root), a file
size limit (RLIMIT_FSIZE in a child), a path that is a file. Memory is measured in a child process.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import distillgan
from distillgan import DistillganError, InputError, ModelMetadata, load_file, load_model, safe_open, save_file, save_model

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


class Net(nn.Module):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.latent_dim = width
        self.a = nn.Linear(width, width)
        self.b = nn.Linear(width, 2)


# --- the file-level API ---------------------------------------------------------------------------


def test_save_file_load_file_safe_open(tmp_path: Path, assert_same_tree: Callable[..., None]) -> None:
    torch.manual_seed(0)
    net = Net()
    path = save_file(net, tmp_path / "net.distillgan", config={"lr": 1e-3}, metadata={"name": "Net"})
    assert path == tmp_path / "net.distillgan" and not [p for p in tmp_path.iterdir() if p.name != "net.distillgan"]
    assert_same_tree(load_file(path), dict(net.state_dict()))
    loaded = load_model(path)
    assert loaded.training_config == {"lr": 1e-3} and loaded.latent_dim == 8 and loaded.metadata.name == "Net"
    assert loaded.metadata.model_id and loaded.metadata.save_date == ""  # an empty id becomes a fresh one; the rest as given
    with safe_open(path) as f:
        assert f.keys() == list(net.state_dict()) and list(f) == f.keys()
        assert torch.equal(f.get_tensor("a.weight"), net.a.weight.detach())
        sl = f.get_slice("a.weight")
        assert sl.get_shape() == [8, 8] and sl.get_dtype() == "F32"
        assert torch.equal(sl[2:4, :3], net.a.weight.detach()[2:4, :3])
        assert f.metadata()["name"] == "Net" and f.manifest["training_config"] == {"lr": 1e-3}
        with pytest.raises(InputError) as e:
            f.get_tensor("nope")
        assert e.value.code == "not-found"
    # the same inputs give the same bytes once the model id is yours (an empty one becomes a fresh one)
    fixed = [save_file(net, tmp_path / f"fixed{i}.distillgan", config={"lr": 1e-3}, metadata={"name": "Net", "model_id": "net"})
             for i in range(2)]
    assert fixed[0].read_bytes() == fixed[1].read_bytes()


def _lines_per_tensor(path: Path) -> float:
    """Python lines executed (line events, every frame, generator bodies included) per ``get_tensor`` over all tensors."""
    count = 0

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        nonlocal count
        if event == "line":
            count += 1
        return tracer

    with safe_open(path) as f:
        names = f.keys()
        sys.settrace(tracer)
        try:
            for name in names:
                f.get_tensor(name)
        finally:
            sys.settrace(None)
    return count / len(names)


def test_safe_open_reads_each_tensor_in_work_that_does_not_grow_with_the_tensor_count(tmp_path: Path) -> None:
    """An operation count, not a time: looking a tensor up must not scan the tables (it was quadratic in all)."""
    small = save_file({f"t{i}": torch.zeros(2) for i in range(100)}, tmp_path / "small.distillgan")
    large = save_file({f"t{i}": torch.zeros(2) for i in range(2000)}, tmp_path / "large.distillgan")
    per_small, per_large = _lines_per_tensor(small), _lines_per_tensor(large)
    assert per_large <= 1.2 * per_small + 5, (per_small, per_large)  # a scan of the 2 000 entries would be ~20x


def test_save_file_never_clobbers_unless_asked(tmp_path: Path) -> None:
    target = tmp_path / "m.distillgan"
    target.write_bytes(b"someone else's file")
    with pytest.raises(InputError) as e:
        save_file({"w": torch.ones(1)}, target)
    assert e.value.code == "file-exists" and target.read_bytes() == b"someone else's file"
    save_file({"w": torch.ones(1)}, target, overwrite=True)
    assert torch.equal(load_file(target)["w"], torch.ones(1))
    with pytest.raises(InputError):
        save_file({"w": torch.ones(1)}, "https://example.invalid/m.distillgan")
    with pytest.raises(InputError):
        save_file({"w": torch.ones(1)}, tmp_path)  # a folder


def test_save_model_points_file_paths_and_urls_to_save_file_and_expands_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for bad in (tmp_path / "out.distillgan", "s3://bucket/models"):
        with pytest.raises(InputError) as e:
            save_model({"w": torch.ones(1)}, {}, {}, ModelMetadata(), bad)
        assert e.value.code == "invalid-input"
    assert not (tmp_path / "out.distillgan").exists() and not Path("s3:").exists()
    with pytest.raises(InputError) as e:
        save_model({"w": torch.ones(1)}, {}, {}, ModelMetadata(), tmp_path / "x.distillgan")
    assert "save_file" in str(e.value)
    monkeypatch.setenv("HOME", str(tmp_path))
    path = save_model({"w": torch.ones(1)}, {}, {}, ModelMetadata(name="home"), "~/models")
    assert path.parent == tmp_path / "models"


# --- errors that say what to do ----------------------------------------------------------------

_CHILD_SAVE = r"""
import os, sys, resource, signal, torch, distillgan
mode, folder = sys.argv[1], sys.argv[2]
if mode == "unprivileged":
    import tempfile  # one save first: every module it uses is imported while the stdlib is still readable
    distillgan.save_model({"w": torch.zeros(1)}, {}, {}, distillgan.ModelMetadata(), tempfile.mkdtemp())
    try:
        os.setgroups([]); os.setgid(65534); os.setuid(65534)
    except OSError as e:
        print("skip |", e); sys.exit(0)
elif mode == "fsize":
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
try:
    distillgan.save_model({"w": torch.zeros(1 << 20)}, {}, {}, distillgan.ModelMetadata(name="x"), folder)
    print("saved")
except distillgan.DistillganError as e:
    print(e.code, "|", e)
"""


def _child(mode: str, folder: Path) -> str:
    r = subprocess.run([sys.executable, "-c", _CHILD_SAVE, mode, str(folder)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.strip()


@pytest.mark.skipif(not hasattr(os, "setuid"), reason="POSIX users")
@pytest.mark.parametrize("case", ["read-only folder", "untraversable parent"])
def test_a_folder_without_write_permission_is_a_clear_error(case: str) -> None:
    """One failure, one code: no permission is ``permission-denied`` (errors.py's EACCES), whichever step meets it first.

    A genuinely read-only folder (0555, reachable) fails at the folder lock; an untraversable parent fails earlier. The
    folder is made outside pytest's 0700 tree, so that only the permission under test stops the unprivileged child.
    """
    import shutil
    import tempfile

    if not IS_ROOT and os.geteuid() == 0:  # pragma: no cover
        pytest.skip("cannot tell")
    root = Path(tempfile.mkdtemp(prefix="distillgan-perm-"))
    try:
        root.chmod(0o755)
        parent = root / "parent"
        folder = parent / "models"
        folder.mkdir(parents=True)
        (folder if case == "read-only folder" else parent).chmod(0o555 if case == "read-only folder" else 0o700)
        out = _child("unprivileged" if IS_ROOT else "as-is", folder)  # root ignores permissions: the save runs as nobody
        if out.startswith("skip"):
            pytest.skip(f"cannot drop root to test permissions: {out}")
        code, _, message = out.partition(" | ")
        assert code == "permission-denied", out
        assert str(folder if case == "read-only folder" else parent) in message and "permission" in message, out
        assert "check the folder's permissions" in message, out  # what to do
        if case == "read-only folder":
            assert os.listdir(folder) == []  # nothing created
    finally:
        for p in (root / "parent", root / "parent" / "models"):
            if p.exists():
                p.chmod(0o755)
        shutil.rmtree(root, ignore_errors=True)


_CHILD_READ_ONLY_FS = r"""
import json, subprocess, sys, torch, distillgan
folder = sys.argv[1]

def mount(*args):
    r = subprocess.run(["mount", *args, folder], capture_output=True, text=True)
    if r.returncode:
        print(json.dumps({"skip": f"mount {' '.join(args)}: {r.stderr.strip()}"}))
        sys.exit(0)

mount("-t", "tmpfs", "-o", "size=16m", "tmpfs")
distillgan.save_model({"w": torch.ones(4)}, {}, {}, distillgan.ModelMetadata(name="kept", model_id="kept"), folder)
mount("-o", "remount,ro")
out = {"list": [e.model_id for e in distillgan.ModelLibrary(folder).list_all()]}
for name, op in [
    ("save_model", lambda: distillgan.save_model({"w": torch.ones(1)}, {}, {}, distillgan.ModelMetadata(name="x"), folder)),
    ("save_file", lambda: distillgan.save_file({"w": torch.ones(1)}, folder + "/f.distillgan")),
    ("delete_model", lambda: distillgan.delete_model("kept", folder)),
    ("repair_index", lambda: distillgan.ModelLibrary(folder).repair_index()),
]:
    try:
        op()
        out[name] = "done"
    except distillgan.DistillganError as e:
        out[name] = [e.code, str(e)]
print(json.dumps(out))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mount namespaces are Linux's")
def test_a_read_only_file_system_is_a_clear_error(tmp_path: Path) -> None:
    """A real EROFS: a tmpfs remounted read-only in a private mount namespace (unshare), gone when the child exits."""
    import shutil

    if shutil.which("unshare") is None or shutil.which("mount") is None:
        pytest.skip("needs unshare(1) and mount(1) for a real read-only file system")
    folder = tmp_path / "ro"
    folder.mkdir()
    r = subprocess.run(["unshare", "-Urm", "--propagation", "private", sys.executable, "-c", _CHILD_READ_ONLY_FS, str(folder)],
                       capture_output=True, text=True, timeout=180)
    if r.returncode != 0 and r.stderr.startswith("unshare:"):
        pytest.skip(f"this machine forbids mount namespaces: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    if "skip" in out:
        pytest.skip(f"this machine forbids mounting a tmpfs: {out['skip']}")
    assert out["list"] == ["kept"]  # reading works
    for op in ("save_model", "save_file", "delete_model", "repair_index"):
        code, message = out[op]
        assert code == "read-only", (op, out[op])
        assert str(folder) in message and "read-only file system" in message and "writable folder" in message, (op, message)
    assert os.listdir(folder) == []  # the mount went with the namespace


@pytest.mark.skipif(not hasattr(resource, "RLIMIT_FSIZE"), reason="POSIX resource limits")
def test_disk_full_is_a_clear_error_and_leaves_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    out = _child("fsize", folder)
    code, _, message = out.partition(" | ")
    assert code == "no-space", out
    assert not [p for p in folder.iterdir() if p.suffix == ".distillgan" or p.name.endswith((".tmp", ".distillgan-tmp"))]


def test_a_folder_that_is_a_file(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "models"
    not_a_folder.write_text("a file")
    with pytest.raises(DistillganError) as e:
        save_model({"w": torch.ones(1)}, {}, {}, ModelMetadata(), not_a_folder)
    assert e.value.code == "not-a-directory" and str(not_a_folder) in str(e.value)


@pytest.mark.parametrize("device", ["cuda", "cuda:7", "mps"])
def test_an_unavailable_device_names_cpu(tmp_path: Path, device: str) -> None:
    if device.startswith("cuda") and torch.cuda.is_available() and (device == "cuda" or torch.cuda.device_count() > 7):
        pytest.skip("this machine has that device")
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    path = save_file({"w": torch.ones(1)}, tmp_path / "m.distillgan")
    with pytest.raises(InputError) as e:
        load_model(path, device=device)
    assert e.value.code == "device-unavailable" and 'device="cpu"' in str(e.value)
    with pytest.raises(InputError) as e:  # checked when the file is opened, not as a raw error at get_tensor
        safe_open(path, device=device)
    assert e.value.code == "device-unavailable" and 'device="cpu"' in str(e.value)


# --- builders -------------------------------------------------------------------------------------


def test_model_builder_strict_assign_and_vocoder_builder(tmp_path: Path) -> None:
    torch.manual_seed(1)
    net, voc = Net(), nn.Conv1d(2, 2, 3)
    path = save_file(net, tmp_path / "m.distillgan",
                     vocoder_state={"type": "hifigan", "generator_state_dict": voc.state_dict(), "config": {}})
    on_meta = load_model(path, model_builder=lambda m: Net().to("meta"), assign=True,
                         vocoder_builder=lambda m: nn.Conv1d(2, 2, 3, device="meta"))
    assert not any(p.is_meta for p in on_meta.model.parameters())
    assert on_meta.model.a.weight.data_ptr() == on_meta.state_dict["a.weight"].data_ptr()  # the loaded tensor itself
    assert torch.equal(on_meta.vocoder.weight, voc.weight.detach()) and not on_meta.model.training
    with pytest.raises(InputError) as e:
        load_model(path, model_builder=lambda m: Net().to("meta"))  # assign=False on meta: a no-op load
    assert "assign=True" in str(e.value)

    class Bigger(Net):
        def __init__(self) -> None:
            super().__init__()
            self.c = nn.Linear(2, 2)

    with pytest.raises(InputError):
        load_model(path, model_builder=lambda m: Bigger())
    relaxed = load_model(path, model_builder=lambda m: Bigger(), strict=False)
    assert torch.equal(relaxed.model.a.weight, net.a.weight.detach())


_CHILD_META = r"""
import sys, torch, distillgan
from torch import nn
path, mode = sys.argv[1], sys.argv[2]

def build(loaded):
    if mode == "meta":
        with torch.device("meta"):  # no memory at all until assign=True puts the loaded tensors in
            return nn.Sequential(*[nn.Linear(4096, 4096, bias=False) for _ in range(16)])
    return nn.Sequential(*[nn.Linear(4096, 4096, bias=False) for _ in range(16)])

def hwm():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))

getattr(distillgan, "load_model")  # import what load_model needs before measuring
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the high-water mark to the current RSS
before = hwm()
loaded = distillgan.load_model(path, model_builder=build, assign=(mode == "meta"))
print(hwm() - before)
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux's resettable high-water mark")
def test_a_meta_device_builder_with_assign_adds_no_second_copy(tmp_path: Path) -> None:
    """1 GiB of weights: building on meta and assigning the loaded tensors keeps memory at the mapping's."""
    model = nn.Sequential(*[nn.Linear(4096, 4096, bias=False) for _ in range(16)])  # 16 x 64 MiB
    path = save_file(model, tmp_path / "big.distillgan")
    del model
    growth = {}
    for mode in ("meta", "cpu"):
        r = subprocess.run([sys.executable, "-c", _CHILD_META, str(path), mode], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        growth[mode] = int(r.stdout.strip())
    assert growth["meta"] < 64 << 20, growth  # nothing copied: the parameters are views of the mapping, untouched
    assert growth["cpu"] > 900 << 20, growth  # the usual way allocates the module's own 1 GiB (so the check can fail)


# --- logging, progress, repr ----------------------------------------------------------------------


def test_logging_progress_and_a_short_repr(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    big = {f"layer{i}.weight": torch.randn(64, 64) for i in range(300)}
    with caplog.at_level(logging.INFO, logger="distillgan"):
        path = save_model(big, {}, {}, ModelMetadata(name="Many"), tmp_path)
        calls: list[tuple[int, int]] = []
        loaded = load_model(path, progress=lambda done, total: calls.append((done, total)))
    assert any("saved" in r.getMessage() for r in caplog.records) and any("loaded" in r.getMessage() for r in caplog.records)
    total = sum(t.numel() * t.element_size() for t in big.values())
    assert calls[-1] == (total, total) and all(a[0] <= b[0] for a, b in zip(calls, calls[1:])) and {c[1] for c in calls} == {total}
    text = repr(loaded)
    assert len(text) < 400 and "300 tensors" in text and "Many" in text
    json.dumps(loaded.metadata.__dict__)


def test_progress_of_save_verify_and_convert_ends_exactly_at_its_total(tmp_path: Path) -> None:
    """Each report is (done, total) with done never past total, and the last one is (total, total)."""
    state = {f"w{i}": torch.randn(300, 300) for i in range(12)}  # ~4.3 MB: several chunks
    calls: dict[str, list[tuple[int, int]]] = {"save": [], "verify": [], "convert": []}
    path = save_model(state, {}, {}, ModelMetadata(name="p"), tmp_path / "a", progress=lambda d, t: calls["save"].append((d, t)))
    distillgan.verify(path, progress=lambda d, t: calls["verify"].append((d, t)))
    torch.save({"model_state_dict": state}, tmp_path / "ck.pt")
    distillgan.convert_checkpoint(tmp_path / "ck.pt", tmp_path / "b", progress=lambda d, t: calls["convert"].append((d, t)))
    for what, seen in calls.items():
        assert seen, what
        total = seen[-1][1]
        assert seen[-1] == (total, total), (what, seen[-1])
        assert all(t == total and 0 <= d <= total for d, t in seen), what
        assert [d for d, _ in seen] == sorted(d for d, _ in seen), what


def test_a_device_load_moves_each_stored_tensor_once(tmp_path: Path) -> None:
    """On a non-CPU device tied tensors stay one object: each stored tensor is moved once (meta stands in for a GPU here)."""
    shared = torch.randn(4, 4)
    path = save_file({"a": shared, "b": shared, "c": torch.ones(2)}, tmp_path / "t.distillgan", extra={"again": shared})
    loaded = load_model(path, device="meta")
    assert loaded.state_dict["a"].is_meta and loaded.state_dict["a"] is loaded.state_dict["b"] is loaded.extra["again"]
