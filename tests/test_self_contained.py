"""The repository is read on its own: no file refers to a document outside it.

A threat model in a sibling folder, an issue tracker's numbers, a planning document or a brief are
not shipped with the project; a reader of the code, the tests or the spec cannot follow such a
reference. Say what the threat, finding or requirement is instead.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEXT_SUFFIXES = {".py", ".md", ".sh", ".mjs", ".js", ".html", ".css", ".toml", ".json", ".txt", ".cfg", ".ini", ".yml", ".yaml"}
SKIPPED_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", "build", "dist", ".mypy_cache", ".pytest_cache",
                ".ruff_cache", ".hypothesis"}

PATTERNS = (
    r"\bTHREATS(\.md)?\b",  # the threat model kept beside the repository
    r"\.\./shared\b",
    r"/work/",  # a path on one machine
    r"\bissues? #?[0-9]",  # an issue tracker's numbers
    r"\b(the|this) issue\b",  # an issue as the source of a requirement
    r"\bred[- ]team report\b",
    r"\bthe seed\b",  # the planning documents the project started from
    r"\bseed (plan|app|project|api)\b",
    r"\bthe brief\b",
    r"^\s*# --- [0-9]+\.[0-9]+\b",  # a section headed by a finding's number
)
OUTSIDE = re.compile("|".join(PATTERNS), re.IGNORECASE | re.MULTILINE)


def _text_files() -> list[Path]:
    out = []
    for path in sorted(ROOT.rglob("*")):
        rel = path.relative_to(ROOT)
        if any(part in SKIPPED_DIRS or part.endswith(".egg-info") for part in rel.parts[:-1]):
            continue
        if path == Path(__file__).resolve():  # the patterns and their examples
            continue
        if path.is_file() and (path.suffix in TEXT_SUFFIXES or rel.as_posix() == ".ci/run"):
            out.append(path)
    return out


def test_the_scan_sees_the_code_the_tests_the_spec_and_the_tools() -> None:
    seen = {p.relative_to(ROOT).as_posix() for p in _text_files()}
    for expected in ("README.md", "spec/FORMAT.md", "distillgan/container.py", "tests/conftest.py", "tests/README.md",
                     "bench/run.py", "fuzz/README.md", "js/distillgan.mjs", "tests/support/appshapes.py"):
        assert expected in seen


def test_the_pattern_catches_each_kind_of_outside_reference() -> None:
    # the examples are assembled so that this file does not itself read as such a reference to other tools
    for line in ("see THREATS" + ".md", "from .." + "/shared/STYLE.md", "(issue " + "11.2)", "Issue 12 item 7",
                 "The issue sets it for 1 GiB", "found by this issue's review",
                 "the seed plan's API", "as in the seed app", "# --- 11.2 split view"):
        assert OUTSIDE.search(line), line
    for line in ("FORMAT.md §11.2", "seed=0", "torch.manual_seed(1)", "seeded with the vectors", "# --- split view"):
        assert not OUTSIDE.search(line), line


def test_no_file_refers_to_a_document_outside_the_repository() -> None:
    found = []
    for path in _text_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for m in OUTSIDE.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            found.append(f"{path.relative_to(ROOT).as_posix()}:{line}: {m.group(0)!r}")
    assert not found, "references to documents outside the repository:\n" + "\n".join(found)


def test_every_test_file_and_helper_is_in_the_tests_map() -> None:
    """tests/README.md maps each test file to what it specifies, and lists each helper module."""
    text = (ROOT / "tests" / "README.md").read_text(encoding="utf-8")
    here = ROOT / "tests"
    names = [p.name for p in here.glob("test_*.py")] + [f"support/{p.name}" for p in (here / "support").glob("*.py")]
    assert names
    missing = [n for n in names if f"`{n}`" not in text]
    assert not missing, f"not in tests/README.md: {missing}"
