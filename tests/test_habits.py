"""What a newcomer with safetensors and huggingface_hub habits, and the app's maintainer, expect to work."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import distillgan
from distillgan import DistillganError, ModelMetadata, save_file, save_model

SCRIPT = Path(sys.executable).parent / ("distillgan.exe" if os.name == "nt" else "distillgan")


def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], check=False, capture_output=True, text=True, timeout=120, cwd=cwd, env=env)


def lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return save_file({"w": torch.arange(6.0)}, tmp_path / "m.distillgan")


# --- the command line -------------------------------------------------------------------------


def test_verify_takes_the_sha256_colon_hex_form_other_tools_print(model: Path) -> None:
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    for given in (f"sha256:{digest}", f"SHA256:{digest.upper()}", digest):
        r = run("verify", "--sha256", given, str(model))
        assert r.returncode == 0 and digest in r.stdout, (given, r.stdout, r.stderr)
        assert distillgan.verify(model, sha256=given)["sha256"] == digest
    r = run("verify", "--sha256", "sha256:" + "0" * 64, str(model))
    assert r.returncode == 1 and "[sha256-mismatch]" in r.stdout
    with pytest.raises(DistillganError) as e:  # a typo is not a mismatch
        distillgan.verify(model, sha256="sha256:abc")
    assert e.value.code == "invalid-input" and "64 hex digits" in str(e.value)


def test_json_output_has_one_shape_whatever_the_number_of_files_and_on_failure(model: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.distillgan"
    bad.write_bytes(b"not a model")
    for command in ("inspect", "verify"):
        one = run(command, "--json", str(model))
        assert one.returncode == 0, one.stderr
        (only,) = lines(one.stdout)
        two = lines(run(command, "--json", str(model), str(model)).stdout)
        assert two == [only, only] and only["ok"] is True and only["file"] == str(model)
        failed = run(command, "--json", str(bad))
        assert failed.returncode == 1
        assert lines(failed.stdout) == [{"file": str(bad), "ok": False, "code": "not-zip", "error": lines(failed.stdout)[0]["error"]}]
        mixed = lines(run(command, "--json", str(model), str(bad)).stdout)
        assert [o["ok"] for o in mixed] == [True, False] and set(mixed[0]) >= set(only) - {"file"}
    assert lines(run("inspect", "--json", str(model)).stdout)[0]["manifest"]["format"] == "distillgan_model"
    folder = tmp_path / "models"
    save_model({"w": torch.ones(1)}, {}, {}, ModelMetadata(name="a", model_id="a1"), folder)
    (listed,) = lines(run("list", "--json", "--dir", str(folder)).stdout)
    assert listed["ok"] is True and listed["dir"] == str(folder) and [m["model_id"] for m in listed["models"]] == ["a1"]
    (repaired,) = lines(run("repair", "--json", "--dir", str(folder)).stdout)
    assert repaired["ok"] is True and repaired["dir"] == str(folder) and "added" in repaired
    for command in ("list", "repair"):
        r = run(command, "--json", "--dir", str(tmp_path / "typo"))
        assert r.returncode == 1
        (failure,) = lines(r.stdout)
        assert failure["ok"] is False and failure["code"] == "not-found" and failure["dir"] == str(tmp_path / "typo")


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completion_completes_commands_options_and_files(model: Path) -> None:
    r = run("--print-completion", "bash")
    assert r.returncode == 0 and "complete -o filenames -F _distillgan distillgan" in r.stdout

    def complete(*words: str) -> list[str]:
        script = (f"source /dev/stdin; COMP_WORDS=(distillgan {' '.join(words)}); COMP_CWORD={len(words)}; "
                  '_distillgan; printf "%s\\n" "${COMPREPLY[@]}"')
        p = subprocess.run(["bash", "-c", script], input=r.stdout, check=False, capture_output=True, text=True, cwd=model.parent, timeout=30)
        assert p.returncode == 0, p.stderr
        return p.stdout.split()

    assert complete("ins") == ["inspect"]
    assert {"--json", "--sha256", "--progress"} <= set(complete("verify", "--"))
    assert complete("inspect", "m.dist") == ["m.distillgan"]
    assert complete("--print-completion", "z") == ["zsh"]


def test_zsh_completion_script() -> None:
    r = run("--print-completion", "zsh")
    assert r.returncode == 0 and "bashcompinit" in r.stdout and "_distillgan" in r.stdout
    if shutil.which("zsh"):
        p = subprocess.run(["zsh", "-c", "autoload -U compinit && compinit -u; eval \"$(cat)\"; whence -w _distillgan"],
                           input=r.stdout, check=False, capture_output=True, text=True, timeout=30)
        assert "function" in p.stdout, p.stderr
    assert run("--print-completion", "fish").returncode == 2


def test_progress_is_drawn_on_stderr_when_asked(model: Path) -> None:
    for args in (["inspect", "--verify", "--sha256", "--digests", "--progress"], ["verify", "--progress"]):
        r = run(*args, str(model))
        assert r.returncode == 0, r.stderr
        assert "100%" in r.stderr and str(model) in r.stderr, (args, r.stderr)
        quiet = run(*[a for a in args if a != "--progress"], str(model))  # stderr is a pipe, not a terminal: nothing drawn
        assert quiet.returncode == 0 and quiet.stderr == ""
    assert "100%" in run("inspect", "--digests", "--json", "--progress", str(model)).stderr
    assert lines(run("inspect", "--digests", "--json", "--progress", str(model)).stdout)[0]["ok"] is True  # stdout stays JSON


# --- errors -------------------------------------------------------------------------------------


def test_a_missing_file_is_also_a_file_not_found_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing.distillgan"
    calls = [lambda: distillgan.inspect(missing), lambda: distillgan.verify(missing), lambda: distillgan.load_model(missing),
             lambda: distillgan.load_file(missing), lambda: distillgan.safe_open(missing),
             lambda: distillgan.read_checkpoint(missing), lambda: distillgan.file_sha256(missing)]
    for call in calls:
        with pytest.raises(FileNotFoundError) as e:
            call()
        assert isinstance(e.value, DistillganError) and isinstance(e.value, ValueError) and isinstance(e.value, OSError)
        assert e.value.code == "not-found" and e.value.errno == errno.ENOENT
        assert str(missing) in str(e.value) and str(e.value).startswith("no such file")
    import pickle

    again = pickle.loads(pickle.dumps(e.value))
    assert type(again) is type(e.value) and again.code == "not-found"


def test_a_folder_given_as_a_file_is_also_an_is_a_directory_error(tmp_path: Path) -> None:
    for call in (lambda: distillgan.inspect(tmp_path), lambda: distillgan.load_file(tmp_path)):
        with pytest.raises(IsADirectoryError) as e:
            call()
        assert isinstance(e.value, DistillganError) and e.value.code == "not-regular-file"


@pytest.mark.skipif(os.name != "posix", reason="chmod 000 is a POSIX test")
def test_an_unreadable_file_is_also_a_permission_error() -> None:
    import tempfile

    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("root reads any file, and there is no setpriv to drop root")
    base = Path(tempfile.mkdtemp(prefix="distillgan-perm-"))  # not under pytest's 0700 tree: user 65534 must reach it
    try:
        base.chmod(0o755)
        model = save_file({"w": torch.ones(2)}, base / "m.distillgan")
        model.chmod(0)
        code = ("import errno, sys, distillgan\n"
                "try:\n    distillgan.inspect(sys.argv[1])\n"
                "except PermissionError as e:\n    print(isinstance(e, distillgan.DistillganError), e.errno == errno.EACCES, e.code)\n")
        drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
        r = subprocess.run([*drop, sys.executable, "-c", code, str(model)], check=False, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "HOME": "/tmp"})
        if r.returncode != 0 and drop and "Permission denied" in r.stderr and "distillgan" not in r.stderr:
            pytest.skip(f"user 65534 cannot run {sys.executable}: {r.stderr.strip()[:200]}")
        assert r.stdout.split() == ["True", "True", "io-error"], (r.stdout, r.stderr)
    finally:
        shutil.rmtree(base)


def test_an_unwritable_folder_is_also_a_permission_error(tmp_path: Path) -> None:
    from distillgan.errors import from_os_error

    e = from_os_error(PermissionError(errno.EACCES, "Permission denied", str(tmp_path)), "save a model", tmp_path)
    assert isinstance(e, PermissionError) and isinstance(e, DistillganError) and e.code == "permission-denied"
    assert e.filename == str(tmp_path) and "no permission to save a model" in str(e)
    e = from_os_error(OSError(errno.ENOSPC, "No space left on device"), "save a model", tmp_path)
    assert type(e) is distillgan.FileAccessError and e.code == "no-space"


# --- the test suite itself ----------------------------------------------------------------------


@pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to run a child as another user")
def test_the_permission_test_skips_when_the_unprivileged_user_cannot_reach_the_interpreter(tmp_path: Path) -> None:
    """A checkout behind a folder that user 65534 cannot enter (root's 0700 home): skipped with a reason, not failed."""
    import tempfile

    closed = Path(tempfile.mkdtemp(prefix="distillgan-closed-"))  # 0700: only root enters
    try:
        venv = Path(sys.prefix)
        (closed / "bin").mkdir()
        (closed / "lib").symlink_to(venv / "lib")
        shutil.copy(venv / "pyvenv.cfg", closed / "pyvenv.cfg")
        (closed / "bin" / "python").symlink_to(Path(sys.executable).resolve())
        (closed / "bin" / "distillgan").symlink_to(SCRIPT.resolve())
        python = closed / "bin" / "python"
        test = "tests/test_convert.py::test_export_into_a_read_only_folder_says_permission_denied"
        r = subprocess.run([str(python), "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", test], check=False, capture_output=True,
                           text=True, timeout=300, cwd=Path(__file__).resolve().parent.parent)
        assert "1 skipped" in r.stdout and "cannot run" in r.stdout, r.stdout[-3000:]
    finally:
        shutil.rmtree(closed)


# --- the models folder --------------------------------------------------------------------------


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_listing_a_folder_writes_nothing(tmp_path: Path) -> None:
    """Not an index, not a lock file: a folder that only holds model files (a download cache) stays as it was."""
    cache = tmp_path / "hub-cache"
    save_file({"w": torch.ones(2)}, cache / "a.distillgan", metadata=ModelMetadata(name="a", model_id="a1"))
    save_file({"w": torch.ones(3)}, cache / "b.distillgan", metadata=ModelMetadata(name="b", model_id="b1"))
    before = _tree(cache)
    library = distillgan.ModelLibrary(cache)
    assert sorted(e.model_id for e in library.list_all()) == ["a1", "b1"] and library.count() == 2
    assert library.get("a1") is not None and library.search("b")[0].model_id == "b1"
    r = run("list", "--dir", str(cache))
    assert r.returncode == 0 and "a1" in r.stdout
    assert _tree(cache) == before
    folder = tmp_path / "models"  # an index that lacks a model: reconciled in memory, the index left as it is
    save_model({"w": torch.ones(1)}, {}, {}, ModelMetadata(name="kept", model_id="k"), folder)
    index = (folder / "model_library.json").read_bytes()
    save_file({"w": torch.ones(1)}, folder / "dropped_in.distillgan", metadata=ModelMetadata(name="in", model_id="i"))
    (folder / ".model_library.lock").unlink()
    before = _tree(folder)
    assert {e.model_id for e in distillgan.ModelLibrary(folder).list_all()} == {"k", "i"}
    assert run("list", "--json", "--dir", str(folder)).returncode == 0
    assert _tree(folder) == before and (folder / "model_library.json").read_bytes() == index
    distillgan.ModelLibrary(folder).repair_index()  # a change writes it
    assert set(json.loads((folder / "model_library.json").read_text())["models"]) == {"k", "i"}


def test_an_entry_whose_file_cannot_be_confirmed_is_kept_and_flagged(tmp_path: Path) -> None:
    import appshapes as app

    folder = tmp_path / "models"
    pickled = app.app_save_model(app.seed_distillgan_dict(name="Pickled"), folder)  # the app's own torch.save file
    gone = save_model({"w": torch.ones(1)}, {}, {}, ModelMetadata(name="Gone", model_id="gone"), folder)
    save_model({"w": torch.ones(1)}, {}, {}, ModelMetadata(name="Fine", model_id="fine"), folder)
    gone.unlink()
    index = folder / "model_library.json"
    doc = json.loads(index.read_text())
    doc["models"]["win"] = dict(doc["models"]["fine"], model_id="win", name="Windows path", file_path="models\\fine.distillgan")
    index.write_text(json.dumps(doc, indent=2))
    written = index.read_bytes()
    entries = {e.model_id: e for e in distillgan.ModelLibrary(folder).list_all()}
    pickled_id = next(mid for mid, e in entries.items() if e.file_path == pickled.name)
    assert {mid: e.problem for mid, e in entries.items()} == {pickled_id: "needs-conversion", "gone": "missing-file",
                                                            "fine": "", "win": "missing-file"}
    assert "convert_folder" in entries[pickled_id].problem_detail and "not in the folder" in entries["gone"].problem_detail
    assert index.read_bytes() == written  # listed, flagged, nothing dropped or written
    save_model({"w": torch.ones(1)}, {}, {}, ModelMetadata(name="New", model_id="new"), folder)  # a write keeps them too
    assert set(json.loads(index.read_text())["models"]) == {pickled_id, "gone", "fine", "win", "new"}
    assert "problem" not in index.read_text()  # the flag is ours: the app's entries keep exactly the app's fields
    listed = lines(run("list", "--json", "--dir", str(folder)).stdout)[0]["models"]
    assert {m["model_id"]: m["problem"] for m in listed}["gone"] == "missing-file"
    table = run("list", "--dir", str(folder))
    assert "PROBLEM" in table.stdout.splitlines()[0] and "needs-conversion" in table.stdout
    assert "flagged  gone (missing-file" in table.stderr
    report = distillgan.ModelLibrary(folder).repair_index()  # the one explicit clean-up
    assert sorted(report.removed) == ["gone", "win"] and report.legacy == [pickled.name]
    assert set(json.loads(index.read_text())["models"]) == {pickled_id, "fine", "new"}


def test_list_all_is_cached_until_the_index_or_the_folder_changes(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    save_model({"w": torch.ones(1)}, {}, {}, ModelMetadata(name="Aa", model_id="a"), folder)
    index = folder / "model_library.json"
    past = index.stat().st_mtime_ns - 60_000_000_000  # a minute ago: older than any file system's timestamp granularity
    os.utime(index, ns=(past, past))
    os.utime(folder, ns=(past, past))
    library = distillgan.ModelLibrary(folder)
    assert [e.name for e in library.list_all()] == ["Aa"]
    data = index.read_bytes()
    with open(index, "r+b") as f:  # the same size, inode and mtime: the same identity
        f.write(data.replace(b'"name": "Aa"', b'"name": "Zz"'))
    os.utime(index, ns=(past, past))
    assert [e.name for e in library.list_all()] == ["Aa"]  # not read again
    assert [e.name for e in distillgan.ModelLibrary(folder).list_all()] == ["Aa"]  # the cache is the process's, per folder
    os.utime(index, ns=(past + 1_000_000_000, past + 1_000_000_000))  # another identity: read again
    assert [e.name for e in library.list_all()] == ["Zz"]
    save_file({"w": torch.ones(1)}, folder / "b.distillgan", metadata=ModelMetadata(name="Bb", model_id="b"))
    assert sorted(e.name for e in library.list_all()) == ["Bb", "Zz"]  # the folder changed


# --- torch only when a tensor must become a torch tensor ---------------------------------------------


def test_export_and_convert_import_torch_only_for_tensors(tmp_path: Path) -> None:
    model = save_file({"a": torch.arange(4.0), "b": torch.ones(2, 3, dtype=torch.bfloat16)}, tmp_path / "m.distillgan")
    legacy = tmp_path / "old.distill"
    torch.save({"format": "distill_model", "model_state_dict": {}}, legacy)
    code = ("import sys\nfrom distillgan.cli import main\n"
            "rc = [main(['export', sys.argv[1], sys.argv[2]]), main(['convert', '--dir', sys.argv[4], sys.argv[1], sys.argv[3]])]\n"
            "print(rc, 'torch' in sys.modules)\n")
    out = tmp_path / "m.safetensors"
    r = subprocess.run([sys.executable, "-c", code, str(model), str(out), str(legacy), str(tmp_path / "models")], check=False,
                       capture_output=True, text=True, timeout=120)
    assert r.stdout.split("\n")[-2] == "[0, 1] False", (r.stdout, r.stderr)  # the archive skipped, the legacy model refused
    assert "skipped" in r.stdout and "[legacy-distill-v1]" in r.stderr
    from safetensors.torch import load_file

    back = load_file(out)
    assert torch.equal(back["a"], torch.arange(4.0)) and torch.equal(back["b"], torch.ones(2, 3, dtype=torch.bfloat16))


# --- numpy, bytes and file objects ----------------------------------------------------------------


def test_numpy_arrays_without_torch(tmp_path: Path) -> None:
    import numpy as np

    sd = {"f": torch.arange(6.0).reshape(2, 3), "i": torch.tensor([1, -2], dtype=torch.int16), "b": torch.tensor([True, False])}
    sd["tied"] = sd["f"]
    path = save_file(sd, tmp_path / "m.distillgan")
    code = ("import sys, json\nfrom distillgan import load_file, safe_open\n"
            "d = load_file(sys.argv[1], framework='np')\n"
            "with safe_open(sys.argv[1], framework='numpy') as f:\n"
            "    part = f.get_slice('f')[:, 1].tolist(); keys = f.keys()\n"
            "print(json.dumps({k: [str(v.dtype), v.tolist()] for k, v in d.items()}), part, keys, 'torch' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code, str(path)], check=False, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    arrays, rest = r.stdout.split("} ", 1)
    assert json.loads(arrays + "}") == {"f": ["float32", [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]], "i": ["int16", [1, -2]],
                                        "b": ["bool", [True, False]], "tied": ["float32", [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]]}
    assert rest.strip().endswith("False") and "[1.0, 4.0]" in rest, rest  # torch never imported
    got = distillgan.load_file(path, framework="np")
    assert isinstance(got["f"], np.ndarray) and np.array_equal(got["f"], sd["f"].numpy())
    bf16 = save_file({"h": torch.ones(2, dtype=torch.bfloat16)}, tmp_path / "h.distillgan")
    with pytest.raises(DistillganError) as e:
        distillgan.load_file(bf16, framework="np")
    assert e.value.code == "invalid-input" and "BF16" in str(e.value)
    with pytest.raises(DistillganError) as e:
        distillgan.safe_open(path, framework="jax")
    assert e.value.code == "invalid-input"


def test_bytes_and_binary_file_objects_are_accepted(tmp_path: Path) -> None:
    import io

    sd = {"w": torch.arange(4.0), "v": torch.ones(2, dtype=torch.int64)}
    path = save_file(sd, tmp_path / "m.distillgan", metadata=ModelMetadata(name="mem"))
    data = path.read_bytes()
    makers = [lambda: data, lambda: bytearray(data), lambda: memoryview(data), lambda: io.BytesIO(data)]
    for make in makers:
        loaded = distillgan.load_model(make())
        assert loaded.metadata.name == "mem" and torch.equal(loaded.state_dict["w"], sd["w"])
        assert torch.equal(distillgan.load_file(make())["v"], sd["v"])
        with distillgan.safe_open(make()) as f:
            assert f.keys() == ["w", "v"] and torch.equal(f.get_tensor("w"), sd["w"])
        assert distillgan.inspect(make())["manifest"]["metadata"]["name"] == "mem"
        assert distillgan.verify(make(), sha256=hashlib.sha256(data).hexdigest())["sha256"] == hashlib.sha256(data).hexdigest()
    with open(path, "rb") as f:  # a real binary file object
        assert torch.equal(distillgan.load_model(f).state_dict["w"], sd["w"])
    mutable = bytearray(data)
    loaded = distillgan.load_model(mutable)
    mutable[:] = bytes(len(mutable))  # the caller's buffer changes afterwards: what was loaded does not
    assert torch.equal(loaded.state_dict["w"], sd["w"])
    loaded.state_dict["w"].add_(1)  # tensors are writable, as from a mapped file (copy-on-write)
    broken = bytearray(data)
    broken[-10] ^= 0xFF
    with pytest.raises(DistillganError):
        distillgan.inspect(bytes(broken))
    with pytest.raises(DistillganError) as e:
        distillgan.inspect(io.StringIO("text"))
    assert e.value.code == "invalid-input" and "binary" in str(e.value)


# --- converting -----------------------------------------------------------------------------------


def test_convert_in_out_writes_out_and_nothing_else(tmp_path: Path) -> None:
    torch.save({"model_state_dict": {"w": torch.arange(3.0)}, "epoch": 4}, tmp_path / "model.pt")
    r = run("convert", "model.pt", "out.distillgan", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "out.distillgan"]  # no ./models, no index
    loaded = distillgan.load_model(tmp_path / "out.distillgan")
    assert torch.equal(loaded.state_dict["w"], torch.arange(3.0)) and loaded.metadata.name == "model"
    assert run("convert", "model.pt", "-o", "again.distillgan", "--name", "Named", cwd=tmp_path).returncode == 0
    assert distillgan.load_model(tmp_path / "again.distillgan").metadata.name == "Named"
    r = run("convert", "model.pt", "-o", "out.distillgan", cwd=tmp_path)
    assert r.returncode == 1 and "[file-exists]" in r.stderr
    assert run("convert", "model.pt", "-o", "out.distillgan", "--force", cwd=tmp_path).returncode == 0


def test_convert_folder_migrates_the_apps_folder_and_the_load_error_says_how(tmp_path: Path) -> None:
    import appshapes as app

    folder = tmp_path / "models"
    files = [app.app_save_model(app.seed_distillgan_dict(name=n, seed=i), folder) for i, n in enumerate(["One", "Two"])]
    ours = save_model({"w": torch.ones(1)}, {}, {}, ModelMetadata(name="Ours", model_id="ours"), folder)
    with pytest.raises(distillgan.LegacyFormatError) as e:
        distillgan.load_model(files[0])
    assert "distillgan.convert_folder(folder)" in str(e.value)
    calls: list[tuple[int, int]] = []
    report = distillgan.convert_folder(folder, progress=lambda done, total: calls.append((done, total)))
    assert sorted(c.path.name for c in report.converted) == sorted(f.name for f in files) and report.ok
    assert report.skipped == [ours.name] and calls == [(1, 3), (2, 3), (3, 3)]
    for f in files:
        assert distillgan.load_model(f).metadata.name in ("One", "Two")
        assert (folder / (f.name + ".pickle-backup")).exists()
    entries = distillgan.ModelLibrary(folder).list_all()
    assert len(entries) == 3 and not any(e.problem for e in entries)
    again = distillgan.convert_folder(folder)
    assert again.converted == [] and len(again.skipped) == 3


def test_deleting_a_not_yet_converted_app_model_needs_no_conversion(tmp_path: Path) -> None:
    import appshapes as app

    folder = tmp_path / "models"
    keep = app.app_save_model(app.seed_distillgan_dict(name="Keep", seed=0), folder)
    gone = app.app_save_model(app.seed_distillgan_dict(name="Gone", seed=1), folder)
    ids = {e.file_path: e.model_id for e in distillgan.ModelLibrary(folder).list_all()}
    assert distillgan.delete_model(ids[gone.name], folder)
    assert not gone.exists() and keep.exists()
    assert [e.model_id for e in distillgan.ModelLibrary(folder).list_all()] == [ids[keep.name]]
    doc = json.loads((folder / "model_library.json").read_text())
    doc["models"]["decoy"] = dict(doc["models"][ids[keep.name]], model_id="decoy")  # names keep's file under another id
    (folder / "model_library.json").write_text(json.dumps(doc))
    assert not distillgan.delete_model("decoy", folder) and keep.exists()  # keep's pickled metadata says whose file it is
    assert [e.model_id for e in distillgan.ModelLibrary(folder).list_all()] == [ids[keep.name]]
    missing = save_model({"w": torch.ones(1)}, {}, {}, ModelMetadata(name="Missing", model_id="missing"), folder)
    missing.unlink()
    assert distillgan.delete_model("missing", folder)  # its file is gone: the entry goes
    assert "missing" not in json.loads((folder / "model_library.json").read_text())["models"]


def test_save_file_gives_each_file_a_fresh_model_id(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    a = save_file({"w": torch.ones(2)}, folder / "a.distillgan")
    b = save_file({"w": torch.ones(2)}, folder / "b.distillgan", metadata=ModelMetadata(name="b"))
    ids = [distillgan.load_model(p).metadata.model_id for p in (a, b)]
    assert all(ids) and ids[0] != ids[1]
    assert sorted(e.model_id for e in distillgan.ModelLibrary(folder).list_all()) == sorted(ids)
    c = save_file({"w": torch.ones(2)}, folder / "c.distillgan", metadata={"model_id": "mine"})
    assert distillgan.load_model(c).metadata.model_id == "mine"


def test_user_metadata_is_a_str_map_kept_apart_and_shown_by_inspect(tmp_path: Path) -> None:
    with pytest.raises(DistillganError) as e:  # an unknown ModelMetadata field says where free-form keys go
        save_file({"w": torch.ones(1)}, tmp_path / "x.distillgan", metadata={"format": "pt"})
    assert e.value.code == "invalid-input" and "user_metadata" in str(e.value)
    path = save_file({"w": torch.ones(1)}, tmp_path / "m.distillgan", metadata=ModelMetadata(name="m"),
                     user_metadata={"format": "pt", "licence": "CC-BY-4.0"})
    info = distillgan.inspect(path)
    assert info["user_metadata"] == {"format": "pt", "licence": "CC-BY-4.0"}
    assert "format" not in info["manifest"]["metadata"]
    with distillgan.safe_open(path) as f:
        assert f.user_metadata() == {"format": "pt", "licence": "CC-BY-4.0"} and f.metadata()["name"] == "m"
    import zipfile

    from safetensors import safe_open as st_open

    with zipfile.ZipFile(path) as z:
        (tmp_path / "model.safetensors").write_bytes(z.read("model.safetensors"))
    with st_open(str(tmp_path / "model.safetensors"), framework="pt") as f:  # safetensors' own reader sees it as __metadata__
        assert f.metadata() == {"format": "pt", "licence": "CC-BY-4.0"}
    r = run("inspect", str(path))
    assert "user meta   format=pt, licence=CC-BY-4.0" in r.stdout
    assert distillgan.inspect(save_file({"w": torch.ones(1)}, tmp_path / "n.distillgan"))["user_metadata"] == {}
    for bad in ({"k": 1}, {1: "v"}, ["k"]):
        with pytest.raises(DistillganError) as e:
            save_file({"w": torch.ones(1)}, tmp_path / "bad.distillgan", user_metadata=bad)
        assert e.value.code == "invalid-input"


# --- into a module --------------------------------------------------------------------------------


class Tied(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(10, 4)
        self.body = torch.nn.Linear(4, 4)
        self.lm_head = torch.nn.Linear(4, 10, bias=False)
        self.lm_head.weight = self.embed.weight


def test_load_into_a_module_keeps_ties_and_says_what_did_not_load(tmp_path: Path) -> None:
    src = Tied()
    path = save_file(src, tmp_path / "tied.distillgan")
    with torch.device("meta"):
        dst = Tied()
    result = distillgan.load_into(dst, path, assign=True)
    assert (result.missing_keys, result.unexpected_keys) == ([], [])
    assert dst.lm_head.weight is dst.embed.weight and len(list(dst.parameters())) == 3  # embed (= lm_head), body.weight, body.bias
    assert torch.equal(dst.body.weight, src.body.weight) and not dst.training
    dst.half()
    assert dst.lm_head.weight is dst.embed.weight and dst.lm_head.weight.dtype == torch.float16
    plain = Tied()
    missing, unexpected = distillgan.load_into(plain, path)  # copied into the module's own tensors
    assert (missing, unexpected) == ([], []) and torch.equal(plain.embed.weight, src.embed.weight)
    assert plain.lm_head.weight is plain.embed.weight
    other = torch.nn.Sequential(torch.nn.Linear(4, 4))
    with pytest.raises(DistillganError) as e:
        distillgan.load_into(other, path)
    assert e.value.code == "invalid-input" and "Missing key" in str(e.value)
    missing, unexpected = distillgan.load_into(other, path, strict=False)
    assert missing == ["0.weight", "0.bias"] and "body.weight" in unexpected


def test_a_builder_on_meta_with_assign_keeps_ties(tmp_path: Path) -> None:
    path = save_file(Tied(), tmp_path / "tied.distillgan")

    def build(_: object) -> Tied:
        with torch.device("meta"):
            return Tied()

    loaded = distillgan.load_model(path, model_builder=build, assign=True)
    assert loaded.model.lm_head.weight is loaded.model.embed.weight and len(list(loaded.model.parameters())) == 3


def test_missing_and_unexpected_keys_of_a_lenient_load_are_on_the_loaded_model(tmp_path: Path) -> None:
    path = save_file({"a.weight": torch.ones(2, 2), "extra.bias": torch.ones(2)}, tmp_path / "m.distillgan")

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Linear(2, 2)

    loaded = distillgan.load_model(path, model_builder=lambda _: Net(), strict=False)
    assert loaded.missing_keys == ["a.bias"] and loaded.unexpected_keys == ["extra.bias"]
    plain = distillgan.load_model(path)
    assert plain.missing_keys == [] and plain.unexpected_keys == []


# --- the app's maintainer ---------------------------------------------------------------------------


def test_save_model_from_checkpoint_drops_training_state_unless_asked(tmp_path: Path) -> None:
    import appshapes as app

    ckpt = tmp_path / "checkpoint_epoch0003.pt"
    torch.save(app.training_checkpoint(), ckpt)
    lean = distillgan.save_model_from_checkpoint(ckpt, ModelMetadata(name="lean"), tmp_path / "models")
    full = distillgan.save_model_from_checkpoint(ckpt, ModelMetadata(name="full"), tmp_path / "models", keep_training_state=True)
    lean_extra, full_extra = distillgan.load_model(lean).extra or {}, distillgan.load_model(full).extra or {}
    for key in ("optimizer_state_dict", "scheduler_state_dict", "metrics_history"):
        assert key in full_extra and key not in lean_extra
    assert lean.stat().st_size < full.stat().st_size
    assert distillgan.load_model(lean).metadata.training_epochs == distillgan.load_model(full).metadata.training_epochs


def test_the_apps_file_names_come_from_a_public_function(tmp_path: Path) -> None:
    import appshapes as app

    for name in ("My Piano!", "con", "", "Ünïcode  name", "x" * 300):
        assert distillgan.sanitize_filename(name) == (app.sanitize_filename(name) if name != "con" else "con_model")
    path = save_model({"w": torch.ones(1)}, {}, {}, ModelMetadata(name="My Piano!"), tmp_path)
    assert path.name == distillgan.sanitize_filename("My Piano!") + ".distillgan"
    from distillgan import persistence

    assert not hasattr(persistence, "_sanitize_filename")  # one implementation, the public one


def test_load_model_copies_on_windows_and_maps_elsewhere_by_default(tmp_path: Path) -> None:
    import inspect as pyinspect

    path = save_file({"w": torch.arange(4.0)}, tmp_path / "m.distillgan")
    assert pyinspect.signature(distillgan.load_model).parameters["copy"].default is None
    assert pyinspect.signature(distillgan.load_file).parameters["copy"].default is None
    doc = distillgan.load_model.__doc__ or ""
    assert "Windows" in doc and "copy=None" in doc
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    coming = readme.split("## Coming from", 1)[1].split("\n## ", 1)[0]
    assert "Windows" in coming and "copy=True" in coming
    # the default here (not Windows) maps; on Windows it copies so that the file can be deleted or replaced
    loaded = distillgan.load_model(path)
    if os.name == "nt":
        path.unlink()  # nothing keeps the file in use
    else:
        loaded.state_dict["w"].add_(1)  # a copy-on-write view of the mapping: the file is unchanged
        assert torch.equal(distillgan.load_model(path, copy=True).state_dict["w"], torch.arange(4.0))


def test_save_model_keeps_user_metadata_through_load_and_vocoder_updates(tmp_path: Path) -> None:
    path = save_model({"w": torch.ones(1)}, {}, {}, ModelMetadata(name="u"), tmp_path, user_metadata={"source": "field"})
    assert distillgan.load_model(path).user_metadata == {"source": "field"}
    distillgan.update_vocoder(path, {"type": "hifigan", "generator_state_dict": {"k": torch.ones(2)}})
    assert distillgan.load_model(path).user_metadata == {"source": "field"}
    assert distillgan.inspect(path)["user_metadata"] == {"source": "field"}
    with pytest.raises(DistillganError) as e:
        save_model({"w": torch.ones(1)}, {}, {}, {"name": "x", "licence": "MIT"}, tmp_path)
    assert "user_metadata" in str(e.value)
