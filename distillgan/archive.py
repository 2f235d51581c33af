"""The archive: container + manifest + tensor members (FORMAT.md §2).

``write_archive`` streams a manifest and tensor members into a file;
``open_archive`` validates every layer and hands out tensors as views of one
copy-on-write mapping; ``inspect`` and ``verify`` work without torch.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from . import container as zc
from .errors import InputError, IntegrityError, ManifestError, TensorError
from .legacy import check_not_legacy
from .manifest import MAX_MANIFEST_BYTES, PLACEHOLDER_KEYS, decode_manifest, encode_manifest
from .tensors import (
    ANALYSIS_PREFIX,
    TensorTable,
    build_header,
    check_name,
    check_storable,
    dtype_code,
    parse_header,
    plain_tensor,
    tensor_bytes,
    tensor_from,
    unique_views,
)

if TYPE_CHECKING:
    import torch

TENSOR_MEMBERS = (zc.MODEL_NAME, zc.VOCODER_NAME)


# --- writing ------------------------------------------------------------------------


def _member_chunks(header: bytes, layout: list[Any], stored: Mapping[str, Any]) -> Iterator[memoryview | bytes]:
    import ctypes

    yield header
    for info in layout:
        t = plain_tensor(stored[info.name], f"tensor {info.name!r}")
        view = tensor_bytes(t)
        if not view.nbytes:
            continue
        holder = view.obj  # the ctypes array; pin the tensor to it so it outlives pending CRC work
        if isinstance(holder, ctypes.Array):
            holder._owner = t  # type: ignore[attr-defined]
        for start in range(0, view.nbytes, zc._CHUNK):
            yield view[start : start + zc._CHUNK]


def write_archive(f: BinaryIO, manifest: Mapping[str, Any], members: Mapping[str, Mapping[str, Any]]) -> int:
    """Write one archive into ``f`` (seekable, at offset 0); return its size.

    ``manifest`` holds every manifest key except ``members``, which is filled
    in here; ``members`` maps ``model.safetensors`` (and optionally
    ``vocoder.safetensors``) to name -> tensor mappings. Identical views are
    stored once and recorded as aliases.
    """
    plans = []
    member_info: dict[str, dict[str, Any]] = {}
    for name in TENSOR_MEMBERS:
        if name not in members:
            continue
        stored, aliases = unique_views(members[name])
        entries = []
        for tname, t in stored.items():
            check_name(tname, name, InputError)
            check_storable(t, f"{name}: tensor {tname!r}")
            entries.append((tname, dtype_code(t.dtype), tuple(t.shape)))
        for alias in aliases:
            check_name(alias, name, InputError)
        header, layout = build_header(entries)
        size = len(header) + sum(info.nbytes for info in layout)
        plans.append((name, size, header, layout, stored))
        member_info[name] = {"size": size, "aliases": aliases}
    full = dict(manifest)
    full["members"] = member_info
    mbytes = encode_manifest(full)
    writer = zc.ContainerWriter(f)
    try:
        writer.write_member(zc.MANIFEST_NAME, len(mbytes), [mbytes])
        for name, size, header, layout, stored in plans:
            writer.write_member(name, size, _member_chunks(header, layout, stored))
        return writer.finish()
    except BaseException:
        writer.abort()
        raise


# --- reading ------------------------------------------------------------------------


@dataclass
class Archive:
    """A validated archive: members, manifest and tensor tables over one mapping."""

    path: str
    file: zc.MappedFile
    members: list[zc.Member]
    manifest: dict[str, Any]
    tables: dict[str, TensorTable]

    @property
    def buffer(self) -> Any:
        return self.file.buffer

    def tensors(self, member: str) -> dict[str, torch.Tensor]:
        """Tensors of one member as views of the mapping; aliases share their target."""
        table = self.tables[member]
        where = member
        self.file.exported = True
        out = {info.name: tensor_from(self.buffer, info, table.data_start, where) for info in table.tensors}
        for alias, target in self.manifest["members"][member]["aliases"].items():
            out[alias] = out[target]
        return out

    def check_crcs(self, *, members: tuple[str, ...] | None = None) -> None:
        """CRC-32 of every (or the named) member, two threads per member."""
        with ThreadPoolExecutor(max_workers=2) as pool:
            for m in self.members:
                if members is None or m.name in members:
                    actual = zc.parallel_crc32(self.buffer, m.data_offset, m.size, pool, 2)
                    if actual != m.crc32:
                        raise IntegrityError(
                            f"member {m.name!r}: CRC-32 is 0x{actual:08x}; the directory records 0x{m.crc32:08x}",
                            code="crc-mismatch",
                        )

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _walk_placeholders(value: Any, found: list[tuple[str, str, str]], where: str) -> None:
    if isinstance(value, dict):
        keys = [k for k in value if k in PLACEHOLDER_KEYS]
        if keys:
            if len(value) != 1 or not isinstance(value[keys[0]], str):
                raise ManifestError(
                    f"{where}: a map with {keys[0]!r} must have that single key with a str value (FORMAT.md §4.4)",
                    code="manifest-type",
                )
            found.append((keys[0], value[keys[0]], where))
            return
        for k, v in value.items():
            _walk_placeholders(v, found, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _walk_placeholders(v, found, f"{where}[{i}]")


def _cross_check(manifest: dict[str, Any], members: list[zc.Member], tables: dict[str, TensorTable]) -> None:
    """Manifest versus members: presence, sizes, aliases, analysis references (FORMAT.md §6)."""
    names = [m.name for m in members[1:]]
    declared = manifest["members"]
    if sorted(names) != sorted(declared):
        raise ManifestError(
            f"the archive holds {names} but the manifest declares {sorted(declared)} (FORMAT.md §6)", code="manifest-mismatch"
        )
    for m in members[1:]:
        if declared[m.name]["size"] != m.size:
            raise ManifestError(
                f"$.members.{m.name}.size is {declared[m.name]['size']}; the member holds {m.size} bytes (FORMAT.md §6)",
                code="manifest-mismatch",
            )
        stored = {t.name for t in tables[m.name].tensors}
        for alias, target in declared[m.name]["aliases"].items():
            check_name(alias, f"$.members.{m.name}.aliases")
            if alias in stored or target not in stored:
                raise ManifestError(
                    f"$.members.{m.name}.aliases: {alias!r} -> {target!r} must name a new tensor and a stored one (FORMAT.md §6)",
                    code="manifest-mismatch",
                )
    found: list[tuple[str, str, str]] = []
    if manifest["analysis"] is not None:
        _walk_placeholders(manifest["analysis"], found, "$.analysis")
    model_names = {t.name for t in tables[zc.MODEL_NAME].tensors}
    analysis_names = {n for n in model_names if n.startswith(ANALYSIS_PREFIX)}
    referenced = [name for _, name, _ in found]
    for _, name, where in found:
        if name not in analysis_names:
            raise ManifestError(
                f"{where} refers to tensor {name!r}, which is not an {ANALYSIS_PREFIX}* tensor of model.safetensors (FORMAT.md §4.4)",
                code="manifest-mismatch",
            )
    if len(set(referenced)) != len(referenced) or set(referenced) != analysis_names:
        raise ManifestError(
            f"analysis tensors {sorted(analysis_names)} and analysis references {sorted(referenced)} must match one to one (FORMAT.md §4.4)",
            code="manifest-mismatch",
        )
    if any(a.startswith(ANALYSIS_PREFIX) for a in declared[zc.MODEL_NAME]["aliases"]):
        raise ManifestError(f"aliases may not use the reserved prefix {ANALYSIS_PREFIX!r}", code="manifest-mismatch")


def open_archive(path: str | os.PathLike[str], *, copy_on_write: bool = False) -> Archive:
    """Open and validate every layer of an archive; tensor data is not read.

    With ``copy_on_write`` the mapping is private, so tensors made from it may
    be modified without touching the file.
    """
    mf = zc.MappedFile(path, copy_on_write=copy_on_write)
    try:
        buf = mf.buffer
        check_not_legacy(buf)
        members = zc.read_container(buf)
        m0 = members[0]
        if m0.size > MAX_MANIFEST_BYTES:
            raise ManifestError(
                f"manifest member is {m0.size} bytes; the limit is {MAX_MANIFEST_BYTES} (FORMAT.md §8)", code="manifest-too-large"
            )
        zc.check_crc(buf, m0)
        manifest = decode_manifest(bytes(buf[m0.data_offset : m0.data_offset + m0.size]))
        if len(members) != len(manifest["members"]) + 1:
            raise ManifestError(
                f"the archive holds {len(members) - 1} tensor members; the manifest declares {len(manifest['members'])} (FORMAT.md §6)",
                code="manifest-mismatch",
            )
        tables = {m.name: parse_header(buf, m.data_offset, m.size, m.name) for m in members[1:]}
        _cross_check(manifest, members, tables)
        return Archive(os.fspath(path), mf, members, manifest, tables)
    except BaseException:
        mf.close()
        raise


# --- inspect / verify -------------------------------------------------------------


def _describe(archive: Archive) -> dict[str, Any]:
    manifest = archive.manifest
    tensors = {}
    for name, table in archive.tables.items():
        tensors[name] = [
            {
                "name": t.name,
                "dtype": t.dtype,
                "shape": list(t.shape),
                "bytes": t.nbytes,
                "data_offset": table.data_start + t.begin,
            }
            for t in table.tensors
        ]
    return {
        "format": manifest["format"],
        "version": manifest["version"],
        "file_size": archive.file.size,
        "members": [
            {"name": m.name, "header_offset": m.header_offset, "data_offset": m.data_offset, "size": m.size, "crc32": m.crc32}
            for m in archive.members
        ],
        "manifest": manifest,
        "tensors": tensors,
    }


def inspect(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Describe an archive without torch and without reading tensor data.

    Returns a JSON-serialisable dict: format, version, file_size, members
    (name, header_offset, data_offset, size, crc32), the manifest, and per
    tensor member a table of name, dtype, shape, bytes and data_offset.
    Raises :class:`~distillgan.DistillganError` for any invalid file.
    """
    with open_archive(path) as archive:
        return _describe(archive)


def _check_bools(archive: Archive) -> None:
    for member, table in archive.tables.items():
        for t in table.tensors:
            if t.dtype == "BOOL" and t.nbytes:
                start = table.data_start + t.begin
                if bytes(archive.buffer[start : start + t.nbytes]).translate(None, b"\x00\x01"):
                    raise TensorError(
                        f"{member}: tensor {t.name!r} holds bool bytes other than 0 and 1 (FORMAT.md §5.3)", code="st-bool"
                    )


def verify(path: str | os.PathLike[str], *, sha256: str | None = None) -> dict[str, Any]:
    """Check every layer and every member's CRC-32 (and, if given, the file's SHA-256).

    Returns the :func:`inspect` description plus ``sha256`` when it was
    checked. Raises :class:`~distillgan.IntegrityError` on a checksum
    mismatch and other :class:`~distillgan.DistillganError` subclasses for
    structural defects.
    """
    with open_archive(path) as archive:
        info = _describe(archive)
        if sha256 is not None:
            with ThreadPoolExecutor(max_workers=1) as pool:
                digest_future = pool.submit(_sha256_of, archive.buffer)
                archive.check_crcs()
                digest = digest_future.result()
            if digest != sha256.strip().lower():
                raise IntegrityError(f"SHA-256 of the file is {digest}; expected {sha256.strip().lower()}", code="sha256-mismatch")
            info["sha256"] = digest
        else:
            archive.check_crcs()
        _check_bools(archive)
        return info


def _sha256_of(buf: Any) -> str:
    h = hashlib.sha256()
    view = memoryview(buf)
    try:
        for start in range(0, len(view), zc._CHUNK):
            h.update(view[start : start + zc._CHUNK])
    finally:
        view.release()
    return h.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a whole file, hex (a stable identity of a deterministic archive)."""
    with zc.MappedFile(path) as mf:
        return _sha256_of(mf.buffer)
