"""Bringing users' files across: the app's checkpoints and pickle .distillgan files, common checkpoints, safetensors.

Files are written the way their programs write them (``torch.save`` of structures rebuilt from the
app's code in tests/support/appshapes.py, the Enum under the app's own module path), converted without
running anything in them, and every value is compared after conversion.
"""

from __future__ import annotations

import json
import os
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import appshapes as app
from expected import saved_form
import pytest
import safetensors.torch
import torch
from torch import nn

import distillgan
from distillgan import InputError, LegacyFormatError, convert_checkpoint, export_safetensors, load_model, read_checkpoint
from distillgan.legacy import V1_MESSAGE


# --- the app's files -----------------------------------------------------------------------------


def test_app_training_checkpoint_keeps_everything(tmp_path: Path, assert_same_tree: Callable[..., None]) -> None:
    ckpt = app.training_checkpoint(cancelled=True, nan_val_epoch=1, latent_analysis=app.analysis_dict(seed=4))
    assert ckpt["val_loss"] == math.inf and isinstance(ckpt["training_config"]["preset"], app.OverfittingPreset)
    pt = app.write_app_pickle(ckpt, tmp_path / "checkpoint_epoch0002.pt")

    path = convert_checkpoint(pt, tmp_path / "models")
    loaded = load_model(path)
    assert_same_tree(loaded.state_dict, dict(ckpt["model_state_dict"]))
    assert_same_tree(loaded.training_config, saved_form(ckpt["training_config"]))
    assert_same_tree(loaded.spectrogram_config, ckpt["spectrogram_config"])
    assert_same_tree(loaded.analysis, ckpt["latent_analysis"])
    assert loaded.latent_dim == ckpt["training_config"]["latent_dim"] == 64  # only inside training_config in the file
    rest = {k: v for k, v in ckpt.items() if k not in ("model_state_dict", "training_config", "spectrogram_config", "latent_analysis")}
    assert_same_tree(loaded.extra, saved_form(rest))  # optimizer, scheduler, metrics history (NaN), epoch, losses, kl_weight
    assert all(type(k) is int for k in loaded.extra["optimizer_state_dict"]["state"])
    meta = loaded.metadata
    assert meta.name == "checkpoint_epoch0002" and meta.training_epochs == ckpt["epoch"]
    assert meta.final_val_loss == math.inf and meta.final_train_loss == ckpt["train_loss"]


def test_app_pickle_distillgan_keeps_its_id_name_analysis_and_vocoder(tmp_path: Path, assert_same_tree: Callable[..., None]) -> None:
    voc = app.vocoder_state(small=True, with_checkpoint=True, seed=5)
    saved = app.seed_distillgan_dict(vocoder=voc, name="Field Recordings", tags=["birds"])
    src = app.write_app_pickle(saved, tmp_path / "field_recordings.distillgan")
    with pytest.raises(LegacyFormatError) as e:  # the strict reader refuses it, and says what to do
        load_model(src)
    assert e.value.code == "pickle" and "distillgan convert" in str(e.value)

    path = convert_checkpoint(src, tmp_path / "models")
    loaded = load_model(path)
    assert loaded.metadata.model_id == saved["metadata"]["model_id"] and loaded.metadata.name == "Field Recordings"
    assert loaded.metadata.tags == ["birds"] and loaded.metadata.save_date == saved["metadata"]["save_date"]
    assert_same_tree(loaded.state_dict, dict(saved["model_state_dict"]))
    assert_same_tree(loaded.analysis, saved["latent_analysis"])
    assert_same_tree(loaded.training_config, saved_form(saved["training_config"]))
    assert_same_tree(loaded.vocoder_state, saved_form(voc))
    assert loaded.latent_dim == saved["latent_dim"] and loaded.extra is None
    assert distillgan.ModelLibrary(tmp_path / "models").get(saved["metadata"]["model_id"]) is not None


def test_seed_api_save_model_from_checkpoint_fills_metadata_in_place(tmp_path: Path) -> None:
    ckpt = app.training_checkpoint(cancelled=False)
    pt = app.write_app_pickle(ckpt, tmp_path / "best.pt")
    meta = distillgan.ModelMetadata(name="From the library tab")
    path = distillgan.save_model_from_checkpoint(pt, meta, tmp_path / "models")
    assert meta.model_id and meta.save_date and meta.training_epochs == ckpt["epoch"]
    assert meta.final_train_loss == ckpt["train_loss"] and meta.name == "From the library tab"
    assert load_model(path).metadata == meta


def test_legacy_distill_stays_refused_with_the_seed_message(tmp_path: Path) -> None:
    src = app.write_app_pickle(app.legacy_distill_dict(), tmp_path / "old.distill")
    for call in (lambda: convert_checkpoint(src, tmp_path / "m"), lambda: read_checkpoint(src)):
        with pytest.raises(LegacyFormatError) as e:
            call()
        assert str(e.value) == V1_MESSAGE and e.value.code == "legacy-distill-v1"
    assert not (tmp_path / "m").exists() or not list((tmp_path / "m").glob("*.distillgan"))


def test_legacy_marker_beyond_the_byte_scan_is_refused_too(tmp_path: Path) -> None:
    """The v1 detector walks 200 000 opcodes; a marker after them is caught once the file is read."""
    big = {f"k{i}": i for i in range(120_000)}
    big["format"] = "distill_model"
    big["model_state_dict"] = {"w": torch.ones(1)}
    src = tmp_path / "late.distill"
    torch.save(big, src)
    with pytest.raises(LegacyFormatError) as e:
        read_checkpoint(src)
    assert str(e.value) == V1_MESSAGE


# --- common checkpoint shapes ---------------------------------------------------------------------


def test_hifigan_generator_checkpoint_in_the_legacy_stream_format(tmp_path: Path, assert_same_tree: Callable[..., None]) -> None:
    """The official HiFi-GAN g_* files: {"generator": state_dict}, saved by torch < 1.6 (the legacy stream)."""
    gen = app.vocoder_training(small=True, seed=2).generator
    src = tmp_path / "g_02500000"
    torch.save({"generator": gen.state_dict()}, src, _use_new_zipfile_serialization=False)
    ck = read_checkpoint(src)
    assert ck.kind == "state-dict-key"
    assert_same_tree(ck.state_dict, dict(gen.state_dict()))
    path = convert_checkpoint(src, tmp_path / "m", name="HiFi-GAN")
    assert_same_tree(load_model(path).state_dict, dict(gen.state_dict()))


def test_lightning_checkpoint_with_strip_prefix(tmp_path: Path, assert_same_tree: Callable[..., None]) -> None:
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    opt = torch.optim.Adam(net.parameters())
    net(torch.randn(2, 3)).sum().backward()
    opt.step()
    ckpt = {
        "epoch": 7, "global_step": 700, "pytorch-lightning_version": "2.4.0",
        "state_dict": {f"model.{k}": v for k, v in net.state_dict().items()},
        "optimizer_states": [opt.state_dict()], "lr_schedulers": [], "hyper_parameters": {"lr": 1e-3, "layers": (3, 4, 2)},
    }  # fmt: skip
    src = tmp_path / "epoch=7-step=700.ckpt"
    torch.save(ckpt, src)
    path = convert_checkpoint(src, tmp_path / "m", strip_prefix="model.")
    loaded = load_model(path)
    assert_same_tree(loaded.state_dict, dict(net.state_dict()))
    assert_same_tree(loaded.extra, {k: v for k, v in ckpt.items() if k != "state_dict"})
    fresh = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    fresh.load_state_dict(loaded.state_dict)


def test_bare_state_dict_and_key(tmp_path: Path, assert_same_tree: Callable[..., None]) -> None:
    sd = {"a.weight": torch.randn(2, 2), "a.bias": torch.zeros(2)}
    torch.save(sd, tmp_path / "bare.pt")
    assert read_checkpoint(tmp_path / "bare.pt").kind == "state-dict"
    torch.save({"ema": {"shadow": sd}, "weights": sd, "note": "x"}, tmp_path / "nested.pt")
    with pytest.raises(InputError) as e:
        read_checkpoint(tmp_path / "nested.pt")
    assert e.value.code == "bad-checkpoint" and "--key" in str(e.value)
    ck = read_checkpoint(tmp_path / "nested.pt", key="weights")
    assert_same_tree(ck.state_dict, sd)
    assert_same_tree(ck.extra, {"ema": {"shadow": sd}, "note": "x"})
    assert ck.extra["ema"]["shadow"]["a.weight"] is ck.state_dict["a.weight"]  # shared storage in the file: one tensor


def test_safetensors_input_keeps_its_metadata(tmp_path: Path, assert_same_tree: Callable[..., None]) -> None:
    sd = {"w": torch.randn(3, 2), "b": torch.arange(4, dtype=torch.int16)}
    src = tmp_path / "plain.safetensors"
    safetensors.torch.save_file(sd, str(src), metadata={"format": "pt", "author": "someone"})
    with pytest.raises(distillgan.DistillganError) as e:
        load_model(src)
    assert e.value.code == "safetensors-file" and "distillgan convert" in str(e.value)
    path = convert_checkpoint(src, tmp_path / "m")
    loaded = load_model(path)
    assert_same_tree(loaded.state_dict, {"w": sd["w"], "b": sd["b"]} if list(loaded.state_dict) == ["w", "b"] else {"b": sd["b"], "w": sd["w"]})
    assert loaded.extra == {"safetensors_metadata": {"format": "pt", "author": "someone"}}


def test_unsupported_or_damaged_inputs(tmp_path: Path) -> None:
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(InputError) as e:
        read_checkpoint(tmp_path / "text.pt")
    assert e.value.code.startswith("convert-") or e.value.code == "bad-checkpoint"
    torch.save([torch.ones(1)], tmp_path / "list.pt")
    with pytest.raises(InputError) as e:
        read_checkpoint(tmp_path / "list.pt")
    assert e.value.code == "bad-checkpoint"
    with pytest.raises(distillgan.FileAccessError) as e:  # also a FileNotFoundError
        read_checkpoint(tmp_path / "missing.pt")
    assert e.value.code == "not-found" and isinstance(e.value, FileNotFoundError)
    good = distillgan.save_model({"w": torch.ones(1)}, {}, {}, distillgan.ModelMetadata(), tmp_path / "m")
    with pytest.raises(InputError) as e:
        read_checkpoint(good)
    assert "already a .distillgan" in str(e.value)


_AUDIT = r"""
import sys, os
events = []
# ctypes.cdata is the writer itself reading tensor memory (tensors.tensor_bytes); loading code would be dlopen/dlsym
WATCH = ("exec", "compile", "import", "os.system", "subprocess.Popen", "os.exec", "os.spawn", "os.posix_spawn",
         "ctypes.dlopen", "ctypes.dlsym", "ctypes.call_function")
def hook(event, args):
    if event.startswith(WATCH):
        events.append(event)
import torch, distillgan, distillgan.convert, distillgan.pickled, distillgan.persistence  # every import done before the hook
sys.addaudithook(hook)
try:
    distillgan.convert_checkpoint(sys.argv[1], sys.argv[2])
    outcome = "converted"
except distillgan.DistillganError as e:
    outcome = "refused " + e.code
print(outcome, sorted(set(events)))
"""


def test_conversion_of_a_hostile_checkpoint_runs_nothing(tmp_path: Path) -> None:
    """A torch zip whose data.pkl calls os.system: converting it must not run it (audited in a fresh process)."""
    import os
    import pickle

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    src = tmp_path / "evil.pt"
    torch.save({"model_state_dict": {"w": torch.ones(1)}, "optimizer_state_dict": Payload(), "epoch": 1}, src)
    assert b"system" in src.read_bytes()
    r = subprocess.run([sys.executable, "-c", _AUDIT, str(src), str(tmp_path / "m")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert not (tmp_path / "pwned").exists()
    outcome, _, events = r.stdout.strip().partition(" [")
    assert events.rstrip("]") == "", r.stdout  # no exec/compile/import/system/subprocess event while converting
    if outcome == "converted":  # the call was recorded as inert data, never made
        loaded = load_model(next((tmp_path / "m").glob("*.distillgan")))
        assert loaded.extra["optimizer_state_dict"]["__class__"] in ("posix.system", "nt.system", "os.system")
    # and the same payload really does run under pickle, so the test can fail
    assert pickle.loads(pickle.dumps(Payload())) == 0 and (tmp_path / "pwned").exists()


# --- export ---------------------------------------------------------------------------------------


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.body = nn.Linear(4, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight


def test_export_loads_into_the_module_with_safetensors_and_converts_back(tmp_path: Path, assert_same_tree: Callable[..., None]) -> None:
    torch.manual_seed(0)
    model = Tied()
    analysis = {"pca": torch.randn(2, 4)}
    path = distillgan.save_model(model, {"sr": 48000}, {"lr": 1e-3}, distillgan.ModelMetadata(name="Tied"), tmp_path / "m",
                                 analysis=analysis)
    out = export_safetensors(path, tmp_path / "tied.safetensors")
    fresh = Tied()
    missing, unexpected = safetensors.torch.load_model(fresh, str(out))  # strict: raises on a mismatch
    assert not missing and not unexpected
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    assert fresh.head.weight is fresh.embed.weight
    names = set(safetensors.torch.load_file(str(out)))
    assert names == {"body.bias", "body.weight", "embed.weight"}  # tied head.weight stored once; no analysis
    with safetensors.safe_open(str(out), "pt") as f:
        manifest = json.loads(f.metadata()["distillgan.manifest"])
    assert manifest["metadata"]["name"] == "Tied"
    with pytest.raises(InputError):
        export_safetensors(path, out)  # no silent overwrite
    export_safetensors(path, out, overwrite=True)

    back = convert_checkpoint(out, tmp_path / "back")
    again = load_model(back)
    exported = safetensors.torch.load_file(str(out))
    assert_same_tree(dict(sorted(again.state_dict.items())), dict(sorted(exported.items())))
    assert again.metadata.name == "Tied" and again.spectrogram_config == {"sr": 48000}


def test_export_vocoder(tmp_path: Path) -> None:
    voc = app.vocoder_state(small=True, with_checkpoint=False, seed=1)
    path = distillgan.save_model({"w": torch.ones(1)}, {}, {}, distillgan.ModelMetadata(), tmp_path / "m", vocoder_state=voc)
    out = export_safetensors(path, tmp_path / "voc.safetensors", vocoder=True)
    gen = app.Generator(app.HiFiGANConfig(**voc["config"]))
    missing, unexpected = safetensors.torch.load_model(gen, str(out))
    assert not missing and not unexpected
    with pytest.raises(InputError):
        export_safetensors(distillgan.save_model({"w": torch.ones(1)}, {}, {}, distillgan.ModelMetadata(), tmp_path / "n"),
                           tmp_path / "none.safetensors", vocoder=True)


# --- the command line -----------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("distillgan")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=180)


def test_cli_convert_and_export(tmp_path: Path) -> None:
    saved = app.seed_distillgan_dict(name="Old Piano")
    src = app.write_app_pickle(saved, tmp_path / "old_piano.distillgan")
    r = _cli("convert", str(src), "--dir", str(tmp_path / "models"))
    assert r.returncode == 0, r.stderr
    assert "Old Piano" in r.stdout  # the name the file carries; --name not needed
    new = next((tmp_path / "models").glob("*.distillgan"))
    r = _cli("export", str(new), str(tmp_path / "w.safetensors"))
    assert r.returncode == 0, r.stderr and (tmp_path / "w.safetensors").exists()
    r = _cli("inspect", str(src))
    assert r.returncode == 1 and "distillgan convert" in r.stderr
    help_text = _cli("convert", "--help").stdout
    for shape in ("safetensors", "app .distillgan", "app checkpoint", "--key", "Lightning", "HiFi-GAN", "--strip-prefix", "retrain"):
        assert shape in help_text, shape


# --- export: progress and failing destinations -----------------------------------------------------


def test_export_progress_is_exact_and_ends_at_the_file_size(tmp_path: Path) -> None:
    state = {f"w{i}": torch.randn(200, 300) for i in range(6)}
    path = distillgan.save_model(state, {}, {}, distillgan.ModelMetadata(name="p"), tmp_path / "m")
    calls: list[tuple[int, int]] = []
    out = export_safetensors(path, tmp_path / "p.safetensors", progress=lambda d, t: calls.append((d, t)))
    size = out.stat().st_size
    assert calls and calls[-1] == (size, size)
    assert all(t == size and 0 <= d <= size for d, t in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    loaded = safetensors.torch.load_file(str(out))
    assert set(loaded) == set(state) and all(torch.equal(loaded[k], v) for k, v in state.items())


def test_export_into_a_missing_folder_is_a_distillgan_error_and_leaves_nothing(tmp_path: Path) -> None:
    path = distillgan.save_model({"w": torch.ones(4)}, {}, {}, distillgan.ModelMetadata(name="a"), tmp_path / "m")
    target = tmp_path / "nonexistent" / "dir" / "a.safetensors"
    with pytest.raises(distillgan.DistillganError) as e:
        export_safetensors(path, target)
    assert e.value.code == "not-found" and str(target.parent) in str(e.value)
    assert not (tmp_path / "nonexistent").exists()  # nothing created
    r = _cli("export", str(path), str(target))
    assert r.returncode == 1 and "Traceback" not in r.stderr and "[not-found]" in r.stderr, r.stderr


def test_export_onto_a_folder_or_an_existing_file(tmp_path: Path) -> None:
    path = distillgan.save_model({"w": torch.ones(4)}, {}, {}, distillgan.ModelMetadata(name="a"), tmp_path / "m")
    with pytest.raises(distillgan.DistillganError) as e:
        export_safetensors(path, tmp_path)
    assert e.value.code == "invalid-input" and "folder" in str(e.value)
    (tmp_path / "x.safetensors").write_bytes(b"mine")
    with pytest.raises(distillgan.DistillganError) as e:
        export_safetensors(path, tmp_path / "x.safetensors")
    assert e.value.code == "file-exists" and (tmp_path / "x.safetensors").read_bytes() == b"mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "x.safetensors"]  # no temporary file left


def _as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` as uid/gid 65534 (a user without write access to a chmod 555 folder).

    Skips when that user cannot run ``argv[0]`` at all: a checkout in a folder it cannot enter
    (root's 0700 home, common in containers) makes the interpreter unreachable, which says
    nothing about the permission under test.
    """
    drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    env = {**os.environ, "HOME": "/tmp"}
    probe = subprocess.run([*drop, argv[0], "--version"], check=False, capture_output=True, text=True, timeout=180, env=env)
    if probe.returncode != 0:
        pytest.skip(f"user 65534 cannot run {argv[0]} (a folder on its path is closed to it): {probe.stderr.strip()[:200]}")
    return subprocess.run([*drop, *argv], capture_output=True, text=True, timeout=180, env=env)


def test_export_into_a_read_only_folder_says_permission_denied(tmp_path: Path) -> None:
    import shutil
    import tempfile

    if os.name != "posix":
        pytest.skip("chmod 555 folders are a POSIX test")
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: root writes into a chmod 555 folder anyway")
    base = Path(tempfile.mkdtemp(prefix="distillgan-export-"))  # not under pytest's 0700 tmp_path: the other user must reach it
    try:
        base.chmod(0o755)
        path = distillgan.save_model({"w": torch.ones(4)}, {}, {}, distillgan.ModelMetadata(name="a"), base / "m")
        ro = base / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        exe = str(Path(sys.executable).with_name("distillgan"))
        argv = [exe, "export", str(path), str(ro / "a.safetensors")]
        r = _as_nobody(*argv) if os.geteuid() == 0 else subprocess.run(argv, capture_output=True, text=True, timeout=180)
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert "Traceback" not in r.stderr and "[permission-denied]" in r.stderr, r.stderr
        assert str(ro / "a.safetensors") in r.stderr, r.stderr
        assert list(ro.iterdir()) == []
    finally:
        (base / "ro").chmod(0o755)
        shutil.rmtree(base)


# --- the app's folder, converted where it is --------------------------------------------------------


def _app_folder(folder: Path) -> tuple[list[dict[str, Any]], list[Path]]:
    """An app-layout folder: two pickle .distillgan models saved the app's way (file + index entry)."""
    saved = [app.seed_distillgan_dict(name="Piano", tags=["keys"]),
             app.seed_distillgan_dict(name="Rain", seed=1, with_analysis=False, description="field")]
    return saved, [app.app_save_model(s, folder) for s in saved]


def test_converting_the_apps_folder_in_place_keeps_ids_names_and_a_backup(
    tmp_path: Path, assert_same_tree: Callable[..., None]
) -> None:
    folder = tmp_path / "models"
    saved, files = _app_folder(folder)
    before = {p.name: p.read_bytes() for p in files}
    elsewhere = [distillgan.inspect(convert_checkpoint(p, tmp_path / "elsewhere"))["manifest"] for p in files]
    for s, p, other in zip(saved, files, elsewhere):
        out = convert_checkpoint(p, folder)  # the very file the folder's index lists under this id
        assert distillgan.inspect(out)["manifest"] == other  # in place or not, the same model
        assert out == p  # same file name
        loaded = load_model(out)
        assert loaded.metadata.model_id == s["metadata"]["model_id"] and loaded.metadata.name == s["metadata"]["name"]
        assert_same_tree(loaded.state_dict, dict(s["model_state_dict"]))
        backup = p.with_name(p.name + ".pickle-backup")
        assert backup.read_bytes() == before[p.name]  # the original pickle, kept beside it
    lib = distillgan.ModelLibrary(folder)
    entries = {e.model_id: e for e in lib.list_all()}
    assert set(entries) == {s["metadata"]["model_id"] for s in saved}
    assert {e.file_path for e in entries.values()} == {p.name for p in files}
    for p in files:
        e = next(e for e in entries.values() if e.file_path == p.name)
        assert e.file_size_bytes == p.stat().st_size  # the entry is the new file's
    report = lib.repair_index()
    assert report.legacy == [] and report.invalid == {}  # nothing pickle-era is indexed any more
    # the app's own reader still reads the folder, and lists the same models under the same files
    theirs = app.AppModelLibrary(folder)
    assert {(e.model_id, e.file_path) for e in theirs.list_all()} == {(e.model_id, e.file_path) for e in entries.values()}
    # a second run finds nothing to convert: the file is an archive now
    with pytest.raises(InputError) as e:
        convert_checkpoint(files[0], folder)
    assert "already a .distillgan archive" in str(e.value)
    assert files[0].with_name(files[0].name + ".pickle-backup").read_bytes() == before[files[0].name]


def test_in_place_conversion_never_overwrites_an_existing_backup(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    saved, files = _app_folder(folder)
    taken = files[0].with_name(files[0].name + ".pickle-backup")
    taken.write_bytes(b"an earlier backup")
    convert_checkpoint(files[0], folder)
    assert taken.read_bytes() == b"an earlier backup"
    others = sorted(p.name for p in folder.iterdir() if "pickle-backup" in p.name and p != taken)
    assert others == [files[0].name + ".pickle-backup-1"]


def test_a_crash_during_in_place_conversion_leaves_one_indexed_file_and_the_backup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kill the conversion at each step: the index lists either the old pickle or the new archive, and the backup stays."""
    import distillgan.convert as conv

    class Crash(BaseException):
        pass

    for step in ("backup", "publish", "index"):
        folder = tmp_path / step
        saved, files = _app_folder(folder)
        original = files[0].read_bytes()
        mid = saved[0]["metadata"]["model_id"]
        with monkeypatch.context() as m:
            m.setattr(conv, "_crash_point", lambda where, step=step: (_ for _ in ()).throw(Crash()) if where == step else None)
            with pytest.raises(Crash):
                convert_checkpoint(files[0], folder)
        entry = app.AppModelLibrary(folder).get(mid)
        assert entry is not None and entry.file_path == files[0].name  # still indexed, under its name
        data = files[0].read_bytes()
        assert data == original or data[:2] == b"PK" and load_model(files[0]).metadata.model_id == mid
        backup = files[0].with_name(files[0].name + ".pickle-backup")
        if step != "backup":
            assert backup.read_bytes() == original
        ours = distillgan.ModelLibrary(folder).get(mid)  # a reader indexes a replaced file again (its marker), in memory
        assert ours is not None and ours.file_size_bytes == files[0].stat().st_size
        distillgan.ModelLibrary(folder).remove("no-such-id")  # the next change under the lock writes it
        assert not (folder / f".{files[0].name}.replacing").exists()
        if data == original:
            convert_checkpoint(files[0], folder)  # the rerun finishes the job
        assert load_model(files[0]).metadata.model_id == mid
        assert backup.read_bytes() == original  # one backup: a rerun reuses the link the crashed run made
        assert sorted(p.name for p in folder.iterdir() if "pickle-backup" in p.name) == [backup.name]


def test_cli_converts_a_whole_app_folder_in_one_command(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    saved, files = _app_folder(folder)
    ckpt = tmp_path / "ck.pt"
    torch.save({"model_state_dict": {"w": torch.ones(3)}}, ckpt)
    r = _cli("convert", "--dir", str(folder), str(folder), str(ckpt))
    assert r.returncode == 0, r.stderr
    for p in files:
        assert f"{p.name}.pickle-backup" in r.stdout and "in place" in r.stdout
        assert load_model(p).metadata.name in {"Piano", "Rain"}
    assert "ck" in r.stdout
    assert distillgan.ModelLibrary(folder).count() == 3
    r = _cli("convert", "--dir", str(folder), *(str(p) for p in files))  # again: nothing to do, nothing lost
    assert r.returncode == 0 and "already" in r.stdout, (r.stdout, r.stderr)
    assert distillgan.ModelLibrary(folder).count() == 3
    r = _cli("convert", "--dir", str(folder), "--name", "X", str(files[0]), str(ckpt))
    assert r.returncode == 2 and "--name" in r.stderr


def test_in_place_conversion_without_hard_links_keeps_a_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FAT, some network shares: no os.link. The backup is then a copy published under a free name."""
    import errno

    folder = tmp_path / "models"
    saved, files = _app_folder(folder)
    original = files[0].read_bytes()

    def no_links(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    convert_checkpoint(files[0], folder)
    backup = files[0].with_name(files[0].name + ".pickle-backup")
    assert backup.read_bytes() == original and not os.path.samefile(backup, files[0])
    assert load_model(files[0]).metadata.model_id == saved[0]["metadata"]["model_id"]
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and "backup" in p.name) == []  # no stray copy


# --- hostile or unusual inputs found by review --------------------------------------------------------------


def test_a_backup_name_planted_as_a_link_to_the_pickle_never_stands_in_for_the_backup(tmp_path: Path) -> None:
    """A link named <file>.pickle-backup pointing at the pickle itself is not a backup: the rename would take the last copy."""
    folder = tmp_path / "models"
    saved, files = _app_folder(folder)
    original = files[0].read_bytes()
    planted = files[0].with_name(files[0].name + ".pickle-backup")
    planted.symlink_to(files[0].name)
    done = distillgan.convert.convert_file(files[0], folder)
    assert planted.is_symlink() and done.backup != planted
    assert done.backup.read_bytes() == original and not done.backup.is_symlink()  # the pickle survives under a free name
    assert load_model(files[0]).metadata.model_id == saved[0]["metadata"]["model_id"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX-only")
def test_a_fifo_among_the_files_to_convert_is_refused_without_blocking(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    torch.save({"model_state_dict": {"w": torch.ones(2)}}, src / "b.distillgan")
    os.mkfifo(src / "a.distillgan")  # nothing ever writes to it: opening it for reading would wait forever
    r = _cli("convert", "--dir", str(tmp_path / "out"), str(src))
    assert r.returncode == 1 and "not-regular-file" in r.stderr and "a.distillgan" in r.stderr, (r.stdout, r.stderr)
    assert "saved" in r.stdout and distillgan.ModelLibrary(tmp_path / "out").count() == 1  # the rest went on
    r = _cli("convert", "--dir", str(tmp_path / "out"), str(src / "a.distillgan"))
    assert r.returncode == 1 and "not-regular-file" in r.stderr


def test_converting_a_folder_with_nothing_to_convert_says_so(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    r = _cli("convert", "--dir", str(tmp_path / "out"), str(tmp_path / "empty"))
    assert r.returncode == 1 and "holds no *.distillgan file" in r.stderr and not r.stdout


def test_a_tensor_named_like_the_safetensors_metadata_key_is_refused_by_export(tmp_path: Path) -> None:
    path = distillgan.save_file({"__metadata__": torch.ones(2), "w": torch.zeros(3)}, tmp_path / "m.distillgan")
    with pytest.raises(InputError) as e:
        export_safetensors(path, tmp_path / "m.safetensors")
    assert e.value.code == "invalid-input" and "__metadata__" in str(e.value)
    assert not (tmp_path / "m.safetensors").exists() and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_export_to_a_name_near_the_length_limit(tmp_path: Path) -> None:
    path = distillgan.save_file({"w": torch.arange(4.0)}, tmp_path / "m.distillgan")
    out = tmp_path / ("x" * 230 + ".safetensors")  # 242 bytes: a legal name, too long for a prefix of itself plus a suffix
    assert export_safetensors(path, out) == out
    assert torch.equal(safetensors.torch.load_file(out)["w"], torch.arange(4.0))


# --- hostile or oversized exports -------------------------------------------------------------------


def test_export_whose_header_safetensors_would_refuse_writes_nothing(tmp_path: Path) -> None:
    # 15 MB of control characters: 15 MB of manifest, but 7 bytes each once JSON-escaped twice (105 MB of header)
    path = distillgan.save_model({"w": torch.ones(4)}, {}, {}, distillgan.ModelMetadata(name="big"), tmp_path / "m",
                                 extra={"notes": "\x01" * 15_000_000})
    out = tmp_path / "big.safetensors"
    with pytest.raises(InputError) as e:
        export_safetensors(path, out)
    assert e.value.code == "st-header-size" and "Nothing was written" in str(e.value)
    assert sorted(os.listdir(tmp_path)) == ["m"]  # no file, no temporary file
    r = _cli("export", str(path), str(out))
    assert r.returncode == 1 and "Traceback" not in r.stderr and r.stderr.count("error [st-header-size]") == 1, r.stderr
    assert not out.exists()


def test_converting_an_export_with_deeply_nested_manifest_json_is_a_coded_error(tmp_path: Path) -> None:
    deep = "[" * 200_000 + "]" * 200_000  # deeper than the interpreter's JSON decoder can go
    src = tmp_path / "deep.safetensors"
    safetensors.torch.save_file({"w": torch.ones(2)}, str(src), metadata={"distillgan.manifest": deep})
    with pytest.raises(InputError) as e:
        distillgan.read_checkpoint(src)
    assert e.value.code == "convert-unreadable"
    r = _cli("convert", str(src), "--dir", str(tmp_path / "models"))
    assert r.returncode == 1 and "Traceback" not in r.stderr and r.stderr.count("error [convert-unreadable]") == 1, r.stderr
    # nested deeper than a manifest may be, but readable: the configs stay out, the weights come across
    nested: Any = {"a": 1}
    for _ in range(100):
        nested = {"n": nested}
    manifest = {"metadata": {"name": "deep"}, "training_config": nested, "spectrogram_config": {"n_mels": 8}}
    safetensors.torch.save_file({"w": torch.ones(2)}, str(src), metadata={"distillgan.manifest": json.dumps(manifest)})
    ckpt = distillgan.read_checkpoint(src)
    assert ckpt.training_config == {} and ckpt.spectrogram_config == {"n_mels": 8} and ckpt.metadata == {"name": "deep"}
    assert ckpt.extra == {"safetensors_metadata": {"distillgan.manifest": json.dumps(manifest)}}  # kept, not dropped
