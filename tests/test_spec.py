"""spec/FORMAT.md moves with the code: every error code and every section the code cites is in it."""

from __future__ import annotations

import json
import re
import zipfile
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

    assert "| `MAX_MANIFEST_BYTES` (manifest) | 64 × 2²⁰ B (64 MiB)" in SPEC and manifest.MAX_MANIFEST_BYTES == 64 << 20
    assert "| `MAX_HEADER_BYTES` (tensors) | 100 000 000 B" in SPEC and tensors.MAX_HEADER_BYTES == 100_000_000
    assert "| `MAX_HEADER_DEPTH` (tensors) | 3 |" in SPEC and tensors.MAX_HEADER_DEPTH == 3
    assert "| `MAX_TENSORS` (tensors) | 2²⁰ (1 048 576) per member |" in SPEC and tensors.MAX_TENSORS == 1 << 20
    assert "| `MAX_DEPTH` (values) | 64 |" in SPEC and values.MAX_DEPTH == 64
    assert "| `MAX_MEMBERS` (container) | 16 " in SPEC and container.MAX_MEMBERS == 16
    assert "| `MAX_FILE_BYTES` (source) | 2⁴⁰ B (1 TiB)" in SPEC and source.MAX_FILE_BYTES == 1 << 40
    assert "0x6764" in SPEC and container.PADDING_EXTRA_ID == 0x6764


# --- the manifest's JSON Schema (spec/manifest.schema.json) beside FORMAT.md §4 ---------------------

SCHEMA_LIMITS = {  # invalid vectors whose defect JSON Schema cannot state (the schema's description lists why)
    "invalid/type-epochs-float",  # 3.0 is an integer to JSON Schema
    "invalid/version-float",  # 1.0 equals the const 1
    "invalid/tag-map-duplicate-key",  # distinct first elements of pairs
    "invalid/format-not-first",  # key order
}
SCHEMA_CODES = {"manifest-missing-key", "manifest-unknown-key", "manifest-tag", "manifest-type", "manifest-value", "version-newer",
                "manifest-not-map", "manifest-format", "manifest-version", "manifest-duplicate-key"}


def _schema_validator():
    import jsonschema

    schema = json.loads((ROOT / "spec" / "manifest.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_every_valid_vector_manifest_follows_the_schema() -> None:
    validator = _schema_validator()
    index = json.loads((ROOT / "spec" / "vectors" / "index.json").read_text(encoding="utf-8"))["vectors"]
    valid = [v for v in index if v["valid"]]
    assert len(valid) > 10
    for v in valid:
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:120]}" for e in validator.iter_errors(v["expected"]["manifest"])]
        assert not errors, (v["id"], errors[:3])


def test_the_schema_refuses_the_schema_level_invalid_vectors() -> None:
    """Every invalid vector whose manifest decodes and whose defect is a schema rule fails the schema too."""
    from distillgan import manifest
    from distillgan.values import json_view

    validator = _schema_validator()
    index = json.loads((ROOT / "spec" / "vectors" / "index.json").read_text(encoding="utf-8"))["vectors"]
    checked = 0
    for v in index:
        if v["valid"] or v["expected"]["code"] not in SCHEMA_CODES or v["id"] in SCHEMA_LIMITS:
            continue
        try:
            with zipfile.ZipFile(ROOT / "spec" / "vectors" / v["file"]) as z:
                decoded = manifest.unpack(z.read("manifest.msgpack"))
        except Exception:  # noqa: BLE001 - the defect is below the schema (zip, msgpack): nothing to project
            continue
        checked += 1
        assert not validator.is_valid(json_view(decoded)), v["id"]
    assert checked > 50
