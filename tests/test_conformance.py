"""The conformance vectors (FORMAT.md §10): one test per vector, the generator, and the runner."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

import distillgan
from distillgan import DistillganError, conformance
from distillgan.cli import tensor_digests

VECTORS = conformance.default_vectors_dir()
INDEX = json.loads((VECTORS / "index.json").read_text(encoding="utf-8"))
ALL = INDEX["vectors"]
VALID = [v for v in ALL if v["valid"]]
INVALID = [v for v in ALL if not v["valid"]]
SOURCE = Path(distillgan.__file__).resolve().parent
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed(?:, (\d+) skipped)?$")

# Codes no small vector file can carry: they concern the path, limits above 64 KiB, or arguments.
NOT_IN_VECTORS = {
    "not-found", "not-regular-file", "io-error", "file-too-large",  # the path, not the bytes
    "file-changed",  # another process truncating the file while it is read (tests/test_concurrent_change.py)
    "manifest-too-large",  # a manifest over 1 MiB (tests/test_hostile.py builds one)
    "sha256-mismatch",  # an argument of verify
}


def _ids(vectors: list[dict[str, Any]]) -> list[str]:
    return [v["id"] for v in vectors]


def _tensor_sha256(t: Any) -> str:
    import torch

    flat = t.detach().reshape(-1)
    raw = flat.view(torch.uint8) if flat.numel() else flat
    return hashlib.sha256(raw.numpy().tobytes() if flat.numel() else b"").hexdigest()


@pytest.mark.parametrize("vector", VALID, ids=_ids(VALID))
def test_valid_vector(vector: dict[str, Any]) -> None:
    path = VECTORS / vector["file"]
    expected = vector["expected"]
    info = distillgan.verify(path)
    assert conformance.same_json(info["manifest"], expected["manifest"]) is None
    assert distillgan.inspect(path)["manifest"] == info["manifest"]
    assert tensor_digests(str(path)) == expected["digests"]
    with distillgan.open_archive(path) as archive:  # the torch path: views, copies of misaligned data
        for member, digests in expected["digests"].items():
            tensors = archive.tensors(member)
            aliases = expected["manifest"]["members"][member]["aliases"]
            assert set(tensors) == set(digests) | set(aliases)
            for name, digest in digests.items():
                assert _tensor_sha256(tensors[name]) == digest, name
            for alias, target in aliases.items():
                assert tensors[alias] is tensors[target]


@pytest.mark.parametrize("vector", INVALID, ids=_ids(INVALID))
def test_invalid_vector(vector: dict[str, Any]) -> None:
    path = VECTORS / vector["file"]
    code = vector["expected"]["code"]
    if vector.get("needs") == "verify":
        distillgan.inspect(path)  # headers and manifest are intact: only the data is wrong
    else:
        with pytest.raises(DistillganError) as opened:
            distillgan.inspect(path)
        assert opened.value.code == code, str(opened.value)
    with pytest.raises(DistillganError) as verified:
        distillgan.verify(path)
    assert verified.value.code == code, str(verified.value)


def test_header_size_vectors_break_the_rule_their_description_names() -> None:
    """H2 (length over MAX_HEADER_BYTES) and H3 (past the member) share st-header-size; the message tells them apart.

    st-header-too-large once declared 5 MiB, under the limit: it exercised H3 while claiming H2.
    """
    from distillgan.tensors import MAX_HEADER_BYTES

    for id_, says in [("invalid/st-header-too-large", f"the limit is {MAX_HEADER_BYTES}"), ("invalid/st-header-past-member", "runs past")]:
        vector = next(v for v in INVALID if v["id"] == id_)
        data = (VECTORS / vector["file"]).read_bytes()
        assert len(data) < 64 << 10
        with pytest.raises(DistillganError) as refused:
            distillgan.inspect(VECTORS / vector["file"])
        assert refused.value.code == "st-header-size" and says in str(refused.value), (id_, str(refused.value))


def test_cross_check_order_vectors_carry_both_defects() -> None:
    """order-cross-before-* carry a real integrity defect too, and X2 is reported before X3 (same code: the message shows it)."""
    def path(id_: str) -> Path:
        return VECTORS / next(v for v in INVALID if v["id"] == id_)["file"]

    with zipfile.ZipFile(path("invalid/order-cross-before-crc")) as z:
        assert z.testzip() == "model.safetensors"  # its data does not match its CRC-32
    with zipfile.ZipFile(path("invalid/order-cross-before-bool")) as z:
        assert z.testzip() is None and z.read("model.safetensors").endswith(b"\x00\x01\x02\x01")
    for entry in (distillgan.inspect, distillgan.verify):
        with pytest.raises(DistillganError) as refused:
            entry(path("invalid/order-claims-before-unclaimed"))
        assert refused.value.code == "manifest-mismatch"
        assert "'state_dict/x', which model.safetensors does not hold" in str(refused.value), str(refused.value)


# --- the index ----------------------------------------------------------------------------------


def test_index_is_sound() -> None:
    ids = _ids(ALL)
    assert len(ids) == len(set(ids))
    total = 0
    for v in ALL:
        data = (VECTORS / v["file"]).read_bytes()
        total += len(data)
        assert len(data) < 64 << 10, v["id"]
        assert hashlib.sha256(data).hexdigest() == v["sha256"], v["id"]
        assert re.fullmatch(r"§\d+(\.\d+)?", v["section"]), v["id"]
        assert v["description"]
        assert set(v["expected"]) == ({"manifest", "digests"} if v["valid"] else {"code"}), v["id"]
        assert v.get("needs") in (None, "verify")
    assert total < 2 << 20
    listed = {v["file"] for v in ALL}
    on_disk = {f"{p.parent.name}/{p.name}" for sub in ("valid", "invalid") for p in (VECTORS / sub).iterdir()}
    assert on_disk == listed


def _codes_in(text: str) -> set[str]:
    """Error codes raised in a module: every ``code="..."`` keyword and the code argument of container's ``_fail``."""
    codes = set()
    for node in ast.walk(ast.parse(text)):
        if not isinstance(node, ast.Call):
            continue
        for kw in node.keywords:
            if kw.arg == "code" and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str):
                codes.add(kw.value.value)
        is_fail = isinstance(node.func, ast.Name) and node.func.id == "_fail" and len(node.args) == 2
        if is_fail and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
            codes.add(node.args[1].value)
    return codes


def _source_codes(modules: tuple[str, ...] | None = None) -> set[str]:
    paths = sorted(SOURCE.glob("*.py")) if modules is None else [SOURCE / m for m in modules if (SOURCE / m).exists()]
    return set().union(*(_codes_in(p.read_text(encoding="utf-8")) for p in paths))


def test_vector_codes_exist_in_the_reader() -> None:
    used = {v["expected"]["code"] for v in INVALID}
    missing = used - _source_codes()
    assert not missing, f"vectors expect codes the library never raises: {sorted(missing)}"


def test_every_reader_code_has_a_vector() -> None:
    reader_codes = _source_codes(("container.py", "manifest.py", "values.py", "tensors.py", "legacy.py", "archive.py", "source.py"))
    # raised only for values handed to the writer, or for the host / remote sources
    writer_only = {"invalid-input", "unsupported-dtype", "big-endian-host", "manifest-depth-input", "numpy-unavailable"}
    uncovered = reader_codes - {v["expected"]["code"] for v in INVALID} - NOT_IN_VECTORS - writer_only
    uncovered = {c for c in uncovered if not c.startswith("remote-")}
    assert not uncovered, f"reader codes without a conformance vector: {sorted(uncovered)}"


# --- the generator ----------------------------------------------------------------------------


def test_generator_reproduces_the_committed_vectors(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(VECTORS / "generate.py"), "--out", str(tmp_path)], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "index.json").read_bytes() == (VECTORS / "index.json").read_bytes()
    for v in ALL:
        assert (tmp_path / v["file"]).read_bytes() == (VECTORS / v["file"]).read_bytes(), v["id"]
    regenerated = {f"{p.parent.name}/{p.name}" for sub in ("valid", "invalid") for p in (tmp_path / sub).iterdir()}
    assert regenerated == {v["file"] for v in ALL}


# --- the runner ----------------------------------------------------------------------------------


def _subset(tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    """A vectors folder for the subprocess runs: every vector with DISTILLGAN_FULL_CONFORMANCE=1,
    else the valid ones, the first invalid vector of each code and the needs-verify ones
    (one Python start per vector makes the full set take minutes on a 2-core machine)."""
    if os.environ.get("DISTILLGAN_FULL_CONFORMANCE") == "1":
        return VECTORS, ALL
    chosen, codes = [], set()
    for v in ALL:
        code = None if v["valid"] else v["expected"]["code"]
        if v["valid"] or v.get("needs") or code not in codes:
            chosen.append(v)
            codes.add(code)
    for sub in ("valid", "invalid"):
        (tmp_path / sub).mkdir()
    for v in chosen:
        shutil.copyfile(VECTORS / v["file"], tmp_path / v["file"])
    (tmp_path / "index.json").write_text(json.dumps({**INDEX, "vectors": chosen}), encoding="utf-8")
    return tmp_path, chosen


def _run_runner(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "distillgan.conformance", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _summary(proc: subprocess.CompletedProcess[str]) -> tuple[int, int, int]:
    last = proc.stdout.strip().splitlines()[-1]
    m = SUMMARY.match(last)
    assert m, last
    return int(m[1]), int(m[2]), int(m[3] or 0)


def _failures(proc: subprocess.CompletedProcess[str]) -> str:
    return "\n".join(line for line in proc.stdout.splitlines() if line.startswith("FAIL")) + proc.stderr[-2000:]


def test_runner_with_the_reference_reader_passes_everything(tmp_path: Path) -> None:
    """The default reader is `distillgan inspect --json --digests --no-hash`, run as a real subprocess."""
    root, vectors = _subset(tmp_path)
    proc = _run_runner("--vectors", str(root))
    assert proc.returncode == 0, _failures(proc)
    assert _summary(proc) == (len(vectors), 0, 0)
    lines = proc.stdout.splitlines()[:-1]
    assert len(lines) == len(vectors) and all(line.startswith("PASS ") for line in lines)


def test_runner_skips_data_defects_for_readers_that_never_read_tensor_data(tmp_path: Path) -> None:
    root, vectors = _subset(tmp_path)
    reader = f"{shlex.quote(sys.executable)} -m distillgan inspect --json --no-hash {{path}}"  # no digests, no data read
    proc = _run_runner("--reader", reader, "--vectors", str(root), "--skip-needs-verify", "--select", "invalid/")
    needs_verify = sum(v.get("needs") == "verify" for v in vectors)
    assert proc.returncode == 0, _failures(proc)
    passed, failed, skipped = _summary(proc)
    assert (failed, skipped) == (0, needs_verify) and passed > 0


def test_runner_reports_a_reader_that_accepts_everything() -> None:
    proc = _run_runner("--reader", "true {path}", "--json")
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["passed"] == 0 and doc["failed"] == len(ALL)
    assert SUMMARY.match(proc.stderr.strip().splitlines()[-1])
    reasons = {r["id"]: r["reason"] for r in doc["results"]}
    assert "accepted" in reasons[INVALID[0]["id"]]
    assert "not JSON" in reasons[VALID[0]["id"]]


def test_runner_reports_a_reader_that_rejects_everything_without_codes() -> None:
    proc = _run_runner("--reader", "false {path}", "--select", "invalid/zip")
    assert proc.returncode == 1
    passed, failed, _ = _summary(proc)
    assert passed == 0 and failed > 0
    assert all("CRASH: exit status 1 without" in line for line in proc.stdout.splitlines()[:-1])


def test_runner_refuses_an_altered_vector(tmp_path: Path) -> None:
    index = json.loads((VECTORS / "index.json").read_text(encoding="utf-8"))
    v = index["vectors"][0]
    (tmp_path / "valid").mkdir()
    (tmp_path / v["file"]).write_bytes((VECTORS / v["file"]).read_bytes() + b"x")
    index["vectors"] = [v]
    (tmp_path / "index.json").write_text(json.dumps(index), encoding="utf-8")
    proc = _run_runner("--vectors", str(tmp_path))
    assert proc.returncode == 2
    assert "SHA-256" in proc.stderr


def test_runner_and_reference_reader_do_not_import_torch() -> None:
    path = VECTORS / VALID[0]["file"]
    code = (
        "import sys\n"
        "from distillgan import cli, conformance\n"
        f"rc = conformance.main(['--reader', 'true {{path}}', '--select', {VALID[0]['id']!r}])\n"
        f"rc2 = cli.main(['inspect', '--json', '--digests', {str(path)!r}])\n"
        "assert rc == 1 and rc2 == 0 and 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    ("returncode", "stderr", "passed", "crash"),
    [
        (1, "distillgan: error [zip64]: ...", True, False),
        (1, "error [zip64]", True, False),
        (1, "warning: x\nerror [zip64] found at byte 3\n", True, False),
        (1, "error [zip64-extra]", False, False),  # another code: a plain failure
        (1, "Traceback (most recent call last):\n  ...\nValueError: zip64", False, True),  # the word is not a verdict
        (1, "error [zip64]\nerror [zip-layout]", False, True),  # several codes
        (1, "myerror [zip64]", False, True),  # 'error' must start a word
        (1, "RuntimeError: error [zip64][zip-layout][not-zip]", False, True),  # one line naming every code is no verdict
        (1, "error [zip64] [zip-layout]", False, True),
        (1, "distillgan: error [zip64]: at $.a[3] [sic]", True, False),  # brackets later in the message are text
        (2, "error [zip64]", False, True),  # another exit status
        (-9, "", False, True),  # a signal
        (0, "", False, False),  # accepted
    ],
)
def test_judge_one_process(returncode: int, stderr: str, passed: bool, crash: bool) -> None:
    vector = {"valid": False, "expected": {"code": "zip64"}}
    ok, _, crashed = conformance.judge(vector, returncode, "", stderr)
    assert (ok, crashed) == (passed, crash)


@pytest.mark.parametrize(
    ("answer", "passed", "crash"),
    [
        ({"path": "p", "error": "zip64"}, True, False),
        ({"path": "p", "error": "zip-layout", "message": "m"}, False, False),
        ({"path": "p", "error": "zip64 zip-layout"}, False, True),
        ({"path": "p", "error": ["zip64"]}, False, True),
        ({"path": "p", "error": "zip64", "manifest": {}}, False, True),
        ({"path": "p"}, False, True),
        ({"path": "p", "manifest": {}, "digests": {}}, False, False),
    ],
)
def test_judge_batch(answer: dict[str, Any], passed: bool, crash: bool) -> None:
    vector = {"valid": False, "expected": {"code": "zip64"}}
    ok, _, crashed = conformance.judge_batch(vector, answer)
    assert (ok, crashed) == (passed, crash)


def test_runner_self_test_fails_readers_that_misbehave() -> None:
    """--self-test: the reference reader passes, and readers that accept everything, print every code, crash with a
    stack trace, die by a signal, hang or exit with another status fail every vector (FORMAT.md §10)."""
    proc = _run_runner("--self-test", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[-1] == "self-test passed"
    assert sum(line.startswith("OK ") for line in lines) == len(lines) - 1 >= 10


def test_batch_mode_over_every_vector() -> None:
    """The reference reader started once answers every vector (FORMAT.md §10); the figure is in the report, not asserted."""
    proc = _run_runner("--batch", "--json", timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    assert doc["passed"] == len(ALL) and doc["failed"] == 0 and doc["crashed"] == 0


def test_batch_reader_restarts_after_a_crash(tmp_path: Path) -> None:
    """A batch reader that dies on one vector loses that vector only: the runner starts it again."""
    root, vectors = _subset(tmp_path)
    victim = INVALID[0]["id"]
    script = tmp_path / "reader.py"
    script.write_text(
        "import os, subprocess, sys\n"
        f"victim = {str((root / INVALID[0]['file']).resolve())!r}\n"
        "ref = subprocess.Popen([sys.executable, '-m', 'distillgan.conformance', '--serve'], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)\n"
        "for line in sys.stdin:\n"
        "    if line[:-1] == victim:\n"
        "        os._exit(3)\n"
        "    ref.stdin.write(line); ref.stdin.flush()\n"
        "    sys.stdout.write(ref.stdout.readline()); sys.stdout.flush()\n",
        encoding="utf-8",
    )
    proc = _run_runner("--batch", "--reader", f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}", "--vectors", str(root),
                       "--json", "--jobs", "1")
    doc = json.loads(proc.stdout)
    failed = [r for r in doc["results"] if r["status"] == "FAIL"]
    assert [r["id"] for r in failed] == [victim] and failed[0]["crash"]
    assert doc["passed"] == len(vectors) - 1


def test_batch_and_path_placeholders_are_checked() -> None:
    assert _run_runner("--batch", "--reader", "true {path}").returncode == 2
    assert _run_runner("--reader", "true").returncode == 2


def test_vectors_ship_inside_the_package() -> None:
    """pyproject force-includes spec/vectors as distillgan/_spec/vectors, which default_vectors_dir prefers (FORMAT.md §10)."""
    tomllib = pytest.importorskip("tomllib")

    config = tomllib.loads((SOURCE.parent / "pyproject.toml").read_text(encoding="utf-8"))
    include = config["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert include["spec/vectors"] == "distillgan/_spec/vectors"
    assert include["spec/FORMAT.md"] == "distillgan/_spec/FORMAT.md"
    assert conformance.default_vectors_dir() == VECTORS


def test_the_index_states_the_contract_the_runner_judges_by() -> None:
    """index.json's contract is the one of FORMAT.md §10 (it once said "exit non-zero, the code as a token anywhere")."""
    contract = INDEX["contract"]
    assert "exit with status 1" in contract and "exactly one line containing 'error [CODE]'" in contract
    assert "non-zero" not in contract and "token" not in contract
    spec = (SOURCE.parent / "spec" / "FORMAT.md").read_text(encoding="utf-8")
    assert "exactly one line containing\n  `error [CODE]`" in spec  # §10 says the same
    # the runner agrees: a rejection printed on stdout, or with another status, or twice, is not a pass
    invalid = INVALID[0]
    code = invalid["expected"]["code"]
    assert conformance.judge(invalid, 1, "", f"x: error [{code}]: why\n")[0]
    assert not conformance.judge(invalid, 1, f"error [{code}]\n", "")[0]
    assert not conformance.judge(invalid, 2, "", f"error [{code}]\n")[0]
    assert not conformance.judge(invalid, 1, "", f"error [{code}]\nerror [{code}]\n")[0]


def test_json_comparison_compares_zeros_by_sign() -> None:
    """-0.0 in a manifest (FORMAT.md §4.6) is not 0: a reader whose JSON writer drops the sign fails."""
    assert conformance.same_json(-0.0, 0.0) is not None
    assert conformance.same_json(0, -0.0) is not None
    assert conformance.same_json(0, 0.0) is None and conformance.same_json(-0.0, -0.0) is None
    vector = {"valid": True, "expected": {"manifest": {"z": -0.0}, "digests": {}}}
    assert conformance.judge(vector, 0, '{"manifest": {"z": -0.0}, "digests": {}}', "")[0]
    assert conformance.judge(vector, 0, '{"manifest": {"z": -0}, "digests": {}}', "")[0]  # -0 is the same number
    assert not conformance.judge(vector, 0, '{"manifest": {"z": 0}, "digests": {}}', "")[0]
    assert not conformance.judge_batch(vector, conformance.loads('{"path": "p", "manifest": {"z": 0.0}, "digests": {}}'))[0]


def _index_with(tmp_path: Path, entries: list[dict[str, Any]]) -> Path:
    root = tmp_path / "vectors"
    root.mkdir(exist_ok=True)
    (root / "index.json").write_text(json.dumps({"vectors": entries}), encoding="utf-8")
    return root


@pytest.mark.parametrize("where", ["dotdot", "absolute", "dev-zero", "fifo", "link-out", "directory"])
def test_runner_confines_vector_files_to_the_folder(tmp_path: Path, where: str) -> None:
    """index.json's `file` names a regular file inside the vectors folder, opened without blocking: a usage error
    otherwise, never a read of /dev/zero forever, a FIFO that blocks, or a file outside the folder."""
    outside = tmp_path / "outside.distillgan"
    outside.write_bytes(b"x")
    digest = hashlib.sha256(b"x").hexdigest()
    root = _index_with(tmp_path, [])
    name = {"dotdot": "../outside.distillgan", "absolute": str(outside), "dev-zero": "/dev/zero", "fifo": "fifo",
            "link-out": "link", "directory": "sub"}[where]
    if where == "fifo":
        if not hasattr(os, "mkfifo"):
            pytest.skip("no FIFOs on this platform")
        os.mkfifo(root / "fifo")
    elif where == "link-out":
        (root / "link").symlink_to("/dev/zero")
    elif where == "directory":
        (root / "sub").mkdir()
    _index_with(tmp_path, [{"id": "invalid/x", "file": name, "sha256": digest, "valid": False, "expected": {"code": "not-zip"}}])
    proc = _run_runner("--reader", "true {path}", "--vectors", str(root), timeout=30)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "conformance: error:" in proc.stderr and "outside" not in proc.stdout


def test_runner_escapes_ids_and_codes_from_the_index(tmp_path: Path) -> None:
    """Text from index.json reaches the terminal escaped, as the CLI escapes text from files: no escape sequence passes."""
    data = (VECTORS / INVALID[0]["file"]).read_bytes()
    root = _index_with(tmp_path, [])
    (root / "v.distillgan").write_bytes(data)
    evil = "\x1b]0;pwned\x07\x1b[2J"
    _index_with(tmp_path, [{"id": "invalid/" + evil, "file": "v.distillgan", "sha256": hashlib.sha256(data).hexdigest(), "valid": False,
                            "expected": {"code": "not-zip" + evil}}])
    proc = _run_runner("--reader", "true {path}", "--vectors", str(root))
    assert proc.returncode == 1
    assert "\x1b" not in proc.stdout + proc.stderr and "\x07" not in proc.stdout + proc.stderr
    assert "\\x1b]0;pwned" in proc.stdout  # shown, escaped


def test_json_comparison_is_strict_about_booleans() -> None:
    assert conformance.same_json({"a": 1, "b": [1.0]}, {"b": [1], "a": 1.0}) is None
    assert conformance.same_json({"a": True}, {"a": 1}) is not None
    assert conformance.same_json({"a": None}, {"a": 0}) is not None
    assert conformance.same_json(["x"], ["x", "y"]) is not None


@pytest.mark.skipif(os.environ.get("DISTILLGAN_LARGE_VECTORS") != "1", reason="set DISTILLGAN_LARGE_VECTORS=1 (minutes, ~700 MB of disk)")
def test_large_vectors(tmp_path: Path) -> None:
    """The limits no small file reaches and every accepting zip64 path (generate.py --large), read by the batch runner."""
    out = tmp_path / "large"
    gen = subprocess.run([sys.executable, str(VECTORS / "generate.py"), "--large", str(out)], capture_output=True, text=True,
                         timeout=3600, check=False)
    assert gen.returncode == 0, gen.stderr[-2000:]
    proc = _run_runner("--batch", "--vectors", str(out), "--timeout", "1200", "--jobs", "1", "--json", timeout=7200)
    doc = json.loads(proc.stdout)
    assert doc["failed"] == 0, [r for r in doc["results"] if r["status"] != "PASS"]
