"""spec/FORMAT.md moves with the code: every error code and every section the code cites is in it."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = (ROOT / "spec" / "FORMAT.md").read_text(encoding="utf-8")
SOURCE = {p.relative_to(ROOT / "distillgan").as_posix(): p.read_text(encoding="utf-8") for p in (ROOT / "distillgan").rglob("*.py")}


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


def test_the_code_vocabulary_is_the_spec_table_in_its_order() -> None:
    """errors.CODES (the ErrorCode Literal that mypy checks every raise against) is FORMAT.md §9's table, row by row."""
    from distillgan.errors import CODES

    section = SPEC[SPEC.index("## §9 ") : SPEC.index("## §10 ")]
    table = re.findall(r"^\| `([a-z0-9-]+)` \|", section, flags=re.MULTILINE)
    assert list(CODES) == table
    assert _codes_in_source() - set(CODES) == set()  # a code passed where mypy cannot see it is listed too


def test_every_cited_section_exists() -> None:
    headings = set(re.findall(r"^#+ (§\d+(?:\.\d+)?)", SPEC, flags=re.M))
    cited = {c for text in SOURCE.values() for c in re.findall(r"FORMAT\.md (§\d+(?:\.\d+)?)", text)}
    assert cited, "no citations found"
    assert cited - headings == set()


SUPERSCRIPT = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹", "0123456789")
UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


def _spec_number(text: str) -> int:
    """A value as §8 writes it: `0xFFFF`, 174 B, 100 000 000 B, 64 × 2²⁰ B, 2⁶⁴ − 1, −2⁶³, 16 KiB, 1 MiB/s, 120 s, 8 pickles."""
    text = text.strip().strip("`")
    if text.startswith("0x"):
        return int(text, 16)
    m = re.match(r"([−0-9   ×⁰¹²³⁴⁵⁶⁷⁸⁹]+?)\s*(?:(KiB|MiB|GiB|TiB|B)\b|[a-z(]|$)", text)
    assert m, f"cannot read the value {text!r} in FORMAT.md §8"
    expr = re.sub(r"[⁰¹²³⁴⁵⁶⁷⁸⁹]+", lambda e: "**" + e.group().translate(SUPERSCRIPT), m.group(1))
    expr = re.sub(r"[   ]", "", expr.replace("×", "*").replace("−", "-"))
    assert re.fullmatch(r"-?[0-9]+(\*\*?[0-9]+)*(-[0-9]+)?", expr), (text, expr)
    return eval(expr, {"__builtins__": {}}) * UNITS.get(m.group(2) or "B", 1)  # noqa: S307 - digits and operators only


def _limit_rows() -> list[tuple[list[str], list[str], list[int]]]:
    """(constants, modules, values) of every row of §8's table that names constants."""
    section = SPEC[SPEC.index("## §8 Limits") : SPEC.index("## §9 ")]
    rows = []
    for line in section.splitlines():
        m = re.match(r"^\| ((?:`[^`]+`(?:, | / )?)+) \(([a-z, ]+)\) \| ([^|]+) \|", line)
        if m:
            names = re.findall(r"`([^`]+)`", m.group(1))
            cell = re.sub(r"\([^)]*\)", "", m.group(3))
            values = [_spec_number(v) for v in (re.split(r", | / ", cell) if len(names) > 1 else [cell])]
            assert len(values) == len(names), line
            rows.append((names, m.group(2).split(", "), values))
    return rows


def test_limits_in_the_spec_match_the_code() -> None:
    """Every constant of FORMAT.md §8's table has, in each module named, the value the table gives."""
    import importlib

    rows = _limit_rows()
    table_rows = [ln for ln in SPEC[SPEC.index("## §8 Limits") : SPEC.index("## §9 ")].splitlines() if ln.startswith("| `")]
    assert len(rows) == len(table_rows) >= 25  # every row that names a constant was read
    checked = 0
    for names, modules, values in rows:
        for module in modules:
            mod = importlib.import_module(f"distillgan.{module}")
            for name, value in zip(names, values):
                length = re.fullmatch(r"len\((\w+)\)", name)
                actual = len(getattr(mod, length.group(1))) if length else getattr(mod, name)
                assert actual == value, f"FORMAT.md §8 gives {name} ({module}) = {value}; the code has {actual}"
                checked += 1
    assert checked >= 35
    assert _spec_number("64 × 2²⁰ B (64 MiB)") == 64 << 20 and _spec_number("2⁶⁴ − 1") == (1 << 64) - 1  # the reading itself
    assert _spec_number("−2⁶³") == -(1 << 63) and _spec_number("100 000 000 B") == 100_000_000 and _spec_number("1 MiB/s") == 1 << 20
    assert "0x6764" in SPEC and SOURCE["container.py"].count("PADDING_EXTRA_ID = 0x6764") == 1


def test_the_converter_codes_describe_the_converter() -> None:
    """§9 said bad-checkpoint meant "unreadable with weights_only=True"; the converter never calls torch.load at all."""
    row = next(line for line in SPEC.splitlines() if line.startswith("| `bad-checkpoint` |"))
    assert "torch.load" in row and "never unpickles" in row  # says what does not happen, and why
    for module in ["convert.py", *(name for name in SOURCE if name.startswith("pickled/"))]:
        assert "torch.load(" not in SOURCE[module] and "weights_only" not in SOURCE[module], module
    assert SOURCE["convert.py"].count('code="bad-checkpoint"') == 4  # the four cases the row lists
    assert "STATE_DICT_KEYS = (\"model_state_dict\", \"state_dict\", \"generator\", \"model\")" in SOURCE["convert.py"]
    assert "`model_state_dict`, `state_dict`, `generator` or `model`" in row


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
