"""The installed `distillgan` console script, run as a real subprocess."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import distillgan
from distillgan import ModelMetadata, save_model

SCRIPT = Path(sys.executable).parent / ("distillgan.exe" if os.name == "nt" else "distillgan")
COMMANDS = ["inspect", "verify", "list", "delete", "convert", "export", "repair", "demo"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert SCRIPT.exists(), f"console script not installed at {SCRIPT}"
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=120, cwd=cwd,
                          encoding="utf-8", errors="strict")


@pytest.fixture
def models(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    voc = {"type": "hifigan", "state_dict": {"conv_pre.weight": torch.ones(2, 2)}, "config": {"rates": [8]},
           "training_metadata": {"epochs": 40, "final_loss": 0.125}}
    save_model({"w": torch.arange(6.0).reshape(2, 3)}, {"n_mels": 80}, {}, ModelMetadata(name="Piano", model_id="p1",
               training_epochs=12, final_train_loss=0.5, final_val_loss=0.75), folder, vocoder_state=voc)
    save_model({"w": torch.zeros(4)}, {}, {}, ModelMetadata(name="Drums", model_id="d1"), folder)
    return folder


def test_version_and_help_on_every_command() -> None:
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("distillgan ")
    r = run("--help")
    assert r.returncode == 0 and all(c in r.stdout for c in COMMANDS)
    for command in COMMANDS:
        r = run(command, "--help")
        assert r.returncode == 0, command
        assert r.stdout.startswith("usage: distillgan " + command), command


@pytest.mark.parametrize("args", [[], ["frobnicate"], ["inspect"], ["verify", "--bogus", "x"], ["export", "only-one-path.distillgan"]])
def test_usage_errors_exit_2(args: list[str]) -> None:
    r = run(*args)
    assert r.returncode == 2, r
    assert "usage:" in r.stderr


def test_inspect_summary_and_json(models: Path) -> None:
    path = models / "piano.distillgan"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    r = run("inspect", str(path))
    assert r.returncode == 0, r.stderr
    for needle in ("distillgan_model version 1", "Piano", "p1", "hifigan, 40 epochs, final loss 0.125", "conv_pre.weight", "F32"):
        assert needle in r.stdout, needle
    assert digest not in r.stdout  # no tensor data, no file hash unless asked
    r = run("inspect", "--sha256", str(path))
    assert digest in r.stdout
    r = run("inspect", "--json", "--digests", "--sha256", str(path))
    info = json.loads(r.stdout)
    assert info["manifest"]["metadata"]["name"] == "Piano"
    assert info["sha256"] == digest
    expected = hashlib.sha256(torch.arange(6.0).numpy().tobytes()).hexdigest()
    assert info["digests"]["model.safetensors"]["state_dict/w"] == expected
    r = run("inspect", "--json", "--no-hash", str(path))  # still accepted by old scripts
    assert "sha256" not in json.loads(r.stdout)


def test_inspect_several_files_no_tensors_and_failures(models: Path, tmp_path: Path) -> None:
    files = sorted(str(p) for p in models.glob("*.distillgan"))
    bad = tmp_path / "bad.distillgan"
    bad.write_bytes(b"not a model")
    r = run("inspect", "--json", "--no-tensors", *files, str(bad))
    assert r.returncode == 1  # one failed
    out = [json.loads(line) for line in r.stdout.splitlines()]
    assert [o["file"] for o in out] == [*files, str(bad)]
    assert all("tensors" not in o for o in out[:-1]) and out[-1]["code"] == "not-zip"
    assert f"{bad}" in r.stderr and "error [not-zip]" in r.stderr
    r = run("inspect", "--no-tensors", *files)
    assert r.returncode == 0 and r.stdout.count("format      distillgan_model") == len(files)
    assert "not listed (--no-tensors)" in r.stdout and "conv_pre.weight" not in r.stdout


def test_inspect_verify_checks_data(models: Path, tmp_path: Path) -> None:
    path = models / "piano.distillgan"
    from distillgan import open_archive

    with open_archive(path) as a:
        t = a.tables["model.safetensors"]
        pos = t.data_start + t.tensors[0].begin
    data = bytearray(path.read_bytes())
    data[pos] ^= 0x01
    bad = tmp_path / "flipped.distillgan"
    bad.write_bytes(bytes(data))
    assert run("inspect", str(bad)).returncode == 0  # headers intact: inspect reads no tensor data
    r = run("inspect", "--verify", str(bad))
    assert r.returncode == 1 and "crc-mismatch" in r.stderr


def test_inspect_never_imports_torch(models: Path) -> None:
    code = ("import sys; from distillgan.cli import main; rc = main(['inspect', '--json', sys.argv[1]]); "
            "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, str(models / "piano.distillgan")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_errors_go_to_stderr_with_code(tmp_path: Path) -> None:
    r = run("inspect", str(tmp_path / "missing.distillgan"))
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith("distillgan: error [not-found]:")
    legacy = tmp_path / "old.distill"
    torch.save({"format": "distill_model", "model_state_dict": {}}, legacy)
    r = run("inspect", str(legacy))
    assert r.returncode == 1
    assert "[legacy-distill-v1]" in r.stderr and "Please retrain your model." in r.stderr
    r = run("inspect", str(tmp_path))
    assert r.returncode == 1 and "[not-regular-file]" in r.stderr


def test_verify_one_line_per_file_and_pinned_digest(models: Path, tmp_path: Path) -> None:
    good = models / "piano.distillgan"
    bad = tmp_path / "bad.distillgan"
    data = bytearray(good.read_bytes())
    tensor = distillgan.inspect(good)["tensors"]["vocoder.safetensors"][0]
    data[tensor["data_offset"] + 1] ^= 0xFF  # inside the vocoder's tensor data: only the CRC catches it
    bad.write_bytes(bytes(data))
    r = run("verify", str(good), str(models / "drums.distillgan"))
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 2 and r.stdout.count("OK") == 2
    r = run("verify", str(good), str(bad))
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert lines[0].startswith("OK") and lines[1].startswith("FAIL") and "[crc-mismatch]" in lines[1]
    digest = hashlib.sha256(good.read_bytes()).hexdigest()
    assert run("verify", "--sha256", digest, str(good)).returncode == 0
    r = run("verify", "--sha256", "0" * 64, str(good))
    assert r.returncode == 1 and "[sha256-mismatch]" in r.stdout


def test_list_delete_repair(models: Path) -> None:
    r = run("list", str(models))
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert lines[0].split()[:2] == ["NAME", "ID"]
    piano = next(line for line in lines if line.startswith("Piano"))
    assert "hifigan (40 ep, loss 0.125)" in piano and "12" in piano
    assert next(line for line in lines if line.startswith("Drums")).rstrip().endswith("none")
    entries = json.loads(run("list", "--json", str(models)).stdout)["models"]
    assert {e["model_id"] for e in entries} == {"p1", "d1"}
    r = run("delete", "d1", "--dir", str(models))
    assert r.returncode == 0 and not (models / "drums.distillgan").exists()
    r = run("delete", "d1", "--dir", str(models))
    assert r.returncode == 1 and "[not-found]" in r.stderr
    (models / "model_library.json").write_text("garbage")
    report = json.loads(run("repair", "--json", "--dir", str(models)).stdout)
    assert report["added"] == ["p1"]


def test_list_json_is_strict_json_with_non_finite_losses(tmp_path: Path) -> None:
    """NaN and infinities use FORMAT.md §4.6's {"$": "float"} form: no bare NaN that strict parsers refuse."""
    save_model({"w": torch.ones(1)}, {}, {}, ModelMetadata(name="diverged", model_id="nan1", final_train_loss=float("nan"),
               final_val_loss=float("-inf")), tmp_path)
    r = run("list", "--json", "--dir", str(tmp_path))
    assert r.returncode == 0, r.stderr

    def refuse(constant: str) -> None:
        raise ValueError(f"not strict JSON: {constant}")

    (entry,) = json.loads(r.stdout, parse_constant=refuse)["models"]
    assert entry["model_id"] == "nan1"
    assert entry["final_train_loss"] == {"$": "float", "value": "nan", "bits": "7ff8000000000000"}
    assert entry["final_val_loss"] == {"$": "float", "value": "-inf", "bits": "fff0000000000000"}
    assert entry["dataset_total_duration_s"] == 0.0


def test_delete_by_name_or_file_and_ambiguity(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    a = save_model({"w": torch.ones(1)}, {}, {}, ModelMetadata(name="Keys", model_id="k1"), folder)
    b = save_model({"w": torch.ones(1)}, {}, {}, ModelMetadata(name="Keys", model_id="k2"), folder)
    c = save_model({"w": torch.ones(1)}, {}, {}, ModelMetadata(name="Bells", model_id="b1"), folder)
    r = run("delete", "Keys", "--dir", str(folder))
    assert r.returncode == 1 and "[ambiguous]" in r.stderr and "k1" in r.stderr and "k2" in r.stderr
    assert a.exists() and b.exists()
    assert run("delete", "Bells", "--dir", str(folder)).returncode == 0 and not c.exists()  # by name
    assert run("delete", str(b), "--dir", str(folder)).returncode == 0 and not b.exists()  # by path
    assert run("delete", a.name, "--dir", str(folder)).returncode == 0 and not a.exists()  # by file name


def test_delete_by_path_takes_the_folder_from_the_path(tmp_path: Path) -> None:
    """No --dir: the folder is the file's own (not ./models, which does not exist here); --dir elsewhere is refused."""
    folder = tmp_path / "elsewhere"
    keep = save_model({"w": torch.ones(1)}, {}, {}, ModelMetadata(name="keep", model_id="k"), folder)
    zz = save_model({"w": torch.ones(1)}, {}, {}, ModelMetadata(name="zz", model_id="z"), folder)
    other = tmp_path / "other"
    other.mkdir()
    r = run("delete", str(zz), "--dir", str(other), cwd=tmp_path)
    assert r.returncode == 1 and "[not-found]" in r.stderr and str(other) in r.stderr and "not in" in r.stderr, r.stderr
    assert zz.exists()
    r = run("delete", str(zz), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert not zz.exists() and keep.exists() and not (tmp_path / "models").exists()
    assert [e["model_id"] for e in json.loads(run("list", "--json", "--dir", str(folder)).stdout)["models"]] == ["k"]
    r = run("delete", os.path.join("elsewhere", keep.name), cwd=tmp_path)  # a relative path too
    assert r.returncode == 0 and not keep.exists(), r.stderr


def test_a_missing_folder_is_an_error_and_is_never_created(tmp_path: Path) -> None:
    missing = tmp_path / "typo"
    for args in (["list", "--dir", str(missing)], ["repair", "--dir", str(missing)], ["delete", "x", "--dir", str(missing)],
                 ["list", str(missing)]):
        r = run(*args)
        assert r.returncode == 1 and "[not-found]" in r.stderr and "does not exist" in r.stderr, args
    assert not missing.exists()


@pytest.mark.skipif(not Path("/bin/bash").exists(), reason="needs bash for the pipe")
def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """`inspect big.distillgan | head -2` with thousands of tensor lines: more than a pipe holds, so the pipe breaks."""
    path = save_model({f"layer.{i}.weight": torch.zeros(1) for i in range(4000)}, {}, {}, ModelMetadata(name="many"), tmp_path)
    r = subprocess.run(f"set -o pipefail; '{SCRIPT}' inspect '{path}' | head -2", shell=True, capture_output=True, text=True,
                       timeout=60, executable="/bin/bash")
    assert r.returncode == 0 and r.stderr == "" and len(r.stdout.splitlines()) == 2, (r.returncode, r.stderr)


def test_convert_checkpoint(tmp_path: Path) -> None:
    ckpt = tmp_path / "epoch7.pt"
    torch.save({"model_state_dict": {"w": torch.ones(3)}, "optimizer_state_dict": {"state": {}}, "epoch": 7,
                "train_loss": 0.5, "val_loss": 0.25, "latent_dim": 8}, ckpt)
    r = run("convert", str(ckpt), "--name", "From ckpt", "--tag", "x", "--dir", str(tmp_path / "m"))
    assert r.returncode == 0, r.stderr
    info = json.loads(run("inspect", "--json", str(tmp_path / "m" / "from_ckpt.distillgan")).stdout)
    meta = info["manifest"]["metadata"]
    assert (meta["training_epochs"], meta["final_train_loss"], meta["final_val_loss"], meta["tags"]) == (7, 0.5, 0.25, ["x"])
    assert [t["name"] for t in info["tensors"]["model.safetensors"]] == ["state_dict/w"]


def test_hostile_names_are_escaped(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    evil = "evil\x1b[2J\x1b]0;pwned\x07\nline\u202e"
    path = save_model({"bidi\u202eevil": torch.ones(1)}, {}, {}, ModelMetadata(name=evil, model_id="id\x1b[31m"), folder)
    hostile_path = folder / "na\x1bme\n.distillgan"
    os.rename(path, hostile_path)
    for args in (["inspect", str(hostile_path)], ["verify", str(hostile_path)], ["list", str(folder)]):
        r = run(*args)
        assert r.returncode == 0, (args, r.stderr)
        assert "\x1b" not in r.stdout + r.stderr and "\x07" not in r.stdout + r.stderr and "\u202e" not in r.stdout, args
        assert "\\x1b" in r.stdout + r.stderr, args
    # the index never names such a file (FORMAT.md §15.2): the listing reports it, escaped
    assert "invalid  na\\x1bme\\n.distillgan [invalid-file-name]" in r.stderr, r.stderr
    ok = folder / "fine.distillgan"
    os.rename(hostile_path, ok)
    r = run("list", str(folder))
    assert r.returncode == 0 and "\x1b" not in r.stdout + r.stderr and "\\x1b" in r.stdout, r.stdout  # the model's own strings
    r = run("inspect", str(folder / "nope\x1b.distillgan"))
    assert "\x1b" not in r.stderr and "\\x1b" in r.stderr


def test_demo_runs(tmp_path: Path) -> None:
    r = run("demo", "--dir", str(tmp_path / "demo"))  # the folder passed as for every other command
    assert r.returncode == 0, r.stderr
    assert "This model was saved in v1 format which is no longer supported. Please retrain your model." in r.stdout
    assert "demo finished" in r.stdout and any(p.suffix == ".distillgan" for p in (tmp_path / "demo").iterdir())
    r = run("demo", str(tmp_path / "demo"))  # re-runnable in the same folder; the old positional form still works
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("command", ["list", "delete", "repair", "convert", "demo"])
def test_every_command_with_a_folder_takes_it_as_dir(command: str) -> None:
    """The folder is passed the same way everywhere: --dir DIR, no documented positional folder."""
    r = run(command, "--help")
    assert r.returncode == 0 and "--dir DIR" in r.stdout, r.stdout
    usage = r.stdout.split("\n\n", 1)[0]
    assert not any(word in usage.split() for word in ("dir", "folder", "[dir]", "[folder]")), usage


def test_python_dash_m_entry_point() -> None:
    r = subprocess.run([sys.executable, "-m", "distillgan", "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("distillgan ")


@pytest.mark.skipif(os.name == "nt", reason="pseudo-terminals are POSIX-only")
def test_progress_bar_only_on_a_terminal(tmp_path: Path) -> None:
    import pty

    big = save_model({"w": torch.zeros(80 << 18)}, {}, {}, ModelMetadata(name="big"), tmp_path)  # 80 MiB
    master, slave = pty.openpty()
    proc = subprocess.Popen([str(SCRIPT), "verify", str(big)], stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO once the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    out, _ = proc.communicate(timeout=120)
    os.close(master)
    terminal = b"".join(chunks).decode()
    assert proc.returncode == 0 and out.startswith(b"OK")
    assert "verifying" in terminal and "100%" in terminal and "80.0 MiB / 80.0 MiB" in terminal
    piped = run("verify", str(big))
    assert piped.returncode == 0 and piped.stderr == ""  # no bar when stderr is not a terminal


def test_list_reports_and_repair_removes_an_interrupted_save(models: Path) -> None:
    left = models / ".piano.99999.0123456789ab.distillgan-tmp"  # as a killed save leaves it: ours by name, unlocked
    left.write_bytes(b"\0" * 4096)
    mine = models / ".notes.tmp"
    mine.write_text("the user's own")
    r = run("list", "--dir", str(models))
    assert r.returncode == 0 and "abandoned" in r.stderr and left.name in r.stderr and left.exists()
    r = run("repair", "--dir", str(models))
    assert r.returncode == 0 and f"cleaned  {left.name}" in r.stdout
    assert not left.exists() and mine.read_text() == "the user's own"
