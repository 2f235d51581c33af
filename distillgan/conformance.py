"""The language-neutral conformance runner (FORMAT.md §10).

Runs a reader command on every vector of ``index.json`` and checks what it does::

    python -m distillgan.conformance --reader "my-reader --json {path}" [--vectors DIR] [--json]
    python -m distillgan.conformance --batch --reader "my-reader --batch"
    python -m distillgan.conformance --batch            # the reference reader, started once
    python -m distillgan.conformance --self-test        # the runner fails readers that misbehave

The reader contract (FORMAT.md §10). One process per file: for a valid vector,
exit 0 and print on stdout a JSON object whose ``manifest`` equals the
vector's ``expected.manifest`` and whose ``digests`` (``{member: {tensor:
sha256 hex}}``, stored tensors only) equals ``expected.digests``; for an
invalid vector, exit with status 1 and write on stderr exactly one line
containing ``error [CODE]``. Anything else fails, and a reader that gave no
verdict (a signal, a timeout, another exit status, no or several
``error [CODE]`` lines) is marked as a crash. Batch (``--batch``): the
reader is started once, reads absolute paths on stdin, one per line, and
answers each with one JSON line ``{"path": P, "manifest": ..., "digests":
...}`` or ``{"path": P, "error": CODE, "message": ...}``.

Vectors marked ``"needs": "verify"`` are defective only in tensor data (a
member's CRC-32, bool bytes); a reader that never reads tensor data may pass
``--skip-needs-verify`` to have them reported as skipped.

The command is split into words as a POSIX shell would (:func:`shlex.split`)
and run without a shell. Without ``--reader`` the reference reader is used:
``distillgan inspect --json --digests --no-hash {path}``, or with
``--batch`` ``python -m distillgan.conformance --serve``. This module never
imports torch.

Exit status: 0 when every vector passes, 1 when any fails, 2 for a usage
error (no index, unreadable vectors).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import queue
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .fsio import open_regular

INDEX_NAME = "index.json"
DEFAULT_TIMEOUT_S = 20.0
MAX_OUTPUT_SHOWN = 200  # characters of reader output quoted in a failure reason


def default_vectors_dir() -> Path:
    """The vectors installed with the package (``distillgan/_spec/vectors``), else ``spec/vectors`` of the source tree."""
    here = Path(__file__).resolve().parent
    installed = here / "_spec" / "vectors"
    return installed if (installed / INDEX_NAME).is_file() else here.parent / "spec" / "vectors"


def default_reader() -> list[str]:
    """The reference reader: ``distillgan inspect --json --digests --no-hash {path}`` (FORMAT.md §10)."""
    return [sys.executable, "-m", "distillgan", "inspect", "--json", "--digests", "--no-hash", "{path}"]


def default_batch_reader() -> list[str]:
    """The reference reader in batch mode: ``python -m distillgan.conformance --serve``."""
    return [sys.executable, "-m", "distillgan.conformance", "--serve"]


@dataclass
class Result:
    """The outcome of one vector."""

    id: str
    status: str  # "PASS", "FAIL" or "SKIP"
    reason: str
    seconds: float
    returncode: int | None = None
    crash: bool = False  # the reader gave no verdict: signal, timeout, other exit status, no or several codes


# --- comparing JSON values -----------------------------------------------------------------


def loads(text: str | bytes) -> Any:
    """JSON as a reader printed it, with the number token ``-0`` read as -0.0 (it denotes negative zero)."""
    return json.loads(text, parse_int=_parse_int)


def _parse_int(token: str) -> Any:
    return -0.0 if token == "-0" else int(token)


def same_json(a: Any, b: Any, where: str = "$") -> str | None:
    """None when ``a`` and ``b`` are the same JSON value, else where they first differ.

    Numbers compare by value (a reader may print 1.0 as 1) and zeros by sign
    (-0.0 is not 0, FORMAT.md §4.6); booleans are not numbers; object key
    order does not matter.
    """
    if isinstance(a, bool) or isinstance(b, bool):
        return None if type(a) is type(b) and a == b else f"{where}: {_short(a)} != {_short(b)}"
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
            return None
        same = a == b and (a != 0 or math.copysign(1.0, a) == math.copysign(1.0, b))
        return None if same else f"{where}: {_short(a)} != {_short(b)}"
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            extra, missing = sorted(set(a) - set(b)), sorted(set(b) - set(a))
            return f"{where}: keys differ (unexpected {_short(extra)}, missing {_short(missing)})"
        for k in a:
            diff = same_json(a[k], b[k], f"{where}.{k}")
            if diff:
                return diff
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{where}: {len(a)} items != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            diff = same_json(x, y, f"{where}[{i}]")
            if diff:
                return diff
        return None
    return None if type(a) is type(b) and a == b else f"{where}: {_short(a)} != {_short(b)}"


def safe(text: Any) -> str:
    """Text from index.json or a reader, as the CLI shows text from files: non-printable characters escaped."""
    from .cli import safe as cli_safe

    return cli_safe(text)


def _short(value: Any) -> str:
    text = ascii(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- running one vector ----------------------------------------------------------------------


REJECTION = re.compile(r"(?<![A-Za-z0-9_-])error \[([a-z0-9-]+)\]")  # FORMAT.md §10: the one line of a rejection
SEVERAL_CODES = re.compile(r"(?<![A-Za-z0-9_-])error \[[a-z0-9-]+\] *\[")  # `error [a][b]...`: several codes on one line


def _quote(text: str) -> str:
    text = " ".join(text.split())
    return ascii(text if len(text) <= MAX_OUTPUT_SHOWN else text[:MAX_OUTPUT_SHOWN] + "...")


def rejection_codes(stderr: str) -> list[str]:
    """The code of each ``error [CODE]`` of stderr; a line naming several (``error [a][b]``) gives them all."""
    codes = []
    for line in stderr.splitlines():
        several = SEVERAL_CODES.search(line)
        if several is not None:
            codes.extend(re.findall(r"\[([a-z0-9-]+)\]", line[several.start():]))
        else:
            codes.extend(REJECTION.findall(line)[:1])
    return codes


def _check_accepted(vector: dict[str, Any], out: Any) -> tuple[bool, str]:
    expected = vector["expected"]
    if not isinstance(out, dict):
        return False, "stdout JSON is not an object"
    for key in ("manifest", "digests"):
        if key not in out:
            return False, f"stdout JSON has no {key!r}"
        diff = same_json(out[key], expected[key], key)
        if diff:
            return False, f"{key} differs at {diff}"
    return True, "accepted with the expected manifest and digests"


def judge(vector: dict[str, Any], returncode: int, stdout: str, stderr: str) -> tuple[bool, str, bool]:
    """(passed, reason, crash) for one run of a one-process-per-file reader (FORMAT.md §10)."""
    if returncode < 0:
        return False, f"reader killed by signal {-returncode}", True
    if returncode not in (0, 1):
        return False, f"exit status {returncode}; a reader exits 0 (accepted) or 1 (refused): {_quote(stderr or stdout)}", True
    codes = rejection_codes(stderr)
    if returncode == 1 and not codes:
        return False, f"exit status 1 without a line 'error [CODE]' on stderr: {_quote(stderr or stdout)}", True
    if len(codes) > 1:
        return False, f"{len(codes)} lines 'error [CODE]' on stderr ({', '.join(codes[:5])}); a rejection names one code", True
    if vector["valid"]:
        if returncode != 0:
            return False, f"valid vector rejected with {codes[0]}: {_quote(stderr)}", False
        try:
            out = loads(stdout)
        except ValueError as e:
            return False, f"stdout is not JSON ({e}): {_quote(stdout)}", False
        ok, reason = _check_accepted(vector, out)
        return ok, reason, False
    code = vector["expected"]["code"]
    if returncode == 0:
        return False, f"invalid vector accepted (exit 0); expected {safe(code)}", False
    if codes[0] == code:
        return True, f"rejected with {code}", False
    return False, f"rejected with {codes[0]}; expected {safe(code)}", False


def judge_batch(vector: dict[str, Any], answer: dict[str, Any]) -> tuple[bool, str, bool]:
    """(passed, reason, crash) for one answer line of a batch reader (FORMAT.md §10)."""
    has_error = "error" in answer
    has_result = "manifest" in answer or "digests" in answer
    if has_error == has_result:
        return False, f"an answer holds either 'error' or 'manifest' and 'digests': {_quote(json.dumps(answer)[:300])}", True
    if has_error:
        code = answer["error"]
        if not (isinstance(code, str) and re.fullmatch(r"[a-z0-9-]+", code)):
            return False, f"'error' is not one code: {_quote(json.dumps(code)[:100])}", True
        if vector["valid"]:
            return False, f"valid vector rejected with {code}: {_quote(str(answer.get('message', '')))}", False
        expected = vector["expected"]["code"]
        return (True, f"rejected with {code}", False) if code == expected else (False, f"rejected with {code}; expected {safe(expected)}", False)
    if not vector["valid"]:
        return False, f"invalid vector accepted; expected {safe(vector['expected']['code'])}", False
    ok, reason = _check_accepted(vector, answer)
    return ok, reason.replace("stdout JSON", "answer"), False


def run_vector(vector: dict[str, Any], root: Path, reader: Sequence[str], timeout: float) -> Result:
    path = vector_path(root, vector)
    argv = [arg.replace("{path}", str(path)) for arg in reader]
    start = time.monotonic()
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return Result(vector["id"], "FAIL", f"reader timed out after {timeout:g} s", time.monotonic() - start, crash=True)
    except OSError as e:
        return Result(vector["id"], "FAIL", f"cannot run the reader: {e}", time.monotonic() - start, crash=True)
    seconds = time.monotonic() - start
    stdout = proc.stdout.decode("utf-8", "replace")
    stderr = proc.stderr.decode("utf-8", "replace")
    ok, reason, crash = judge(vector, proc.returncode, stdout, stderr)
    return Result(vector["id"], "PASS" if ok else "FAIL", reason, seconds, proc.returncode, crash)


# --- batch mode --------------------------------------------------------------------------------


class _BatchReader:
    """One running batch reader: paths in on stdin, one JSON line out per path (FORMAT.md §10)."""

    def __init__(self, argv: Sequence[str]) -> None:
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, bufsize=0)
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[bytes] | None) -> None:
        assert stream is not None
        for line in iter(stream.readline, b""):
            self._lines.put(line)
        self._lines.put(None)

    def ask(self, path: str, timeout: float) -> bytes | None:
        """The answer line for ``path``; None when the reader died or stayed silent for ``timeout`` seconds."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(path.encode("utf-8") + b"\n")
            self.proc.stdin.flush()
        except OSError:
            return None
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            return None

    def stderr_tail(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read()[-4000:].decode("utf-8", "replace")

    def close(self, timeout: float) -> None:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait(timeout=timeout)
        except (OSError, subprocess.TimeoutExpired):
            pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()


def run_batch(vectors: list[dict[str, Any]], root: Path, reader: Sequence[str], timeout: float) -> Iterator[Result]:
    """Ask one batch reader about each vector in turn; restart it after a crash."""
    proc: _BatchReader | None = None
    try:
        for v in vectors:
            path = str(vector_path(root, v))
            if proc is None:
                try:
                    proc = _BatchReader(reader)
                except OSError as e:
                    yield Result(v["id"], "FAIL", f"cannot run the reader: {e}", 0.0, crash=True)
                    continue
            start = time.monotonic()
            line = proc.ask(path, timeout)
            seconds = time.monotonic() - start
            problem = None
            answer: Any = None
            if line is None:
                alive = proc.proc.poll() is None
                problem = f"no answer within {timeout:g} s" if alive else f"the reader exited (status {proc.proc.returncode})"
            else:
                try:
                    answer = loads(line)
                except ValueError:
                    problem = f"the answer is not one JSON line: {_quote(line.decode('utf-8', 'replace'))}"
                else:
                    if not isinstance(answer, dict) or answer.get("path") != path:
                        problem = f"the answer is not an object for this path: {_quote(line.decode('utf-8', 'replace'))}"
            if problem is not None:
                tail = proc.stderr_tail()
                proc.close(1.0)
                proc = None
                yield Result(v["id"], "FAIL", problem + (f"; stderr: {_quote(tail)}" if tail.strip() else ""), seconds, crash=True)
                continue
            ok, reason, crash = judge_batch(v, answer)
            yield Result(v["id"], "PASS" if ok else "FAIL", reason, seconds, crash=crash)
    finally:
        if proc is not None:
            proc.close(timeout)


def serve(stdin: IO[str] | None = None, stdout: IO[str] | None = None) -> int:
    """The reference reader in batch mode: a path per line in, one JSON answer per line out (FORMAT.md §10).

    Each file is checked as ``distillgan inspect --json --digests`` checks it
    (``verify``: every rule, every CRC-32 and bool byte), then its tensors are hashed.
    """
    from .archive import verify
    from .cli import tensor_digests
    from .errors import DistillganError

    stdin = stdin if stdin is not None else sys.stdin
    stdout = stdout if stdout is not None else sys.stdout
    for line in stdin:
        path = line[:-1] if line.endswith("\n") else line
        answer: dict[str, Any] = {"path": path}
        try:
            info = verify(path)
            answer["manifest"] = info["manifest"]
            answer["digests"] = tensor_digests(path)
        except DistillganError as e:
            answer = {"path": path, "error": e.code, "message": str(e)}
        stdout.write(json.dumps(answer, ensure_ascii=True, separators=(",", ":")) + "\n")
        stdout.flush()
    return 0


# --- the index -------------------------------------------------------------------------------


class UsageError(Exception):
    """The vectors cannot be used (missing index, altered files)."""


def vector_path(root: Path, vector: dict[str, Any]) -> Path:
    """The absolute path of a vector's ``file``: relative, without ``..``, inside ``root`` once links are resolved."""
    rel = vector.get("file")
    where = f"vector {safe(vector.get('id'))}"
    if not isinstance(rel, str) or not rel or "\0" in rel or "\\" in rel:
        raise UsageError(f"{where}: 'file' must be a relative path inside the vectors folder")
    parts = rel.split("/")
    if os.path.isabs(rel) or rel.startswith("/") or ".." in parts or (len(rel) > 1 and rel[1] == ":"):
        raise UsageError(f"{where}: 'file' {safe(rel)} leaves the vectors folder (absolute or with '..')")
    base = root.resolve()
    path = (base / rel).resolve()
    if base not in path.parents:
        raise UsageError(f"{where}: 'file' {safe(rel)} resolves outside the vectors folder")
    return path


def _vector_sha256(path: Path, where: str) -> str:
    """SHA-256 of a regular file, opened without blocking (a FIFO or device is refused, never read)."""
    fd, _ = open_regular(path, os.O_RDONLY, lambda what: UsageError(f"{where}: not a regular file"))
    try:
        digest = hashlib.sha256()
        while block := os.read(fd, 8 << 20):  # in blocks: the large vectors are 4 GiB files
            digest.update(block)
        return digest.hexdigest()
    finally:
        os.close(fd)


def load_index(root: Path) -> list[dict[str, Any]]:
    """The vectors of ``root/index.json``, each file confined to ``root`` and checked against its recorded SHA-256."""
    index_path = root / INDEX_NAME
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise UsageError(f"no {INDEX_NAME} in {str(root)!r}; pass --vectors DIR") from e
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read {str(index_path)!r}: {e}") from e
    vectors = index.get("vectors") if isinstance(index, dict) else None
    if not isinstance(vectors, list) or not vectors:
        raise UsageError(f"{str(index_path)!r} lists no vectors")
    for v in vectors:
        if not isinstance(v, dict):
            raise UsageError(f"{str(index_path)!r} lists a vector that is not an object")
        where = f"vector {safe(v.get('id'))}"
        path = vector_path(root, v)
        try:
            digest = _vector_sha256(path, where)
        except OSError as e:
            raise UsageError(f"{where}: {safe(e)}") from e
        if digest != v.get("sha256"):
            raise UsageError(f"{where}: {safe(v['file'])} does not match the SHA-256 in the index (altered or stale)")
    return vectors


def run(
    root: Path,
    reader: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    jobs: int = 2,
    skip_needs_verify: bool = False,
    select: str | None = None,
    batch: bool = False,
) -> list[Result]:
    """Run ``reader`` on every vector under ``root``; results in index order.

    With ``batch``, ``jobs`` readers are started once each and share the vectors.
    """
    vectors = [v for v in load_index(root) if select is None or select in v["id"]]
    results: dict[str, Result] = {}
    todo = []
    for v in vectors:
        if skip_needs_verify and v.get("needs") == "verify":
            results[v["id"]] = Result(v["id"], "SKIP", "needs a reader that checks tensor data (--skip-needs-verify)", 0.0)
        else:
            todo.append(v)
    jobs = max(1, min(jobs, len(todo) or 1))
    if batch:
        shares = [todo[i::jobs] for i in range(jobs)]
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            for share_results in pool.map(lambda share: list(run_batch(share, root, reader, timeout)), shares):
                for res in share_results:
                    results[res.id] = res
    else:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            for res in pool.map(lambda v: run_vector(v, root, reader, timeout), todo):
                results[res.id] = res
    return [results[v["id"]] for v in vectors]


def summary(results: Sequence[Result]) -> str:
    passed = sum(r.status == "PASS" for r in results)
    failed = sum(r.status == "FAIL" for r in results)
    skipped = sum(r.status == "SKIP" for r in results)
    return f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else "")


# --- the runner's self-test ---------------------------------------------------------------------

# Readers that misbehave, as Python one-liners (FORMAT.md §10): every one of them must fail every vector.
_ADVERSARIES: dict[str, str] = {
    "accepts everything": "print('{}')",
    "prints every code": "import sys; [print(f'error [{c}]', file=sys.stderr) for c in sys.argv[2].split(',')]; sys.exit(1)",
    "crashes with every code in its stack trace": "import sys; raise ValueError(' '.join(sys.argv[2].split(',')))",
    "crashes with 'error [a][b]...' naming every code": "import sys; raise RuntimeError('error ' + ''.join(f'[{c}]' for c in sys.argv[2].split(',')))",
    "dies by a signal": "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
    "hangs": "import time; time.sleep(60)",
    "right line, wrong exit status": (
        "import sys; from distillgan import cli; rc = cli.main(['inspect', '--json', '--digests', '--no-hash', sys.argv[1]]); "
        "sys.exit(rc + 2)"),
}
_BATCH_ADVERSARIES: dict[str, str] = {
    "batch: dies after each path": "import sys; sys.stdin.readline(); sys.exit(0)",
    "batch: answers for another path": "import sys, json\nfor line in sys.stdin: print(json.dumps({'path': 'x', 'error': 'not-zip'}), flush=True)",
    "batch: two codes in one answer": "import sys, json\nfor line in sys.stdin: print(json.dumps({'path': line[:-1], 'error': 'not-zip zip-layout'}), flush=True)",
}


def self_test(root: Path, *, timeout: float = 2.0) -> tuple[bool, list[str]]:
    """Run the reference reader and the adversaries above on a few vectors; (all as required, report lines)."""
    vectors = load_index(root)
    sample = [v for v in vectors if v["valid"]][:2] + [v for v in vectors if not v["valid"] and not v.get("needs")][:6]
    # the sample's own codes first: a reader printing `error [a][b]...` then names the right code first
    first = [v["expected"]["code"] for v in sample if not v["valid"]]
    codes = list(dict.fromkeys(first + sorted({v["expected"]["code"] for v in vectors if not v["valid"]})))
    lines: list[str] = []
    good = True

    def check(label: str, reader: list[str], *, batch: bool, expect_pass: bool, limit: float) -> None:
        nonlocal good
        results = _run_sample(root, sample, reader, limit, batch)
        passed = sum(r.status == "PASS" for r in results)
        crashes = sum(r.crash for r in results)
        ok = passed == len(results) if expect_pass else passed == 0
        good = good and ok
        want = "all pass" if expect_pass else "all fail"
        lines.append(f"{'OK ' if ok else 'BAD'} {label}: {passed} of {len(results)} passed, {crashes} crashes ({want} required)")

    check("reference reader", default_reader(), batch=False, expect_pass=True, limit=60)
    check("reference reader, batch", default_batch_reader(), batch=True, expect_pass=True, limit=60)
    for label, code in _ADVERSARIES.items():
        reader = [sys.executable, "-c", code, "{path}", ",".join(codes)]
        check(label, reader, batch=False, expect_pass=False, limit=timeout)
    for label, code in _BATCH_ADVERSARIES.items():
        check(label, [sys.executable, "-c", code], batch=True, expect_pass=False, limit=timeout)
    return good, lines


def _run_sample(root: Path, sample: list[dict[str, Any]], reader: list[str], timeout: float, batch: bool) -> list[Result]:
    if batch:
        return list(run_batch(sample, root, reader, timeout))
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda v: run_vector(v, root, reader, timeout), sample))


# --- command line ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m distillgan.conformance",
        description="Run a .distillgan reader on the conformance vectors and report PASS/FAIL per vector (FORMAT.md §10).",
    )
    p.add_argument("--reader", help="reader command, split like a POSIX shell would and run without one; {path} is replaced by "
                   "the vector's absolute path (default: python -m distillgan inspect --json --digests --no-hash {path}; "
                   "with --batch: python -m distillgan.conformance --serve)")
    p.add_argument("--batch", action="store_true", help="start the reader once; it reads paths on stdin and answers one JSON line each")
    p.add_argument("--vectors", type=Path, help="folder holding index.json (default: the vectors installed with distillgan)")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout (the summary goes to stderr)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help=f"seconds per vector (default {DEFAULT_TIMEOUT_S:g})")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="readers run at once (default 2)")
    p.add_argument("--skip-needs-verify", action="store_true",
                   help="skip vectors defective only in tensor data, for readers that never read it")
    p.add_argument("--select", metavar="TEXT", help="only vectors whose id contains TEXT")
    p.add_argument("--self-test", action="store_true", help="show that the runner fails readers that misbehave, then exit")
    p.add_argument("--serve", action="store_true", help="be the reference reader in batch mode (paths on stdin, answers on stdout)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.serve:
        return serve()
    root = args.vectors if args.vectors is not None else default_vectors_dir()
    if args.self_test:
        try:
            good, lines = self_test(root)
        except UsageError as e:
            print(f"conformance: error: {e}", file=sys.stderr)
            return 2
        print("\n".join(lines))
        print("self-test passed" if good else "self-test FAILED")
        return 0 if good else 1
    if args.reader:
        reader = shlex.split(args.reader)
    else:
        reader = default_batch_reader() if args.batch else default_reader()
    if not reader:
        print("conformance: error: --reader is empty", file=sys.stderr)
        return 2
    has_path = any("{path}" in arg for arg in reader)
    if args.batch == has_path:
        what = "a batch reader reads paths on stdin: remove {path}" if args.batch else "the reader needs {path} in its command"
        print(f"conformance: error: {what}", file=sys.stderr)
        return 2
    start = time.monotonic()
    try:
        results = run(root, reader, timeout=args.timeout, jobs=args.jobs, skip_needs_verify=args.skip_needs_verify,
                      select=args.select, batch=args.batch)
    except UsageError as e:
        print(f"conformance: error: {e}", file=sys.stderr)
        return 2
    elapsed = time.monotonic() - start
    line = summary(results)
    if args.json:
        doc = {
            "reader": reader,
            "batch": args.batch,
            "vectors": str(root),
            "seconds": round(elapsed, 3),
            "results": [
                {"id": r.id, "status": r.status, "reason": r.reason, "seconds": round(r.seconds, 3), "returncode": r.returncode,
                 "crash": r.crash}
                for r in results
            ],
            "passed": sum(r.status == "PASS" for r in results),
            "failed": sum(r.status == "FAIL" for r in results),
            "crashed": sum(r.crash for r in results),
            "skipped": sum(r.status == "SKIP" for r in results),
        }
        print(json.dumps(doc, indent=1))
        print(line, file=sys.stderr)
    else:
        for r in results:
            print(f"{r.status} {safe(r.id)}: {'CRASH: ' if r.crash else ''}{r.reason}")
        print(line)
    return 1 if any(r.status == "FAIL" for r in results) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
