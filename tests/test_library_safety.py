"""The models folder under attack and under failure: writes outside it, a lying or hand-edited index,
read-only folders, temporary files, and the cost of a save as the folder grows.

Real symlinks, FIFOs, devices, directories, killed and blocked processes, a read-only folder
(entered by a child that drops root where needed), a file-size limit: no mocks. Operation counts,
not clocks, for the cost of a save.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import appshapes as app
import pytest
import torch

import distillgan
from distillgan import LibraryError, ModelLibrary, ModelMetadata, catalog, delete_model, save_model
from distillgan.catalog import INDEX_NAME, LOCK_NAME, MAX_INDEX_BYTES

TEMP_SUFFIX = ".distillgan-tmp"


def _save(folder: Path, name: str, *, model_id: str = "", size: int = 16) -> Path:
    sd = {"w": torch.arange(size, dtype=torch.float32)}
    return save_model(sd, {"n_mels": 32}, {"epochs": 1}, ModelMetadata(name=name, model_id=model_id), folder)


def _ids(folder: Path) -> set[str]:
    return {e.model_id for e in ModelLibrary(folder).list_all()}


def _raw_ids(folder: Path) -> dict[str, str]:
    return {mid: e["file_path"] for mid, e in json.loads((folder / INDEX_NAME).read_text())["models"].items()}


def _temporaries(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.endswith(TEMP_SUFFIX))


def _symlink(target: Path | str, link: Path) -> None:
    try:
        os.symlink(target, link)
    except (OSError, NotImplementedError) as e:  # Windows without the privilege
        pytest.skip(f"symbolic links unavailable: {e}")


def _app_count(folder: Path, caplog: pytest.LogCaptureFixture) -> int:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="appshapes"):
        n = app.AppModelLibrary(folder).count()
    assert "Skipping" not in caplog.text and "Failed" not in caplog.text, caplog.text
    return n


# --- nothing outside the folder is opened for writing ---------------------------------------------


@pytest.mark.parametrize("target", ["outside-file", "dangling"])
def test_planted_lock_link_touches_nothing_outside(tmp_path: Path, target: str) -> None:
    folder = tmp_path / "models"
    _save(folder, "A", model_id="a")
    (folder / LOCK_NAME).unlink()
    victim = tmp_path / "victim.txt"
    if target == "outside-file":
        victim.write_text("precious")
        os.chmod(victim, 0o600)
    before = victim.stat() if victim.exists() else None
    _symlink(victim, folder / LOCK_NAME)

    for attempt in (lambda: _save(folder, "B"), lambda: ModelLibrary(folder).repair_index(), lambda: delete_model("a", folder)):
        with pytest.raises(LibraryError) as e:
            attempt()
        assert e.value.code == "not-regular-file" and "symbolic link" in str(e.value)
    assert _ids(folder) == {"a"}  # reads still work
    if before is None:
        assert not victim.exists() and not os.path.lexists(tmp_path / "victim.txt")
    else:
        after = victim.stat()
        assert victim.read_text() == "precious" and (after.st_mode, after.st_mtime_ns, after.st_size) == (
            before.st_mode, before.st_mtime_ns, before.st_size)
    assert os.path.islink(folder / LOCK_NAME) and _temporaries(folder) == []


def test_index_link_is_never_followed(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    _save(folder, "A", model_id="a")
    outside = tmp_path / "outside.json"
    decoy = {"version": 2, "models": {"x": {"model_id": "x", "name": "Decoy", "file_path": "a.distillgan", "vocoder": None}}}
    outside.write_text(json.dumps(decoy))
    (folder / INDEX_NAME).unlink()
    _symlink(outside, folder / INDEX_NAME)
    lib = ModelLibrary(folder)
    assert [e.model_id for e in lib.list_all()] == ["a"]  # the link's target is not read
    assert lib.last_repair is not None and "link" in lib.last_repair.reason
    _save(folder, "B", model_id="b")
    assert not os.path.islink(folder / INDEX_NAME) and set(_raw_ids(folder)) == {"a", "b"}
    assert json.loads(outside.read_text()) == decoy


def test_temporary_files_never_follow_a_planted_link(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Creation is O_CREAT|O_EXCL|O_NOFOLLOW: a link at the name, dangling or not, is refused and another name taken."""
    from distillgan.locks import create_temporary, discard_temporary

    folder = tmp_path / "models"
    folder.mkdir()
    outside = tmp_path / "created-outside"
    _symlink(outside, tmp_path / "probe")  # skips where links are unavailable
    real_open = os.open
    planted: list[str] = []

    def plant_then_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if str(path).endswith(TEMP_SUFFIX) and not planted:  # an attacker who guessed the random name, just in time
            planted.append(str(path))
            os.symlink(outside, path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", plant_then_open)
    _fd, path = create_temporary(folder, "x")
    monkeypatch.undo()
    assert planted and path != planted[0] and os.path.islink(planted[0]) and not outside.exists()
    discard_temporary(path)


# --- the index is a hint; the model file's manifest is the truth ---------------------------------


def _with_decoy(folder: Path, real: Path, *, keep_real_entry: bool) -> None:
    raw = json.loads((folder / INDEX_NAME).read_text())
    decoy = dict(raw["models"]["a"], model_id="junk", name="Old junk, safe to delete", file_path=real.name)
    models = raw["models"] if keep_real_entry else {k: v for k, v in raw["models"].items() if k != "a"}
    models["junk"] = decoy
    (folder / INDEX_NAME).write_text(json.dumps({"version": 2, "models": models}))


def test_decoy_entry_beside_the_real_one_is_dropped(tmp_path: Path) -> None:
    real = _save(tmp_path, "Precious", model_id="a")
    _save(tmp_path, "B", model_id="b")
    _with_decoy(tmp_path, real, keep_real_entry=True)
    lib = ModelLibrary(tmp_path)
    assert {e.model_id for e in lib.list_all()} == {"a", "b"}  # two entries name one file: its manifest decides
    assert lib.last_repair is not None and lib.last_repair.removed == ["junk"]
    assert delete_model("junk", tmp_path) is False and real.exists()


def test_decoy_entry_alone_never_deletes_the_real_model(tmp_path: Path) -> None:
    real = _save(tmp_path, "Precious", model_id="a")
    _save(tmp_path, "B", model_id="b")
    _with_decoy(tmp_path, real, keep_real_entry=False)
    assert [e.name for e in ModelLibrary(tmp_path).search("junk")] == ["Old junk, safe to delete"]
    with pytest.raises(LibraryError) as e:
        delete_model("junk", tmp_path)
    assert e.value.code == "index-mismatch" and "'a'" in str(e.value)
    distillgan.verify(real)
    report = ModelLibrary(tmp_path).repair_index()
    assert report.removed == ["junk"] and report.added == ["a"] and _raw_ids(tmp_path) == {"b": "b.distillgan", "a": real.name}
    assert delete_model("a", tmp_path) and not real.exists()


def test_decoy_entry_does_not_take_the_id_of_a_new_save(tmp_path: Path) -> None:
    """An entry naming another model's file under id "c" must not stop a save of model "c" (found by the property test below)."""
    real = _save(tmp_path, "Precious", model_id="a")
    raw = json.loads((tmp_path / INDEX_NAME).read_text())
    raw["models"]["c"] = dict(raw["models"]["a"], model_id="c", name="Decoy")
    (tmp_path / INDEX_NAME).write_text(json.dumps(raw))
    new = _save(tmp_path, "New", model_id="c")
    assert _raw_ids(tmp_path) == {"a": real.name, "c": new.name}
    with pytest.raises(LibraryError) as e:  # a real owner of the id still takes it
        _save(tmp_path, "Again", model_id="c")
    assert e.value.code == "duplicate-model-id"
    distillgan.verify(real)


def _imposter(tmp_path: Path, folder: Path, model_id: str, name: str) -> Path:
    elsewhere = _save(tmp_path / "elsewhere", "Imposter", model_id=model_id, size=99)
    dropped = folder / name
    shutil.copyfile(elsewhere, dropped)
    return dropped


def test_dropped_file_reusing_an_id_does_not_take_it_over(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    real = _save(folder, "Real", model_id="a")
    dropped = _imposter(tmp_path, folder, "a", "aaa.distillgan")  # sorts first, and is newer
    lib = ModelLibrary(folder)
    assert lib.get("a").file_path == real.name  # type: ignore[union-attr]
    assert lib.last_repair is not None and lib.last_repair.invalid == {dropped.name: "duplicate-model-id"}
    report = lib.repair_index()
    assert report.invalid == {dropped.name: "duplicate-model-id"} and _raw_ids(folder) == {"a": real.name}
    assert delete_model("a", folder) and not real.exists() and dropped.exists()  # it was never the indexed one


def test_without_a_usable_index_the_file_in_place_longest_keeps_the_id(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    real = _save(folder, "Real", model_id="a")
    time.sleep(0.02)  # st_ctime has a coarse clock
    dropped = _imposter(tmp_path, folder, "a", "aaa.distillgan")
    (folder / INDEX_NAME).write_text("{ garbage")
    report = ModelLibrary(folder).repair_index()
    assert "unusable" in report.reason and report.invalid == {dropped.name: "duplicate-model-id"}
    assert _raw_ids(folder) == {"a": real.name}


# --- a hand-edited index ----------------------------------------------------------------------


def _app_index_text(folder: Path) -> str:
    return (folder / INDEX_NAME).read_text()


HOSTILE = {
    "nan-in-an-int": lambda t: t.replace('"file_size_bytes": ', '"file_size_bytes": NaN, "x": ', 1),
    "lone-surrogate": lambda t: t.replace('"name": "One"', '"name": "\\ud800"', 1),
    "400-digit-int": lambda t: t.replace('"training_epochs": 0', '"training_epochs": 1' + "0" * 400, 1),
    "400-digit-loss": lambda t: t.replace('"final_val_loss": 0.0', '"final_val_loss": 1' + "0" * 400, 1),
    "1e400-size": lambda t: t.replace('"file_size_bytes": ', '"file_size_bytes": 1e400, "x": ', 1),
    "5000-digit-int": lambda t: t.replace('"training_epochs": 0', '"training_epochs": 1' + "0" * 5000, 1),
    "deep-nesting": lambda t: t.replace('"tags": []', '"tags": ' + "[" * 100_000 + "]" * 100_000, 1),
    "duplicate-key": lambda t: t.replace('"version": 2,', '"version": 2, "version": 2,', 1),
    "true-as-version": lambda t: t.replace('"version": 2', '"version": true', 1),
    "not-utf8": lambda t: t.replace('"One"', '"\xff"', 1),
}


@pytest.mark.parametrize("edit", list(HOSTILE), ids=list(HOSTILE))
def test_hand_edited_index_is_rebuilt_and_saves_keep_working(tmp_path: Path, edit: str, caplog: pytest.LogCaptureFixture) -> None:
    _save(tmp_path, "One", model_id="one")
    _save(tmp_path, "Two", model_id="two")
    text = HOSTILE[edit](_app_index_text(tmp_path))
    assert text != _app_index_text(tmp_path)
    (tmp_path / INDEX_NAME).write_bytes(text.encode("utf-8", "surrogatepass").replace(b"\xc3\xbf", b"\xff"))
    lib = ModelLibrary(tmp_path)
    assert {e.model_id for e in lib.list_all()} == {"one", "two"}
    assert lib.last_repair is not None and "rebuilt" in lib.last_repair.reason
    assert (tmp_path / INDEX_NAME).read_bytes() == text.encode("utf-8", "surrogatepass").replace(b"\xc3\xbf", b"\xff")  # reads write nothing
    (tmp_path / INDEX_NAME).write_bytes(text.encode("utf-8", "surrogatepass"))
    _save(tmp_path, "Three", model_id="three")  # a save on top of the damage: no error after publishing
    assert "three" in _raw_ids(tmp_path)  # appended to what was there, or written into a rebuilt index
    assert {e.model_id for e in ModelLibrary(tmp_path).list_all()} == {"one", "two", "three"}  # the next reader repairs
    assert set(_raw_ids(tmp_path)) == {"one", "two", "three"} and _app_count(tmp_path, caplog) == 3


def test_oversized_index_is_not_read(tmp_path: Path) -> None:
    _save(tmp_path, "One", model_id="one")
    with open(tmp_path / INDEX_NAME, "r+b") as f:  # sparse: the size check must come before any read
        f.truncate(MAX_INDEX_BYTES + 1)
    lib = ModelLibrary(tmp_path)
    assert [e.model_id for e in lib.list_all()] == ["one"] and "limit" in lib.last_repair.reason  # type: ignore[union-attr]
    assert (tmp_path / INDEX_NAME).stat().st_size == MAX_INDEX_BYTES + 1  # a read writes nothing
    lib.remove("no-such-id")  # a change rewrites it
    assert (tmp_path / INDEX_NAME).stat().st_size < 4096


def test_dev_zero_as_the_index(tmp_path: Path) -> None:
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    _save(tmp_path, "One", model_id="one")
    (tmp_path / INDEX_NAME).unlink()
    _symlink("/dev/zero", tmp_path / INDEX_NAME)
    assert _ids(tmp_path) == {"one"} and os.path.islink(tmp_path / INDEX_NAME)  # a read writes nothing
    ModelLibrary(tmp_path).remove("no-such-id")
    assert not os.path.islink(tmp_path / INDEX_NAME)  # a change replaces it by a regular file, never writes through it


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
def test_fifo_as_the_index_never_blocks(tmp_path: Path) -> None:
    _save(tmp_path, "One", model_id="one")
    (tmp_path / INDEX_NAME).unlink()
    os.mkfifo(tmp_path / INDEX_NAME)
    code = "import sys; from distillgan import ModelLibrary; print(sorted(e.model_id for e in ModelLibrary(sys.argv[1]).list_all()))"
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "['one']", out.stderr
    assert stat.S_ISFIFO(os.lstat(tmp_path / INDEX_NAME).st_mode)  # a read writes nothing
    ModelLibrary(tmp_path).remove("no-such-id")  # a change replaces it without blocking
    assert stat.S_ISREG(os.lstat(tmp_path / INDEX_NAME).st_mode)


# --- a published model is never reported as failed -------------------------------------------


def test_save_returns_and_warns_when_the_index_is_a_directory(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _save(tmp_path, "One", model_id="one")
    (tmp_path / INDEX_NAME).unlink()
    (tmp_path / INDEX_NAME).mkdir()
    (tmp_path / INDEX_NAME / "x").write_text("so the rename cannot replace it")
    with caplog.at_level(logging.WARNING, logger="distillgan"):
        path = _save(tmp_path, "Two", model_id="two")
    distillgan.verify(path)
    assert "index" in caplog.text and path.name in caplog.text
    assert _ids(tmp_path) == {"one", "two"}  # rebuilt in memory
    with pytest.raises(LibraryError) as e:
        ModelLibrary(tmp_path).repair_index()
    assert e.value.code == "folder-unwritable"
    assert _temporaries(tmp_path) == []
    shutil.rmtree(tmp_path / INDEX_NAME)
    assert _ids(tmp_path) == {"one", "two"} and not (tmp_path / INDEX_NAME).exists()  # a read writes nothing
    ModelLibrary(tmp_path).repair_index()
    assert set(_raw_ids(tmp_path)) == {"one", "two"}


FSIZE_CHILD = textwrap.dedent(
    """
    import resource, signal, sys, torch
    from distillgan import ModelMetadata, save_model
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), int(sys.argv[2])))
    path = save_model({"w": torch.zeros(4)}, {}, {}, ModelMetadata(name="late", model_id="late"), sys.argv[1])
    print(path.name)
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="RLIMIT_FSIZE is POSIX-only")
def test_save_returns_when_the_disk_fills_before_the_index(tmp_path: Path) -> None:
    for i in range(30):
        _save(tmp_path, f"Model {i}", model_id=f"m{i:02}")
    index_size = (tmp_path / INDEX_NAME).stat().st_size
    model_size = (tmp_path / "model_0.distillgan").stat().st_size
    assert model_size * 2 < index_size
    out = subprocess.run([sys.executable, "-c", FSIZE_CHILD, str(tmp_path), str(model_size * 2)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert "could not be updated" in out.stderr and "File too large" in out.stderr
    name = out.stdout.strip()
    distillgan.verify(tmp_path / name)
    assert "late" not in _raw_ids(tmp_path) and _temporaries(tmp_path) == []
    assert ModelLibrary(tmp_path).get("late").file_path == name  # type: ignore[union-attr]
    assert "late" not in _raw_ids(tmp_path)  # a read reconciles in memory only
    ModelLibrary(tmp_path).remove("no-such-id")
    assert "late" in _raw_ids(tmp_path)  # the next change writes it, under the lock


# --- read-only folders --------------------------------------------------------------------------

READ_ONLY_CHILD = textwrap.dedent(
    """
    import json, os, sys
    import torch
    import distillgan, distillgan.archive
    from distillgan import DistillganError, ModelLibrary, ModelMetadata, delete_model, save_model
    folder = sys.argv[1]
    if os.getuid() == 0:  # everything is imported: drop root so that permissions apply
        try:
            os.setgid(65534)
            os.setuid(65534)
        except OSError as e:
            print(json.dumps({"skip": str(e)}))
            sys.exit(0)
    lib = ModelLibrary(folder)
    out = {
        "list": [e.model_id for e in lib.list_all()],
        "get": lib.get("orphan").file_path,
        "search": [e.model_id for e in lib.search("kept")],
        "count": lib.count(),
        "report": [lib.last_repair.added, lib.last_repair.removed, lib.last_repair.flagged],
    }
    for name, op in [("save", lambda: save_model({"w": torch.zeros(2)}, {}, {}, ModelMetadata(name="x"), folder)),
                     ("delete", lambda: delete_model("kept", folder)), ("repair", lambda: lib.repair_index())]:
        try:
            op()
            out[name] = "done"
        except DistillganError as e:
            out[name] = e.code
    print(json.dumps(out))
    """
)


@pytest.mark.skipif(os.name == "nt", reason="chmod does not make a folder read-only on Windows")
@pytest.mark.parametrize("lock_file", ["absent", "present"])
def test_read_only_folder_can_be_listed(lock_file: str) -> None:
    root = Path(tempfile.mkdtemp(prefix="distillgan-ro-"))  # not under pytest's 0700 tree: the child may drop root
    try:
        os.chmod(root, 0o755)
        folder = root / "models"
        _save(folder, "Kept", model_id="kept")
        _save(folder, "Gone", model_id="gone").unlink()
        index = (folder / INDEX_NAME).read_bytes()
        _save(folder, "Orphan", model_id="orphan")
        (folder / INDEX_NAME).write_bytes(index)  # the index is out of date: one entry too many, one too few
        if lock_file == "absent":
            (folder / LOCK_NAME).unlink()
        before = {n: (folder / n).read_bytes() for n in os.listdir(folder)}
        os.chmod(folder, 0o555)
        try:
            out = subprocess.run([sys.executable, "-c", READ_ONLY_CHILD, str(folder)], capture_output=True, text=True,
                                 timeout=120, cwd=root, check=False)
        finally:
            os.chmod(folder, 0o755)
        assert out.returncode == 0, out.stderr
        result = json.loads(out.stdout)
        if "skip" in result:
            pytest.skip(f"cannot drop root to test permissions: {result['skip']}")
        assert sorted(result["list"]) == ["gone", "kept", "orphan"] and result["get"] == "orphan.distillgan"
        assert result["search"] == ["kept"] and result["count"] == 3
        assert result["report"] == [["orphan"], [], {"gone": "missing-file"}]  # kept and flagged, never dropped by a read
        assert result["save"] == result["delete"] == result["repair"] == "permission-denied"  # errors.py's code for EACCES
        assert {n: (folder / n).read_bytes() for n in os.listdir(folder)} == before  # nothing created, nothing rewritten
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- temporary files, recognised by liveness -------------------------------------------------

BLOCKED_SAVE = textwrap.dedent(
    """
    import sys, time, torch
    from distillgan import ModelMetadata, save_model
    seen = []
    def progress(done, total):
        if done and not seen:  # part of the data is written: say so, then wait, like a long save
            seen.append(done)
            print("writing", flush=True)
            sys.stdin.readline()
    path = save_model({"w": torch.ones(4 << 20)}, {}, {}, ModelMetadata(name="big", model_id="big"), sys.argv[1],
                      progress=progress)
    print(path.name, flush=True)
    """
)


def _blocked_save(folder: Path) -> subprocess.Popen[str]:
    child = subprocess.Popen([sys.executable, "-c", BLOCKED_SAVE, str(folder)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline() == "writing\n", child.stderr.read()  # type: ignore[union-attr]
    return child


def test_live_writers_temporary_file_is_left_alone(tmp_path: Path) -> None:
    _save(tmp_path, "Other", model_id="other")
    child = _blocked_save(tmp_path)
    try:
        (tmp_name,) = _temporaries(tmp_path)
        lib = ModelLibrary(tmp_path)
        assert lib.list_all() and lib.last_repair is None  # a live save is not reported
        report = lib.repair_index()
        assert report.cleaned == [] and _temporaries(tmp_path) == [tmp_name]
        _out, err = child.communicate("go\n", timeout=120)
    finally:
        child.kill()
    assert child.returncode == 0, err
    assert _ids(tmp_path) == {"other", "big"} and _temporaries(tmp_path) == []


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="SIGKILL is POSIX-only")
def test_killed_saves_temporary_file_is_reported_then_removed_whatever_its_age(tmp_path: Path) -> None:
    _save(tmp_path, "Other", model_id="other")
    own = {".notes.tmp": b"mine", "notes.tmp": b"mine too", ".other.distillgan.123.tmp": b"an old-style name",
           ".x.1.0123456789ab.distillgan-tmp.bak": b"not quite ours"}
    for name, data in own.items():
        (tmp_path / name).write_bytes(data)
        os.utime(tmp_path / name, (time.time() - 3 * 86400,) * 2)
    child = _blocked_save(tmp_path)
    child.kill()
    child.communicate(timeout=60)
    (tmp_name,) = _temporaries(tmp_path)
    size = (tmp_path / tmp_name).stat().st_size
    assert size > 0

    lib = ModelLibrary(tmp_path)
    assert [e.model_id for e in lib.list_all()] == ["other"]
    assert lib.last_repair is not None and lib.last_repair.abandoned == {tmp_name: size}
    assert _temporaries(tmp_path) == [tmp_name]  # reported, not deleted, by a read
    report = lib.repair_index()
    assert report.cleaned == [tmp_name] and _temporaries(tmp_path) == []  # seconds old, removed: its writer is gone
    assert all((tmp_path / name).read_bytes() == data for name, data in own.items())


# --- the cost of a save does not grow with the folder (operations counted) ---------------------------


def test_a_save_parses_lists_and_encodes_nothing_it_already_knows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(40):
        _save(tmp_path, "Same name", model_id=f"m{i}")
    counts = dict.fromkeys(("parse", "light", "listdir", "probe", "line", "lexists"), 0)

    def counting(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(catalog, "parse_index", counting("parse", catalog.parse_index))
    monkeypatch.setattr(catalog, "appendable_ids", counting("light", catalog.appendable_ids))
    monkeypatch.setattr(catalog, "entry_line", counting("line", catalog.entry_line))
    monkeypatch.setattr(ModelLibrary, "_listdir", counting("listdir", ModelLibrary._listdir))
    monkeypatch.setattr(ModelLibrary, "_probe", counting("probe", ModelLibrary._probe))
    monkeypatch.setattr(os.path, "lexists", counting("lexists", os.path.lexists))
    for i in range(10):
        _save(tmp_path, "Same name", model_id=f"n{i}")
    assert counts == {"parse": 0, "light": 0, "listdir": 0, "probe": 0, "line": 10, "lexists": counts["lexists"]}
    assert counts["lexists"] <= 10 * 16  # free-name search: O(log n) per save, not one per same-named model

    catalog._index_cache.clear()  # as a fresh process: the index is parsed once, no entry validated or encoded
    counts.update(dict.fromkeys(counts, 0))
    _save(tmp_path, "Same name", model_id="fresh")
    assert (counts["parse"], counts["light"], counts["line"], counts["listdir"], counts["probe"]) == (0, 1, 1, 0, 0)
    assert len(_raw_ids(tmp_path)) == 51
    data = (tmp_path / INDEX_NAME).read_bytes()  # the appended lines give the very bytes a full encoding gives
    assert data == catalog.encode_index([catalog.entry_line(e) for e in catalog.parse_index(data).entries.values()])


def test_threads_of_one_process_share_the_folder_lock(tmp_path: Path) -> None:
    errors: list[BaseException] = []

    def worker(w: int) -> None:
        try:
            for i in range(4):
                _save(tmp_path, "threaded", model_id=f"t{w}-{i}")
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(_raw_ids(tmp_path)) == 16 and len(set(_raw_ids(tmp_path).values())) == 16


# --- 11 (acceptance): index poisoning, as a property ------------------------------------------------

from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_p_junk = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8) | st.sampled_from(["\ud800", "1" + "0" * 400, "a.distillgan", "../a.distillgan"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
_p_file_names = st.sampled_from(
    ["a.distillgan", "b.distillgan", "../outside.distillgan", "OUTSIDE", "", ".a.distillgan", "missing.distillgan",
     "sub/a.distillgan", "a.distillgan\x00", "A.DISTILLGAN", "model_library.json", ".model_library.lock", "a.distill"]
) | st.text(max_size=12)
_p_ids = st.sampled_from(["a", "b", "junk", "", "../a", "c"]) | st.text(max_size=6)
_P_FIELDS = ["model_id", "name", "description", "file_path", "file_size_bytes", "dataset_name", "training_date", "save_date",
           "training_epochs", "final_train_loss", "final_val_loss", "has_analysis", "n_active_components", "tags", "vocoder"]
_p_mutations = st.lists(st.tuples(st.sampled_from(_P_FIELDS) | st.text(max_size=6), _p_junk | _p_file_names | _p_ids), max_size=4)
_p_poison = st.fixed_dictionaries(
    {
        "keep": st.sets(st.sampled_from(["a", "b"])),  # real entries left in the index
        "damage": st.lists(st.tuples(st.sampled_from(["a", "b"]), _p_mutations), max_size=2),  # real entries edited
        "decoys": st.lists(
            st.tuples(_p_ids, st.sampled_from(["a", "b"]), st.sampled_from(["a.distillgan", "b.distillgan"]) | _p_file_names,
                      st.just([]) | _p_mutations),
            max_size=4,
        ),
        "version": st.sampled_from([2, 2, 2, 1, 3, "2", None, True]),
    }
)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(poison=_p_poison)
def test_a_poisoned_index_never_deletes_a_real_model_or_touches_the_outside(poison: dict[str, Any]) -> None:
    """Whatever the index says, the models' own manifests decide: listing never fails, deleting a decoy
    never removes a real model, a save still lands, a repair restores the truth, and nothing outside
    the folder (a copy of a real model one level up, named to tempt ``../``) is touched."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = root / "models"
        real = {mid: _save(folder, mid, model_id=mid) for mid in ("a", "b")}
        assert {p.name for p in real.values()} == {"a.distillgan", "b.distillgan"}
        outside = root / "outside.distillgan"
        shutil.copyfile(real["a"], outside)
        before = outside.read_bytes()
        clean = json.loads((folder / INDEX_NAME).read_text())["models"]

        models: dict[str, Any] = {mid: dict(clean[mid]) for mid in sorted(poison["keep"])}
        for mid, edits in poison["damage"]:
            entry = models.setdefault(mid, dict(clean[mid]))
            for field, value in edits:
                entry[field] = str(outside) if value == "OUTSIDE" else value
        for decoy_id, like, file_name, edits in poison["decoys"]:
            entry = dict(clean[like], model_id=decoy_id, file_path=str(outside) if file_name == "OUTSIDE" else file_name)
            for field, value in edits:
                entry[field] = value
            models[decoy_id] = entry
        text = json.dumps({"version": poison["version"], "models": models})
        (folder / INDEX_NAME).write_bytes(text.encode("utf-8", "surrogatepass"))

        listed = ModelLibrary(folder).list_all()  # never raises: the index is a hint
        assert all(isinstance(e.model_id, str) for e in listed)
        event(f"listed: {sorted(e.model_id in real for e in listed)}")
        for decoy_id in [d for d in models if d not in real]:
            try:
                event(f"delete of a decoy: {delete_model(decoy_id, folder)}")
            except distillgan.DistillganError as e:
                assert e.code == "index-mismatch", e
                event("delete of a decoy: index-mismatch")
            for p in real.values():
                distillgan.verify(p)  # still there, still whole
        saved = _save(folder, "c", model_id="c")
        ModelLibrary(folder).repair_index()
        assert _raw_ids(folder) == {"a": "a.distillgan", "b": "b.distillgan", "c": saved.name}
        assert outside.read_bytes() == before and sorted(os.listdir(root)) == ["models", "outside.distillgan"]


@pytest.mark.parametrize(
    "name", ["take 12:30.distillgan", "back\\slash.distillgan", "two\nlines.distillgan", "bell\x07.distillgan"],
    ids=["colon", "backslash", "newline", "control"],
)
def test_a_file_whose_name_the_index_refuses_is_never_indexed(tmp_path: Path, name: str) -> None:
    folder = tmp_path / "models"
    kept = _save(folder, "kept", model_id="kept")
    try:
        shutil.copyfile(_save(tmp_path / "other", "odd", model_id="odd"), folder / name)
    except OSError as e:  # a file system that refuses the name itself (Windows: ':' and '\\')
        pytest.skip(f"the file system refuses {name!r}: {e}")
    before = (folder / INDEX_NAME).read_bytes()
    lib = ModelLibrary(folder)
    assert {e.model_id for e in lib.list_all()} == {"kept"}
    assert lib.last_repair is not None and lib.last_repair.invalid == {name: "invalid-file-name"}  # said on every read
    report = lib.repair_index()
    assert tuple(report) == (0, 0) and report.invalid == {name: "invalid-file-name"}
    for _ in range(2):  # a listing never rewrites the index for it
        ModelLibrary(folder).list_all()
        assert (folder / INDEX_NAME).read_bytes() == before
    assert _raw_ids(folder) == {"kept": kept.name}


def test_a_planted_marker_never_gets_a_hidden_file_indexed_or_deleted(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    _save(folder, "kept", model_id="kept")
    hidden = folder / ".distillgan"  # a hidden file holding a valid model...
    shutil.copyfile(_save(tmp_path / "other", "hidden", model_id="hidden"), hidden)
    (folder / "..distillgan.replacing").write_bytes(b"")  # ...and a "marker" naming it
    assert _ids(folder) == {"kept"}
    assert set(_raw_ids(folder)) == {"kept"}
    assert delete_model("hidden", folder) is False  # no such model in the folder
    assert hidden.exists() and (folder / "..distillgan.replacing").exists()  # not a marker: never removed either
