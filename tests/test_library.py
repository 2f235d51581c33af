"""The model library folder: index semantics, concurrency across processes, SIGKILL at random moments."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import distillgan
from distillgan import ModelLibrary, ModelMetadata, delete_model, save_model
from distillgan.catalog import INDEX_NAME

SPEC = {"n_mels": 32}
TRAIN = {"epochs": 1}


def _save(folder: Path, name: str, *, model_id: str = "", vocoder: bool = False, size: int = 64) -> Path:
    sd = {"w": torch.arange(size, dtype=torch.float32), "b": torch.zeros(3)}
    voc = None
    if vocoder:
        voc = {"type": "hifigan", "state_dict": {"k": torch.ones(4)}, "config": {},
               "training_metadata": {"epochs": 12, "final_loss": 0.25, "training_date": "2026-11-01"}}
    return save_model(sd, SPEC, TRAIN, ModelMetadata(name=name, model_id=model_id, tags=["a", "B"]), folder, vocoder_state=voc)


def _raw_index(folder: Path) -> dict:
    return json.loads((folder / INDEX_NAME).read_text(encoding="utf-8"))


def _published(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.name.endswith(".distillgan") and not p.name.startswith(".")}


def test_entries_carry_metadata_and_vocoder_info(tmp_path: Path) -> None:
    p = _save(tmp_path, "Voice", model_id="m1", vocoder=True)
    entry = ModelLibrary(tmp_path).get("m1")
    assert entry is not None
    assert entry.file_path == p.name and entry.file_size_bytes == p.stat().st_size
    assert entry.vocoder == distillgan.VocoderInfo(type="hifigan", epochs=12, final_loss=0.25, training_date="2026-11-01")
    _save(tmp_path, "Plain", model_id="m2")
    assert ModelLibrary(tmp_path).get("m2").vocoder is None
    assert _raw_index(tmp_path)["version"] == 2


def test_search_by_query_and_tags(tmp_path: Path) -> None:
    _save(tmp_path, "Drum Loops", model_id="d")
    _save(tmp_path, "Choir", model_id="c")
    lib = ModelLibrary(tmp_path)
    assert [e.model_id for e in lib.search("drum")] == ["d"]
    assert {e.model_id for e in lib.search(tags=["b"])} == {"c", "d"}
    assert lib.search("choir", tags=["missing"]) == []


def test_seed_index_without_vocoder_loads(tmp_path: Path) -> None:
    p = _save(tmp_path, "Old", model_id="old")
    doc = _raw_index(tmp_path)
    entry = doc["models"]["old"]
    del entry["vocoder"]
    (tmp_path / INDEX_NAME).write_text(json.dumps({"version": 1, "models": {"old": entry}}), encoding="utf-8")
    got = ModelLibrary(tmp_path).get("old")
    assert got is not None and got.vocoder is None and got.file_path == p.name


@pytest.mark.parametrize(
    "content",
    ["{not json", "[]", '{"version": 99, "models": []}', '{"version": 2, "models": [{"model_id": 5}]}',
     '{"version": 2, "models": [{"model_id": "x", "name": "n", "file_path": "../../etc/passwd.distillgan"}]}'],
    ids=["garbage", "array", "future-version", "bad-entry", "path-escape"],
)
def test_corrupt_or_hand_edited_index_is_rebuilt_and_reported(tmp_path: Path, content: str) -> None:
    _save(tmp_path, "Keep", model_id="keep")
    (tmp_path / INDEX_NAME).write_text(content, encoding="utf-8")
    lib = ModelLibrary(tmp_path)
    listed = lib.list_all()
    assert [e.model_id for e in listed if not e.problem] == ["keep"]
    assert lib.last_repair is not None
    if "passwd" in content:  # a file_path that is no bare name: kept, flagged, never used as a path
        assert [(e.model_id, e.problem) for e in listed if e.problem] == [("x", "missing-file")]
    else:
        assert "rebuilt" in lib.last_repair.reason and len(listed) == 1
    assert (tmp_path / INDEX_NAME).read_text(encoding="utf-8") == content  # a read writes nothing
    ModelLibrary(tmp_path).repair_index()  # the explicit clean-up
    assert list(_raw_index(tmp_path)["models"]) == ["keep"]


def test_repair_adds_drops_and_reports(tmp_path: Path) -> None:
    a = _save(tmp_path, "A", model_id="a")
    _save(tmp_path, "B", model_id="b")
    (tmp_path / "legacy.distill").write_bytes(b"\x80\x04junk")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "broken.distillgan").write_bytes(b"PK\x03\x04broken")
    stale = tmp_path / ".x.distillgan.123.tmp"
    stale.write_bytes(b"partial")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    (tmp_path / INDEX_NAME).write_text(json.dumps({"version": 2, "models": []}), encoding="utf-8")
    a.unlink()
    report = ModelLibrary(tmp_path).repair_index()
    assert report.added == ["b"]
    assert report.invalid == {"broken.distillgan": "zip-eocd"} or set(report.invalid) == {"broken.distillgan"}
    assert sorted(report.ignored) == ["legacy.distill", "notes.txt"]
    assert report.cleaned == [] and stale.exists()  # an old hidden .tmp, however old, is not recognisably ours
    assert [e.model_id for e in ModelLibrary(tmp_path).list_all()] == ["b"]


def test_reconciliations_and_repairs_are_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """What a read or a repair changes in the index is logged on the "distillgan" logger."""
    from distillgan.index import ModelEntry

    a = _save(tmp_path, "A", model_id="a")
    b = _save(tmp_path, "B", model_id="b")
    c = _save(tmp_path, "C", model_id="c")
    ModelLibrary(tmp_path).add_entry(ModelEntry(model_id="decoy", name="Decoy", file_path=a.name))  # names a's file
    b.rename(tmp_path / "renamed.distillgan")
    c.unlink()

    def messages() -> str:
        ours = [r for r in caplog.records if r.name.split(".")[0] == "distillgan" and r.levelno >= logging.INFO]
        return "\n".join(r.getMessage() for r in ours)

    with caplog.at_level(logging.DEBUG, logger="distillgan"):
        listed = {e.model_id: e.problem for e in ModelLibrary(tmp_path).list_all()}
    assert listed == {"a": "", "b": "", "c": "missing-file"}  # c cannot be confirmed: kept and flagged, not dropped
    assert messages() == ""  # a read changes nothing: it reconciles in memory (at DEBUG)
    with caplog.at_level(logging.DEBUG, logger="distillgan"):
        ModelLibrary(tmp_path).remove("nothing-by-that-id")  # a change under the lock writes what reads found
    logged = messages()
    assert "'decoy'" in logged and "holds 'a'" in logged, logged  # dropped: the file holds another model
    assert "'b'" in logged and "renamed.distillgan" in logged, logged  # indexed from a file the index did not list
    assert str(tmp_path) in logged
    assert set(_raw_index(tmp_path)["models"]) == {"a", "b", "c"}

    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="distillgan"):
        ModelLibrary(tmp_path).list_all()
    assert messages() == ""  # nothing changed, nothing logged

    (tmp_path / INDEX_NAME).write_text("{garbage", encoding="utf-8")
    abandoned = tmp_path / f".{a.name}.999999.0123456789ab.distillgan-tmp"  # ours by name, no writer holds its lock
    abandoned.write_bytes(b"partial")
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="distillgan"):
        report = ModelLibrary(tmp_path).repair_index()
    assert report.cleaned == [abandoned.name] and "unusable" in report.reason
    logged = messages()
    assert "rebuilt" in logged and "unusable" in logged and str(tmp_path) in logged, logged
    assert abandoned.name in logged and "removed" in logged, logged


@pytest.mark.skipif(os.name == "nt", reason="POSIX modes")
def test_the_index_is_0644_like_the_models_whatever_the_umask(tmp_path: Path) -> None:
    """The index was once written 0600 while models are 0644; a umask of 077 must not make it private either."""
    old = os.umask(0o077)
    try:
        a = _save(tmp_path, "A", model_id="a")  # the index created by a save
        index = tmp_path / INDEX_NAME
        modes = {"save": (index.stat().st_mode & 0o777, a.stat().st_mode & 0o777)}
        (tmp_path / INDEX_NAME).write_text("{garbage", encoding="utf-8")
        index.chmod(0o600)
        ModelLibrary(tmp_path).remove("none")  # rewritten by a change that reconciles it
        modes["read"] = (index.stat().st_mode & 0o777, a.stat().st_mode & 0o777)
        index.chmod(0o600)
        ModelLibrary(tmp_path).repair_index()  # and by a repair
        modes["repair"] = (index.stat().st_mode & 0o777, a.stat().st_mode & 0o777)
    finally:
        os.umask(old)
    expected = {"save": (0o644, 0o644), "read": (0o644, 0o644), "repair": (0o644, 0o644)}
    assert modes == expected, {k: tuple(map(oct, v)) for k, v in modes.items()}


def test_orphan_file_is_indexed_on_read(tmp_path: Path) -> None:
    """A save killed after publishing its file but before the index write is completed by the next reader."""
    _save(tmp_path, "A", model_id="a")
    (tmp_path / INDEX_NAME).write_text(json.dumps({"version": 2, "models": []}), encoding="utf-8")
    assert [e.model_id for e in ModelLibrary(tmp_path).list_all()] == ["a"]


def test_duplicate_model_id_refused_without_losing_anything(tmp_path: Path) -> None:
    first = _save(tmp_path, "Same", model_id="dup")
    with pytest.raises(distillgan.LibraryError) as exc:
        _save(tmp_path, "Other", model_id="dup")
    assert exc.value.code == "duplicate-model-id"
    assert _published(tmp_path) == {first.name}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".distillgan-tmp")]


# --- concurrency: 8 processes x 10 mixed saves/deletes --------------------------------------------

WORKER = textwrap.dedent(
    """
    import json, random, sys, torch
    from distillgan import ModelMetadata, delete_model, save_model
    folder, wid = sys.argv[1], int(sys.argv[2])
    rng = random.Random(wid)
    mine, deleted, files = [], [], {}
    for op in range(10):
        if mine and rng.random() < 0.35:
            victim = mine.pop(rng.randrange(len(mine)))
            assert delete_model(victim, folder), victim
            deleted.append(victim)
        else:
            mid = f"w{wid}-{op}"
            sd = {"w": torch.full((rng.randrange(1, 4000),), float(wid)), "i": torch.tensor(op)}
            path = save_model(sd, {}, {}, ModelMetadata(name="same name", model_id=mid), folder)
            files[mid] = path.name
            mine.append(mid)
    print(json.dumps({"kept": mine, "deleted": deleted, "files": files}))
    """
)


def test_eight_processes_saving_and_deleting_lose_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(folder), str(w)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for w in range(8)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    kept = {mid for r in results for mid in r["kept"]}
    kept_files = [r["files"][mid] for r in results for mid in r["kept"]]
    assert len(kept_files) == len(set(kept_files)), "two live models share a file name"  # a deleted name may be reused
    index = {mid: m["file_path"] for mid, m in _raw_index(folder)["models"].items()}
    assert set(index) == kept
    assert set(index.values()) == _published(folder)
    for r in results:
        for mid in r["kept"]:
            assert index[mid] == r["files"][mid]
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".distillgan-tmp")]
    for name in _published(folder):
        distillgan.verify(folder / name)


# --- crashes: SIGKILL at random moments during saves and deletes ------------------------------------


def _churn(folder: str, log: str, seed: int) -> None:
    """Child: save and delete models forever, logging each op before and after it."""
    rng = random.Random(seed)
    alive: list[str] = []
    with open(log, "a", buffering=1) as out:
        for n in range(10**6):
            if alive and rng.random() < 0.4:
                mid = alive.pop(0)
                out.write(f"begin delete {mid}\n")
                delete_model(mid, folder)
                out.write(f"end delete {mid}\n")
            else:
                mid = f"s{seed}-{n}"
                out.write(f"begin save {mid}\n")
                sd = {"w": torch.randn(rng.randrange(1, 600_000)), "b": torch.arange(7)}
                save_model(sd, {}, {}, ModelMetadata(name="crash test", model_id=mid), folder)
                out.write(f"end save {mid}\n")
                alive.append(mid)


def _replay(log: Path) -> tuple[set[str], tuple[str, str] | None]:
    done: set[str] = set()
    pending = None
    for line in log.read_text().splitlines():
        stage, op, mid = line.split()
        if stage == "begin":
            pending = (op, mid)
        else:
            pending = None
            (done.add if op == "save" else done.discard)(mid)
    return done, pending


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="SIGKILL is POSIX-only")
def test_sigkill_at_random_moments_leaves_old_or_new_state(tmp_path: Path) -> None:
    folder, log = tmp_path / "models", tmp_path / "ops.log"
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "distillgan"])
    rng = random.Random(1234)
    kills = 0
    interrupted = {"save": 0, "delete": 0}
    for round_ in range(60):
        child = ctx.Process(target=_churn, args=(str(folder), str(log), round_))
        before = log.stat().st_size if log.exists() else 0
        child.start()
        deadline = time.monotonic() + 30
        while (log.stat().st_size if log.exists() else 0) == before and time.monotonic() < deadline:
            time.sleep(0.002)  # wait for the child's first operation, then kill at a random moment after it
        time.sleep(rng.uniform(0.0, 0.4))
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        assert child.exitcode == -signal.SIGKILL
        kills += 1
        done, pending = _replay(log)
        raw = {mid: m["file_path"] for mid, m in _raw_index(folder)["models"].items()} if (folder / INDEX_NAME).exists() else {}
        files = _published(folder)
        assert set(raw.values()) <= files, "the index lists a file that does not exist"
        for name in files:
            distillgan.verify(folder / name)  # never a partial .distillgan
        ids = {e.model_id for e in ModelLibrary(folder).list_all()}
        allowed = [done]
        if pending is not None:
            op, mid = pending
            allowed.append(done | {mid} if op == "save" else done - {mid})
        assert ids in allowed, (round_, pending, ids ^ done)
        if pending is not None:  # settle the in-flight op in the log as whatever happened
            interrupted[pending[0]] += 1
            with log.open("a") as out:
                op, mid = pending
                happened = (mid in ids) == (op == "save")
                if happened:
                    out.write(f"end {op} {mid}\n")
                else:
                    out.write(f"end {'delete' if op == 'save' else 'save'} {mid}\n")
        # files are re-listed by reconciliation, so the child of the next round may delete them
    assert kills >= 50
    assert interrupted["save"] >= 20 and interrupted["delete"] >= 3, interrupted  # the kills did land mid-operation
    leftovers = [p.name for p in folder.iterdir() if p.name.endswith(".distillgan-tmp")]
    assert all(n.startswith(".") for n in leftovers)
    report = ModelLibrary(folder).repair_index()  # every killed writer's temporary file is recognised, whatever its age
    assert sorted(report.cleaned) == sorted(leftovers) and not [n for n in os.listdir(folder) if n.endswith(".distillgan-tmp")]
