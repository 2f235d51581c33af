"""The archive: container + manifest + tensor members (FORMAT.md §2).

``write_archive`` streams a manifest and tensor members into a file;
``open_archive`` validates every layer and hands out tensors as views of one
copy-on-write mapping; ``inspect`` and ``verify`` work without torch.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

from . import container as zc
from .errors import ContainerError, InputError, IntegrityError, ManifestError, TensorError
from .legacy import check_not_legacy
from .source import MappedFile, RemoteSource, open_source
from .manifest import MAX_MANIFEST_BYTES, PLACEHOLDER_KEYS, decode_manifest, encode_manifest
from .tensors import (
    ANALYSIS_PREFIX,
    MAX_HEADER_BYTES,
    MAX_TENSORS,
    TensorInfo,
    TensorTable,
    build_header,
    check_name,
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


Progress = Callable[[int, int], None]  # (bytes done, bytes in all) — may be called from worker threads


def _counter(progress: Progress | None, total: int) -> Callable[[int], None] | None:
    """Turn byte increments (from any thread) into progress(done, total) calls."""
    if progress is None:
        return None
    lock = threading.Lock()
    done = [0]

    def tick(n: int) -> None:
        with lock:
            done[0] += n
            progress(done[0], total)

    return tick


# --- writing ------------------------------------------------------------------------


_SMALL = 1 << 20  # tensors below this are copied into a shared block: one write and one CRC step per block
_BLOCK = 4 << 20


def _member_chunks(header: bytes, layout: list[Any], stored: Mapping[str, Any]) -> Iterator[memoryview | bytes]:
    """The bytes of one safetensors member: header, then each tensor's bytes in layout order.

    Large tensors are yielded as views of their own memory (no copy); small
    ones are gathered into fresh 4 MiB blocks so that a model of many small
    tensors costs a few large writes instead of one syscall and one CRC job
    per tensor. Views hold their tensor alive until the writer is done.
    """
    import ctypes

    import torch

    block = bytearray(header)
    for info in layout:
        t = plain_tensor(stored[info.name], f"tensor {info.name!r}")
        if info.dtype == "BOOL" and t.numel() and bool((t.view(torch.uint8) > 1).any()):
            raise InputError(f"tensor {info.name!r}: a bool tensor holds bytes other than 0 and 1 (FORMAT.md §5.3)", code="st-bool")
        view = tensor_bytes(t)
        if not view.nbytes:
            continue
        if view.nbytes < _SMALL:
            block += view
            if len(block) >= _BLOCK:
                yield block
                block = bytearray()
            continue
        if block:
            yield block
            block = bytearray()
        holder = view.obj  # the ctypes array; pin the tensor to it so it outlives pending CRC work
        if isinstance(holder, ctypes.Array):
            holder._owner = t  # type: ignore[attr-defined]
        for start in range(0, view.nbytes, zc._CHUNK):
            yield view[start : start + zc._CHUNK]
    if block:
        yield block


def write_archive(
    f: BinaryIO, manifest: Mapping[str, Any], members: Mapping[str, Mapping[str, Any]], *, progress: Progress | None = None
) -> int:
    """Write one archive into ``f`` (seekable, at offset 0); return its size.

    ``manifest`` holds every manifest key except ``members``, which is filled
    in here; ``members`` maps ``model.safetensors`` (and optionally
    ``vocoder.safetensors``) to name -> tensor mappings. Identical views are
    stored once and recorded as aliases. ``progress(done, total)`` is called
    as tensor bytes are written.
    """
    plans = []
    member_info: dict[str, dict[str, Any]] = {}
    for name in TENSOR_MEMBERS:
        if name not in members:
            continue
        stored, aliases = unique_views(members[name])
        entries = [(tname, dtype_code(t.dtype), tuple(t.shape)) for tname, t in stored.items()]  # names and tensors checked by unique_views
        header, layout = build_header(entries)
        if len(header) - 8 > MAX_HEADER_BYTES or len(layout) > MAX_TENSORS:
            raise InputError(
                f"{name}: {len(layout)} tensors need a {len(header) - 8}-byte header; the limits are "
                f"{MAX_TENSORS} tensors and {MAX_HEADER_BYTES} bytes (FORMAT.md §8)",
                code="st-header-size",
            )
        size = len(header) + sum(info.nbytes for info in layout)
        plans.append((name, size, header, layout, stored))
        member_info[name] = {"size": size, "aliases": aliases}
    full = dict(manifest)
    full["members"] = member_info
    mbytes = encode_manifest(full)
    try:  # never write what our own reader would refuse
        decode_manifest(mbytes)
    except ManifestError as e:
        raise InputError(f"the manifest would not be valid: {e}", code=e.code) from e
    writer = zc.ContainerWriter(f, tick=_counter(progress, sum(p[1] for p in plans)))
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
    """A validated archive: members, manifest and tensor tables over one source.

    ``source`` is a :class:`~distillgan.source.MappedFile` for local paths
    (tensors are views of its copy-on-write mapping) or a
    :class:`~distillgan.source.RemoteSource` for URLs (tensor members are
    downloaded whole, CRC-checked on the way, when first needed).
    """

    path: str
    source: MappedFile | RemoteSource
    members: list[zc.Member]
    manifest: dict[str, Any]
    tables: dict[str, TensorTable]
    _downloaded: dict[str, bytearray] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return self.source.size

    def _member(self, name: str) -> zc.Member:
        return next(m for m in self.members if m.name == name)

    def member_data(self, name: str) -> tuple[Any, int]:
        """(buffer, file offset of its first byte) holding member ``name``'s bytes."""
        if isinstance(self.source, MappedFile):
            return self.source.buffer, 0
        if name not in self._downloaded:
            m = self._member(name)
            data = bytearray(m.size)
            pos, crc = 0, 0
            for chunk in self.source.read_stream(m.data_offset, m.size):
                data[pos : pos + len(chunk)] = chunk
                crc = zc.crc32(chunk, crc)
                pos += len(chunk)
            _check_crc(m, crc)  # the data came over the network anyway: hashing it is nearly free
            self._downloaded[name] = data
        return self._downloaded[name], self._member(name).data_offset

    def tensor_bytes(self, member: str, info: TensorInfo) -> memoryview:
        """A read-only view of one stored tensor's bytes (no torch needed)."""
        buf, base = self.member_data(member)
        start = self.tables[member].data_start + info.begin - base
        return memoryview(buf).toreadonly()[start : start + info.nbytes]

    def tensors(self, member: str) -> dict[str, torch.Tensor]:
        """Tensors of one member as views of the mapping (or download); aliases share their target."""
        table = self.tables[member]
        buf, base = self.member_data(member)
        if isinstance(self.source, MappedFile):
            self.source.exported = True
        out = {info.name: tensor_from(buf, info, table.data_start - base, member) for info in table.tensors}
        for alias, target in self.manifest["members"][member]["aliases"].items():
            out[alias] = out[target]
        return out

    def check_crcs(self, *, progress: Progress | None = None) -> None:
        """CRC-32 of every member; two threads per member on local files."""
        tick = _counter(progress, sum(m.size for m in self.members))
        if not isinstance(self.source, MappedFile):
            for m in self.members:
                crc = 0
                for chunk in self.source.read_stream(m.data_offset, m.size):
                    crc = zc.crc32(chunk, crc)
                    if tick is not None:
                        tick(len(chunk))
                _check_crc(m, crc)
            return
        with ThreadPoolExecutor(max_workers=2) as pool:
            for m in self.members:
                _check_crc(m, zc.parallel_crc32(self.source.buffer, m.data_offset, m.size, pool, 2, tick))

    def sha256(self) -> str:
        """SHA-256 of the whole file, hex."""
        return _sha256_of(self.source)

    def close(self) -> None:
        self.source.close()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_crc(member: zc.Member, actual: int) -> None:
    if actual != member.crc32:
        raise IntegrityError(
            f"member {member.name!r}: CRC-32 is 0x{actual:08x}; the directory records 0x{member.crc32:08x} (FORMAT.md §6)",
            code="crc-mismatch",
        )


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


def _check_v1_members(manifest: dict[str, Any], members: list[zc.Member]) -> None:
    """The v1 member set, checked once the manifest says the file is v1 (FORMAT.md §3.1, §4.5)."""
    names = [m.name for m in members]
    if len(names) > len(zc.MEMBER_ORDER):
        raise ContainerError(f"archive has {len(names)} members {names}; v1 has 2 or 3 (FORMAT.md §3.1)", code="zip-entry-count")
    expected = list(zc.MEMBER_ORDER[: len(names)])
    if names != expected:
        raise ContainerError(f"members are {names}; expected {expected} in that order (FORMAT.md §3.1)", code="zip-member-name")
    declared = sorted(manifest["members"])
    if sorted(names[1:]) != declared:
        raise ManifestError(
            f"the archive holds {names[1:]} but the manifest declares {declared} (FORMAT.md §6)", code="manifest-mismatch"
        )


def _cross_check(manifest: dict[str, Any], members: list[zc.Member], tables: dict[str, TensorTable]) -> None:
    """Manifest versus members: sizes, aliases, analysis references (FORMAT.md §6)."""
    declared = manifest["members"]
    for m in members[1:]:
        if declared[m.name]["size"] != m.size:
            raise ManifestError(
                f"$.members.{m.name}.size is {declared[m.name]['size']}; the member holds {m.size} bytes (FORMAT.md §6)",
                code="manifest-mismatch",
            )
        stored = {t.name for t in tables[m.name].tensors}
        for alias, target in declared[m.name]["aliases"].items():
            check_name(alias, f"$.members.{m.name}.aliases", ManifestError)
            if alias in stored or target not in stored or alias.startswith(ANALYSIS_PREFIX) or target.startswith(ANALYSIS_PREFIX):
                raise ManifestError(
                    f"$.members.{m.name}.aliases: {alias!r} -> {target!r} must name a new tensor and a stored one, "
                    f"neither under {ANALYSIS_PREFIX!r} (FORMAT.md §5.5)",
                    code="manifest-mismatch",
                )
    found: list[tuple[str, str, str]] = []
    if manifest["analysis"] is not None:
        _walk_placeholders(manifest["analysis"], found, "$.analysis")
    analysis_names = {t.name for t in tables[zc.MODEL_NAME].tensors if t.name.startswith(ANALYSIS_PREFIX)}
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


def open_archive(path: str | os.PathLike[str]) -> Archive:
    """Open and validate every layer of an archive (a path or an fsspec URL); tensor data is not read.

    A local file is mapped privately (copy-on-write), so tensors made from
    it may be modified without touching the file.
    """
    src = open_source(path)
    try:
        check_not_legacy(src)
        members = zc.read_container(src)
        m0 = members[0]
        if m0.size > MAX_MANIFEST_BYTES:
            raise ManifestError(
                f"manifest member is {m0.size} bytes; the limit is {MAX_MANIFEST_BYTES} (FORMAT.md §8)", code="manifest-too-large"
            )
        raw = src.read(m0.data_offset, m0.size)
        _check_crc(m0, zc.crc32(raw))
        manifest = decode_manifest(raw)
        _check_v1_members(manifest, members)
        tables = {m.name: parse_header(src, m.data_offset, m.size, m.name) for m in members[1:]}
        _cross_check(manifest, members, tables)
        return Archive(os.fspath(path), src, members, manifest, tables)
    except BaseException:
        src.close()
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
        "file_size": archive.size,
        "members": [
            {"name": m.name, "header_offset": m.header_offset, "data_offset": m.data_offset, "size": m.size, "crc32": m.crc32}
            for m in archive.members
        ],
        "manifest": manifest,
        "tensors": tensors,
    }


def inspect(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Describe an archive (a path or an fsspec URL) without torch and without reading tensor data.

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
            if t.dtype == "BOOL" and t.nbytes and bytes(archive.tensor_bytes(member, t)).translate(None, b"\x00\x01"):
                raise TensorError(f"{member}: tensor {t.name!r} holds bool bytes other than 0 and 1 (FORMAT.md §5.3)", code="st-bool")


def verify(path: str | os.PathLike[str], *, sha256: str | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Check every layer and every member's CRC-32 (and, if given, the file's SHA-256).

    Returns the :func:`inspect` description plus ``sha256`` when it was
    checked. Raises :class:`~distillgan.IntegrityError` on a checksum
    mismatch and other :class:`~distillgan.DistillganError` subclasses for
    structural defects. ``progress(done, total)`` reports CRC progress.
    """
    with open_archive(path) as archive:
        info = _describe(archive)
        if sha256 is not None:
            want = sha256.strip().lower()
            with ThreadPoolExecutor(max_workers=1) as pool:
                digest_future = pool.submit(archive.sha256)
                archive.check_crcs(progress=progress)
                digest = digest_future.result()
            if digest != want:
                raise IntegrityError(f"SHA-256 of the file is {digest}; expected {want}", code="sha256-mismatch")
            info["sha256"] = digest
        else:
            archive.check_crcs(progress=progress)
        _check_bools(archive)
        return info


def _sha256_of(src: MappedFile | RemoteSource) -> str:
    h = hashlib.sha256()
    if isinstance(src, MappedFile):
        view = memoryview(src.buffer)
        try:
            for start in range(0, len(view), zc._CHUNK):
                h.update(view[start : start + zc._CHUNK])  # hashlib releases the GIL on large updates
        finally:
            view.release()
    else:
        for chunk in src.read_stream(0, src.size):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a whole file (path or URL), hex: a stable identity of a deterministic archive."""
    src = open_source(path)
    try:
        return _sha256_of(src)
    finally:
        src.close()
