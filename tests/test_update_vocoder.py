"""update_vocoder under crashes: a SIGKILL at any moment leaves the old file or the new one, and the index follows.

The app's HiFi-GAN trainer replaces a saved model's vocoder after training it
(``update_vocoder`` here); a user may kill the app meanwhile. A child process
replaces the vocoder of one model again and again, logging each version
before and after; the parent kills it at random moments and checks the file,
the index and what a fresh reader of the folder reports.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import distillgan
from distillgan import ModelLibrary, ModelMetadata, load_model, save_model, update_vocoder


def _vocoder(version: int) -> dict:
    g = torch.Generator().manual_seed(version)
    return {
        "type": "hifigan",
        "generator_state_dict": {"conv.weight": torch.randn(1 + 40_000 * (version % 5), generator=g), "conv.bias": torch.full((4,), float(version))},
        "training_metadata": {"epochs": version, "final_loss": version / 1000},
    }


def _churn(path: str, log: str, start: int) -> None:
    """Child: replace the vocoder forever with versions start, start+1, ... (every 7th removes it)."""
    with open(log, "a", buffering=1) as out:
        for version in range(start, start + 10**6):
            out.write(f"begin {version}\n")
            update_vocoder(path, None if version % 7 == 0 else _vocoder(version))
            out.write(f"end {version}\n")


def _version_in_file(path: Path) -> int:
    state = load_model(path, copy=True).vocoder_state
    if state is None:
        return -1
    version = state["training_metadata"]["epochs"]
    expected = _vocoder(version)["generator_state_dict"]
    for k, v in expected.items():  # the whole vocoder of that version, not a mixture
        assert torch.equal(state["generator_state_dict"][k], v), (version, k)
    return version


def _held(version: int) -> int:
    """The version a file holds after ``update_vocoder`` of ``version`` (-1: no vocoder)."""
    return -1 if version % 7 == 0 else version


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="SIGKILL is POSIX-only")
def test_sigkill_during_update_vocoder_leaves_old_or_new_and_the_index_follows(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    path = save_model({"w": torch.randn(300_000)}, {}, {}, ModelMetadata(name="voice", model_id="m-voice"), folder,
                      vocoder_state=_vocoder(1))
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "distillgan"])
    rng = random.Random(99)
    held, start, mid_update = 1, 2, 0
    for round_ in range(30):
        log = tmp_path / f"ops-{round_}.log"
        child = ctx.Process(target=_churn, args=(str(path), str(log), start))
        child.start()
        deadline = time.monotonic() + 30
        while (log.stat().st_size if log.exists() else 0) == 0 and time.monotonic() < deadline:
            time.sleep(0.002)  # the child's first update has begun; kill at a random moment after that
        time.sleep(rng.uniform(0.0, 0.25))
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        assert child.exitcode == -signal.SIGKILL
        lines = log.read_text().splitlines()
        ended = [int(x.split()[1]) for x in lines if x.startswith("end ")]
        pending = int(lines[-1].split()[1]) if lines and lines[-1].startswith("begin ") else None
        old = _held(ended[-1]) if ended else held
        new = None if pending is None else _held(pending)

        distillgan.verify(path)  # never a partial or mixed file
        got = _version_in_file(path)
        assert got in (old, new), (round_, got, old, new)
        mid_update += pending is not None
        # a fresh reader of the folder reports the vocoder the file holds (the index is reconciled)
        entry = ModelLibrary(folder).get("m-voice")
        assert entry is not None and entry.file_path == path.name and entry.file_size_bytes == path.stat().st_size
        assert (entry.vocoder.epochs if entry.vocoder is not None else -1) == got, (round_, entry.vocoder, got)
        assert [n for n in os.listdir(folder) if n.endswith(".distillgan")] == [path.name]
        held = got
        start = max([start - 1, *ended, pending or 0]) + 1
    assert mid_update >= 15, mid_update  # most kills landed during an update
    ModelLibrary(folder).repair_index()  # the killed writers' temporary files are recognised and removed
    assert not [n for n in os.listdir(folder) if n.endswith(".distillgan-tmp")]


def test_a_marker_left_by_a_killed_update_makes_the_next_reader_index_the_file_again(tmp_path: Path) -> None:
    """The state a kill between the rename and the index leaves: the new file, the old entry, the marker."""
    folder = tmp_path / "models"
    path = save_model({"w": torch.ones(4)}, {}, {}, ModelMetadata(name="voice", model_id="m-voice"), folder, vocoder_state=_vocoder(3))
    index = folder / "model_library.json"
    old_index = index.read_bytes()
    update_vocoder(path, _vocoder(8))  # the same file size as version 3 (the size follows version % 5)
    assert len(old_index) == len(index.read_bytes())
    marker = folder / f".{path.name}.replacing"
    assert not marker.exists()  # a completed update leaves none
    index.write_bytes(old_index)  # as if killed before the index was written
    assert ModelLibrary(folder).get("m-voice").vocoder.epochs == 3  # without a marker the index is trusted (it is a hint)
    marker.touch()
    entry = ModelLibrary(folder).get("m-voice")
    assert entry.vocoder.epochs == 8 and entry.file_size_bytes == path.stat().st_size
    assert marker.exists() and index.read_bytes() == old_index  # a read fixes it in memory and writes nothing
    ModelLibrary(folder).remove("no-such-id")  # the next change under the lock writes the fix and removes the marker
    assert not marker.exists()
    assert json.loads(index.read_text())["models"]["m-voice"]["vocoder"]["epochs"] == 8
    report = ModelLibrary(folder).last_repair
    assert report is None or "m-voice" not in report.removed


def test_a_marker_is_honoured_in_memory_while_the_lock_is_busy(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    path = save_model({"w": torch.ones(4)}, {}, {}, ModelMetadata(name="voice", model_id="m-voice"), folder, vocoder_state=_vocoder(3))
    index = folder / "model_library.json"
    old_index = index.read_bytes()
    update_vocoder(path, None)
    index.write_bytes(old_index)
    marker = folder / f".{path.name}.replacing"
    marker.touch()
    holder = subprocess.Popen(  # another process holds the folder's lock: the fix cannot be written now
        [sys.executable, "-c", "import sys, distillgan\nwith distillgan.ModelLibrary(sys.argv[1]).locked():\n"
         "    print('held', flush=True)\n    sys.stdin.read()", str(folder)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        library = ModelLibrary(folder)
        assert library.get("m-voice").vocoder is None  # the file's truth, in memory
        assert library.last_repair is not None and library.last_repair.refreshed == ["m-voice"]
        assert marker.exists() and index.read_bytes() == old_index
    finally:
        holder.communicate("", timeout=60)
    assert ModelLibrary(folder).get("m-voice").vocoder is None and marker.exists()  # reads write nothing, lock or not
    ModelLibrary(folder).repair_index()  # a change: fixed for good
    assert ModelLibrary(folder).get("m-voice").vocoder is None and not marker.exists()
    assert json.loads(index.read_text())["models"]["m-voice"]["vocoder"] is None


def test_names_that_only_look_like_markers_change_nothing(tmp_path: Path) -> None:
    """A hidden '*.replacing' name that is not ours (another file's, a directory) is ignored: no rewrite on every read, repair works."""
    folder = tmp_path / "models"
    path = save_model({"w": torch.ones(4)}, {}, {}, ModelMetadata(name="voice", model_id="m-voice"), folder)
    (folder / ".notes.replacing").write_text("a user's file")
    (folder / f".{path.name}.replacing").mkdir()
    index = folder / "model_library.json"
    ModelLibrary(folder).list_all()
    before = os.stat(index)
    for _ in range(2):
        assert [e.model_id for e in ModelLibrary(folder).list_all()] == ["m-voice"]
    after = os.stat(index)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # the index was not rewritten
    ModelLibrary(folder).repair_index()  # no IsADirectoryError
    assert (folder / ".notes.replacing").read_text() == "a user's file" and (folder / f".{path.name}.replacing").is_dir()


def test_list_says_when_it_reread_a_replaced_file(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    path = save_model({"w": torch.ones(4)}, {}, {}, ModelMetadata(name="voice", model_id="m-voice"), folder, vocoder_state=_vocoder(3))
    index = folder / "model_library.json"
    old_index = index.read_bytes()
    update_vocoder(path, _vocoder(4))
    index.write_bytes(old_index)
    (folder / f".{path.name}.replacing").touch()
    r = subprocess.run([str(Path(sys.executable).with_name("distillgan")), "list", "--dir", str(folder)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "reread   m-voice" in r.stderr, (r.stdout, r.stderr)
