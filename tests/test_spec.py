"""spec/FORMAT.md moves with the code: every error code and every section the code cites is in it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = (ROOT / "spec" / "FORMAT.md").read_text(encoding="utf-8")
SOURCE = {p.name: p.read_text(encoding="utf-8") for p in (ROOT / "distillgan").glob("*.py")}


def _codes_in_source() -> set[str]:
    codes = set()
    for text in SOURCE.values():
        codes |= set(re.findall(r'code="([a-z0-9-]+)"', text))
        codes |= set(re.findall(r'_fail\([^)]*?,\s*"([a-z0-9-]+)",?\s*\)', text, flags=re.S))
    return codes


def test_every_error_code_is_in_the_spec_table() -> None:
    table = set(re.findall(r"^\| `([a-z0-9-]+)` \|", SPEC, flags=re.M))
    codes = _codes_in_source()
    assert len(codes) > 40  # the extraction itself works
    assert codes - table == set()


def test_every_cited_section_exists() -> None:
    headings = set(re.findall(r"^#+ (§\d+(?:\.\d+)?)", SPEC, flags=re.M))
    cited = {c for text in SOURCE.values() for c in re.findall(r"FORMAT\.md (§\d+(?:\.\d+)?)", text)}
    assert cited, "no citations found"
    assert cited - headings == set()


def test_limits_in_the_spec_match_the_code() -> None:
    from distillgan import container, manifest, source, tensors, values

    assert "| `MAX_MANIFEST_BYTES` (manifest) | 8 × 2²⁰ B (8 MiB)" in SPEC and manifest.MAX_MANIFEST_BYTES == 8 << 20
    assert "| `MAX_HEADER_BYTES` (tensors) | 4 × 2²⁰ B (4 MiB)" in SPEC and tensors.MAX_HEADER_BYTES == 4 << 20
    assert "| `MAX_DEPTH` (values) | 64 |" in SPEC and values.MAX_DEPTH == 64
    assert "| `MAX_MEMBERS` (container) | 16 " in SPEC and container.MAX_MEMBERS == 16
    assert "| `MAX_FILE_BYTES` (source) | 2⁴⁰ B (1 TiB)" in SPEC and source.MAX_FILE_BYTES == 1 << 40
    assert "0x6764" in SPEC and container.PADDING_EXTRA_ID == 0x6764
