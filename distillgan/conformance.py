"""The language-neutral conformance runner (FORMAT.md §10).

Runs a reader command on every vector of ``spec/vectors/index.json`` and
checks what it does::

    python -m distillgan.conformance --reader "my-reader --json {path}" [--vectors DIR] [--json]

The reader contract: for a valid vector, exit 0 and print on stdout a JSON
object whose ``manifest`` equals the vector's ``expected.manifest`` and whose
``digests`` (``{member: {tensor: sha256 hex}}``, stored tensors only) equals
``expected.digests``; for an invalid vector, exit non-zero and print the
expected error code as a whole token on stdout or stderr. Vectors marked
``"needs": "verify"`` are defective only in tensor data (a member's CRC-32,
bool bytes); a reader that never reads tensor data may pass
``--skip-needs-verify`` to have them reported as skipped.

The command is split with :func:`shlex.split` and run without a shell;
``{path}`` is replaced by the vector's path. Without ``--reader`` the
reference reader ``distillgan inspect --json --digests --no-hash {path}`` is
used (with ``--digests`` it reads all tensor data and checks every CRC-32 and
bool byte, as ``verify`` does). This module never imports torch.

Exit status: 0 when every vector passes, 1 when any fails, 2 for a usage
error (no index, unreadable vectors).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INDEX_NAME = "index.json"
DEFAULT_TIMEOUT_S = 20.0
MAX_OUTPUT_SHOWN = 200  # characters of reader output quoted in a failure reason


def default_vectors_dir() -> Path:
    """``spec/vectors`` of the source tree this package lives in."""
    return Path(__file__).resolve().parent.parent / "spec" / "vectors"


def default_reader() -> list[str]:
    """The reference reader: ``distillgan inspect --json --digests --no-hash {path}`` (FORMAT.md §10)."""
    return [sys.executable, "-m", "distillgan", "inspect", "--json", "--digests", "--no-hash", "{path}"]


@dataclass
class Result:
    """The outcome of one vector."""

    id: str
    status: str  # "PASS", "FAIL" or "SKIP"
    reason: str
    seconds: float
    returncode: int | None = None


# --- comparing JSON values -----------------------------------------------------------------


def same_json(a: Any, b: Any, where: str = "$") -> str | None:
    """None when ``a`` and ``b`` are the same JSON value, else where they first differ.

    Numbers compare by value (a reader may print 1.0 as 1), but booleans are
    not numbers; object key order does not matter.
    """
    if isinstance(a, bool) or isinstance(b, bool):
        return None if type(a) is type(b) and a == b else f"{where}: {_short(a)} != {_short(b)}"
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
            return None
        return None if a == b else f"{where}: {_short(a)} != {_short(b)}"
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


def _short(value: Any) -> str:
    text = ascii(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- running one vector ----------------------------------------------------------------------


def _code_pattern(code: str) -> re.Pattern[str]:
    # a code is a token of [a-z0-9-]: "zip64" must not match inside "zip64-foo" nor "st-shape" inside "st-shapes"
    return re.compile(rf"(?<![A-Za-z0-9_-]){re.escape(code)}(?![A-Za-z0-9_-])")


def _quote(text: str) -> str:
    text = " ".join(text.split())
    return ascii(text if len(text) <= MAX_OUTPUT_SHOWN else text[:MAX_OUTPUT_SHOWN] + "...")


def judge(vector: dict[str, Any], returncode: int, stdout: str, stderr: str) -> tuple[bool, str]:
    """(passed, reason) for one reader run on one vector."""
    expected = vector["expected"]
    if returncode < 0:
        return False, f"reader killed by signal {-returncode}"
    if vector["valid"]:
        if returncode != 0:
            return False, f"valid vector rejected (exit {returncode}): {_quote(stderr or stdout)}"
        try:
            out = json.loads(stdout)
        except ValueError as e:
            return False, f"stdout is not JSON ({e}): {_quote(stdout)}"
        if not isinstance(out, dict):
            return False, "stdout JSON is not an object"
        for key in ("manifest", "digests"):
            if key not in out:
                return False, f"stdout JSON has no {key!r}"
            diff = same_json(out[key], expected[key], key)
            if diff:
                return False, f"{key} differs at {diff}"
        return True, "accepted with the expected manifest and digests"
    code = expected["code"]
    if returncode == 0:
        return False, f"invalid vector accepted (exit 0); expected {code}"
    if _code_pattern(code).search(stdout) or _code_pattern(code).search(stderr):
        return True, f"rejected with {code}"
    return False, f"rejected (exit {returncode}) without the code {code}: {_quote(stderr or stdout)}"


def run_vector(vector: dict[str, Any], root: Path, reader: Sequence[str], timeout: float) -> Result:
    path = root / vector["file"]
    argv = [arg.replace("{path}", str(path)) for arg in reader]
    start = time.monotonic()
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return Result(vector["id"], "FAIL", f"reader timed out after {timeout:g} s", time.monotonic() - start)
    except OSError as e:
        return Result(vector["id"], "FAIL", f"cannot run the reader: {e}", time.monotonic() - start)
    seconds = time.monotonic() - start
    stdout = proc.stdout.decode("utf-8", "replace")
    stderr = proc.stderr.decode("utf-8", "replace")
    ok, reason = judge(vector, proc.returncode, stdout, stderr)
    return Result(vector["id"], "PASS" if ok else "FAIL", reason, seconds, proc.returncode)


# --- the index -------------------------------------------------------------------------------


class UsageError(Exception):
    """The vectors cannot be used (missing index, altered files)."""


def load_index(root: Path) -> list[dict[str, Any]]:
    """The vectors of ``root/index.json``, each file checked against its recorded SHA-256."""
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
        try:
            data = (root / v["file"]).read_bytes()
        except OSError as e:
            raise UsageError(f"vector {v.get('id')!r}: {e}") from e
        if hashlib.sha256(data).hexdigest() != v["sha256"]:
            raise UsageError(f"vector {v['id']!r}: {v['file']} does not match the SHA-256 in the index (altered or stale)")
    return vectors


def run(
    root: Path,
    reader: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    jobs: int = 2,
    skip_needs_verify: bool = False,
    select: str | None = None,
) -> list[Result]:
    """Run ``reader`` on every vector under ``root``; results in index order."""
    vectors = [v for v in load_index(root) if select is None or select in v["id"]]
    results: dict[str, Result] = {}
    todo = []
    for v in vectors:
        if skip_needs_verify and v.get("needs") == "verify":
            results[v["id"]] = Result(v["id"], "SKIP", "needs a reader that checks tensor data (--skip-needs-verify)", 0.0)
        else:
            todo.append(v)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for res in pool.map(lambda v: run_vector(v, root, reader, timeout), todo):
            results[res.id] = res
    return [results[v["id"]] for v in vectors]


def summary(results: Sequence[Result]) -> str:
    passed = sum(r.status == "PASS" for r in results)
    failed = sum(r.status == "FAIL" for r in results)
    skipped = sum(r.status == "SKIP" for r in results)
    return f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else "")


# --- command line ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m distillgan.conformance",
        description="Run a .distillgan reader on the conformance vectors and report PASS/FAIL per vector.",
    )
    p.add_argument("--reader", help="reader command; {path} is replaced by the vector's path "
                   "(default: the reference reader, python -m distillgan inspect --json --digests --no-hash {path})")
    p.add_argument("--vectors", type=Path, help="folder holding index.json (default: spec/vectors of this source tree)")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout (the summary goes to stderr)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help=f"seconds per vector (default {DEFAULT_TIMEOUT_S:g})")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="readers run at once (default 2)")
    p.add_argument("--skip-needs-verify", action="store_true",
                   help="skip vectors defective only in tensor data, for readers that never read it")
    p.add_argument("--select", metavar="TEXT", help="only vectors whose id contains TEXT")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    reader = shlex.split(args.reader) if args.reader else default_reader()
    if not reader:
        print("conformance: error: --reader is empty", file=sys.stderr)
        return 2
    root = args.vectors if args.vectors is not None else default_vectors_dir()
    try:
        results = run(root, reader, timeout=args.timeout, jobs=args.jobs, skip_needs_verify=args.skip_needs_verify, select=args.select)
    except UsageError as e:
        print(f"conformance: error: {e}", file=sys.stderr)
        return 2
    line = summary(results)
    if args.json:
        doc = {
            "reader": reader,
            "vectors": str(root),
            "results": [
                {"id": r.id, "status": r.status, "reason": r.reason, "seconds": round(r.seconds, 3), "returncode": r.returncode}
                for r in results
            ],
            "passed": sum(r.status == "PASS" for r in results),
            "failed": sum(r.status == "FAIL" for r in results),
            "skipped": sum(r.status == "SKIP" for r in results),
        }
        print(json.dumps(doc, indent=1))
        print(line, file=sys.stderr)
    else:
        for r in results:
            print(f"{r.status} {r.id}: {r.reason}")
        print(line)
    return 1 if any(r.status == "FAIL" for r in results) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
