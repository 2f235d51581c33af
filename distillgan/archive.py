"""The archive: container + manifest + tensor members (FORMAT.md §2).

``write_archive`` streams a manifest and tensor members into a file;
``open_archive`` validates every layer and hands out tensors as views of one
copy-on-write mapping; ``inspect`` and ``verify`` work without torch.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from . import container as zc
from .crc import CHUNK, SPLIT, crc32, crc32_combine, parallel_crc32
from .errors import ContainerError, InputError, IntegrityError, ManifestError, TensorError
from .legacy import check_not_legacy
from .source import Source, file_sha256, open_source, sha256_of
from .manifest import (
    MAX_MANIFEST_BYTES,
    MODEL_FORMAT_MARKER,
    SAVED_MODEL_VERSION,
    TOP_KEYS,
    VALUE_SLOTS,
    Manifest,
    decode_manifest,
    encode_manifest,
    slot_member,
)
from .tensors import (
    DTYPES,
    MAX_HEADER_BYTES,
    MAX_TENSORS,
    TensorInfo,
    TensorTable,
    as_numpy,
    bool_tensor_ok,
    build_header,
    check_name,
    dtype_code,
    gc_paused,
    parse_header,
    plain_tensor,
    tensor_bytes,
    tensor_from,
    unique_views,
)
from .values import FLOAT_DTYPES, NUMPY_DTYPES, Ref, Splitter, json_view, render_path, substitute

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


_SMALL = 1 << 20  # tensors below this are written in batches: one vectored write per batch
_BATCH_BYTES = 4 << 20
_BATCH_VIEWS = 512  # below the IOV_MAX of every POSIX system (1024 on Linux and macOS)


def _member_chunks(header: bytes, layout: list[Any], stored: Mapping[str, Any]) -> Iterator[bytes | memoryview | list[memoryview]]:
    """The bytes of one safetensors member: header, then each tensor's bytes in layout order.

    Every tensor is yielded as views of its own memory (no copy). Large tensors
    come as 8 MiB views; small ones are batched into lists of views (up to 4 MiB
    or 512 views), which the writer hands to one vectored write
    (``ContainerWriter.write_member``), so that a model of many small tensors
    costs a few system calls instead of one per tensor. Each view pins its
    tensor until the writer is done with it (its CRC may still be pending).
    """
    import ctypes

    batch: list[memoryview] = [memoryview(header)]
    batch_bytes = len(header)
    for info in layout:
        t = plain_tensor(stored[info.name], f"tensor {info.name!r}")
        if info.dtype == "BOOL" and not bool_tensor_ok(t):
            raise InputError(f"tensor {info.name!r}: a bool tensor holds bytes other than 0 and 1 (FORMAT.md §5.3)", code="st-bool")
        view = tensor_bytes(t)
        if not view.nbytes:
            continue
        holder = view.obj  # the ctypes array; pin the tensor to it so it outlives pending writes and CRC work
        if isinstance(holder, ctypes.Array):
            holder._owner = t  # type: ignore[attr-defined]
        if view.nbytes < _SMALL:
            batch.append(view)
            batch_bytes += view.nbytes
            if batch_bytes >= _BATCH_BYTES or len(batch) >= _BATCH_VIEWS:
                yield batch
                batch, batch_bytes = [], 0
            continue
        if batch:
            yield batch
            batch, batch_bytes = [], 0
        for start in range(0, view.nbytes, CHUNK):
            yield view[start : start + CHUNK]
    if batch:
        yield batch


@dataclass
class ArchivePlan:
    """An archive ready to write: its manifest (raw and encoded) and each tensor member's layout."""

    raw: dict[str, Any]
    manifest_bytes: bytes
    members: list[tuple[str, int, Callable[[], Iterator[bytes | memoryview | list[memoryview]]]]]  # name, size, its bytes

    @property
    def tensor_bytes(self) -> int:
        return sum(m[1] for m in self.members)


def plan_archive(manifest: Mapping[str, Any]) -> ArchivePlan:
    """Encode a manifest and lay out its tensor members; nothing is written (see :func:`write_archive`).

    Raises :class:`InputError` naming the path of any value that cannot be
    stored, and for limits exceeded.
    """
    raw: dict[str, Any] = {"format": MODEL_FORMAT_MARKER, "version": SAVED_MODEL_VERSION}
    unknown = sorted(set(manifest) - set(TOP_KEYS))
    if unknown:
        raise InputError(f"manifest key {unknown[0]!r} is not one of {', '.join(TOP_KEYS[2:])}", code="invalid-input")
    splitter = Splitter()
    for key in TOP_KEYS[2:]:
        if key == "members":
            continue
        value = manifest.get(key)
        raw[key] = splitter.encode(value, (key,), slot_member(key)) if key in VALUE_SLOTS else value
    present = [zc.MODEL_NAME] + ([zc.VOCODER_NAME] if manifest.get("vocoder_state") is not None else [])
    plans = []
    raw["members"] = {}
    for name in present:
        size, chunks, aliases = plan_member(name, [c for c in splitter.claims if c.member == name])
        plans.append((name, size, chunks))
        raw["members"][name] = {"size": size, "aliases": aliases}
    return ArchivePlan(raw, encode_checked(raw), plans)


def plan_member(name: str, claims: list[Any]) -> tuple[int, Callable[[], Iterator[bytes | memoryview | list[memoryview]]], dict[str, str]]:
    """(size, bytes, aliases) of one safetensors member holding the tensors of ``claims``."""
    tensors = {c.name: c.tensor for c in claims}
    kinds = {c.name: (c.kind, c.requires_grad) for c in claims}
    stored, aliases = unique_views(tensors, kinds)
    entries = [(tname, dtype_code(t.dtype), tuple(t.shape)) for tname, t in stored.items()]  # names and tensors checked by unique_views
    header, layout = build_header(entries)
    if len(header) - 8 > MAX_HEADER_BYTES or len(layout) > MAX_TENSORS:
        raise InputError(
            f"{name}: {len(layout)} tensors need a {len(header) - 8}-byte header; the limits are "
            f"{MAX_TENSORS} tensors and {MAX_HEADER_BYTES} bytes (FORMAT.md §8)",
            code="st-header-size",
        )
    size = len(header) + sum(info.nbytes for info in layout)
    return size, lambda: _member_chunks(header, layout, stored), aliases


def encode_checked(raw: dict[str, Any]) -> bytes:
    """The manifest's bytes, after checking that our own reader accepts them (never write what it would refuse)."""
    mbytes = encode_manifest(raw)
    try:
        decode_manifest(mbytes)
    except ManifestError as e:
        raise InputError(f"the manifest would not be valid: {e}", code=e.code) from e
    return mbytes


def write_archive(f: BinaryIO, manifest: Mapping[str, Any] | ArchivePlan, *, progress: Progress | None = None) -> int:
    """Write one archive into ``f`` (seekable, at offset 0); return its size.

    ``manifest`` maps every top-level manifest key except ``format``,
    ``version`` and ``members`` (filled in here): ``latent_dim``,
    ``metadata`` (a map of FORMAT.md §4.3, see
    :func:`~distillgan.manifest.coerce_metadata`) and the value slots
    (``state_dict``, ``spectrogram_config``, ``training_config``,
    ``analysis``, ``vocoder_state``, ``extra``) as Python trees holding
    tensors and numpy arrays anywhere (or it is a :func:`plan_archive`
    result). Tensors under ``vocoder_state`` go to ``vocoder.safetensors``,
    the others to ``model.safetensors``; identical views are stored once and
    recorded as aliases. ``progress(done, total)`` is called as the members'
    bytes are written (the manifest's included); the last call has ``done == total``.
    """
    plan = manifest if isinstance(manifest, ArchivePlan) else plan_archive(manifest)
    writer = zc.ContainerWriter(f, tick=_counter(progress, len(plan.manifest_bytes) + plan.tensor_bytes))
    try:
        writer.write_member(zc.MANIFEST_NAME, len(plan.manifest_bytes), [plan.manifest_bytes])
        for name, size, chunks in plan.members:
            writer.write_member(name, size, chunks())
        return writer.finish()
    except BaseException:
        writer.abort()
        raise


# --- reading ------------------------------------------------------------------------


@dataclass
class Archive:
    """A validated archive: members, manifest and tensor tables over one source.

    ``source`` is a :class:`~distillgan.source.Source`: one that can map (a local file) gives
    tensors that are views of its copy-on-write mapping; one that cannot (a URL) has its tensor
    members downloaded whole, CRC-checked on the way, when first needed, and kept: the bytes
    checked are the bytes used (FORMAT.md §12).
    """

    path: str
    source: Source
    members: list[zc.Member]
    decoded: Manifest
    tables: dict[str, TensorTable]
    _downloaded: dict[str, Any] = field(default_factory=dict)  # member name -> its bytes, read once (remote: downloaded)
    _verified: set[str] = field(default_factory=set)

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest map as decoded from msgpack (plain data)."""
        return self.decoded.raw

    @property
    def size(self) -> int:
        return self.source.size

    def _member(self, name: str) -> zc.Member:
        return next(m for m in self.members if m.name == name)

    def member_data(
        self, name: str, *, private: bool = False, verify: bool = False, tick: Callable[[int], None] | None = None
    ) -> tuple[Any, int]:
        """(buffer, file offset of its first byte) holding member ``name``'s bytes.


        For a local file without ``private`` or ``verify``: the copy-on-write mapping (zero copy).
        Otherwise the member read once into memory of its own — through the file descriptor, so a
        concurrent truncation is an error and not a crash — with its CRC-32 checked on exactly
        those bytes when ``verify`` (always for a remote source): the bytes validated are the
        bytes used, and a later rewrite of the file cannot change them. Remotely the member is
        downloaded once, in concurrent ranges straight into reserved memory, the header bytes
        validated at open taken from the source's cache (FORMAT.md §12.1).
        """
        m = self._member(name)
        if self.source.mappable and not private and not verify:
            return self.source.mapping(), 0
        if name not in self._downloaded or (verify and name not in self._verified):
            if self.source.mappable:  # read through the descriptor; the CRC on two threads
                data: Any = bytearray(m.size)
                self.source.read_into(m.data_offset, memoryview(data))
                if verify:
                    from concurrent.futures import ThreadPoolExecutor

                    with ThreadPoolExecutor(max_workers=2) as pool:
                        _check_crc(m, parallel_crc32(cast(bytes, data), 0, m.size, pool, 2))  # any buffer does
            else:
                data, crc = self.source.download(m.data_offset, m.size, tick=tick)
                _check_crc(m, crc)  # the data came over the network anyway: hashing it is nearly free
                verify = True
            self._downloaded[name] = data
            if verify:
                self._verified.add(name)
        return self._downloaded[name], m.data_offset

    def tensor_chunks(self, member: str, info: TensorInfo) -> Iterator[bytes | memoryview]:
        """One stored tensor's bytes, in chunks read through the descriptor (no torch, bounded memory)."""
        start = self.tables[member].data_start + info.begin
        if self.source.mappable:
            yield from self.source.read_stream(start, info.nbytes)
            return
        buf, base = self.member_data(member)
        yield memoryview(buf).toreadonly()[start - base : start - base + info.nbytes]

    def tensors(self, member: str) -> dict[str, torch.Tensor]:
        """Tensors of one member as views of the mapping (or download); aliases share their target."""
        table = self.tables[member]
        buf, base = self.member_data(member)
        if self.source.mappable:
            self.source.exported = True
        out = {}
        for info in table.tensors:
            checked = self.bools_read(member, info, private=False)
            out[info.name] = tensor_from(buf, info, table.data_start - base, member, bools_checked=checked)
        for alias, target in self.manifest["members"][member]["aliases"].items():
            out[alias] = out[target]
        return out

    def values(self, *, device: Any = None, copy: bool = False, verify: bool = False, progress: Progress | None = None) -> dict[str, Any]:
        """Every value slot with its tensors restored (FORMAT.md §4.4), keyed by slot name.

        Tensors are views of the file's mapping unless ``copy`` or ``verify``: then each member is
        read once into memory of its own (its CRC-32 checked on those bytes when ``verify``) and
        the tensors view that, so nothing keeps the file mapped and nothing another process does
        to the file afterwards reaches them. On a non-CPU ``device`` each stored tensor is copied
        there once. Placeholders naming one stored tensor (aliases, tied weights) give one object.
        ``progress(done, total)`` counts the bytes of the stored tensors as each is made available.
        """
        import torch

        on_cpu = device is None or torch.device(device).type == "cpu"
        private = copy or verify
        if self.source.mappable and not private:
            self.source.exported = True  # tensors view the mapping: it must outlive close()
        stored: dict[tuple[str, str], Any] = {}  # CPU views (or private copies) of the stored tensors
        moved: dict[tuple[str, str], Any] = {}  # their copies on a non-CPU device
        objects: dict[tuple[str, str, str, bool], Any] = {}
        tick = _counter(progress, sum(t.nbytes for table in self.tables.values() for t in table.tensors))

        def base(member: str, name: str, to_device: bool) -> Any:
            key = (member, name)
            if key not in stored:
                table = self.tables[member]
                info = self._index[member][name]
                buf, offset = self.member_data(member, private=private, verify=verify)
                checked = self.bools_read(member, info, private=private)
                stored[key] = tensor_from(buf, info, table.data_start - offset, member, bools_checked=checked)
                if tick is not None:
                    tick(info.nbytes)
            if not to_device:
                return stored[key]
            if key not in moved:  # the one copy to the device, straight from the mapping
                moved[key] = stored[key].to(device)
            return moved[key]

        def resolve(ref: Ref) -> Any:
            name = self.manifest["members"][ref.member]["aliases"].get(ref.name, ref.name)
            key = (ref.member, name, ref.kind, ref.requires_grad)
            if key not in objects:
                t = base(ref.member, name, to_device=not on_cpu and ref.kind != "ndarray")
                if ref.kind == "ndarray":  # numpy arrays live on the CPU, whatever the device
                    obj = as_numpy(t)
                elif ref.kind == "parameter":
                    obj = torch.nn.Parameter(t, requires_grad=ref.requires_grad)
                else:
                    obj = t.requires_grad_(True) if ref.requires_grad else t
                objects[key] = obj
            return objects[key]

        return {slot: substitute(self.decoded.values[slot], resolve) for slot in VALUE_SLOTS}

    def bools_read(self, member: str, info: TensorInfo, *, private: bool) -> bool:
        """Check a BOOL tensor of a mapped file through the descriptor (True when checked; FORMAT.md §5.3).

        Checking through the mapping would make every page of the tensor resident (a 256 MiB BOOL
        tensor: 256 MiB more RSS, where any other dtype costs nothing until read); read in 8 MiB
        chunks into one reused buffer instead. Private copies and downloads are checked where they are.
        """
        if info.dtype != "BOOL" or private or not self.source.mappable:
            return False
        if any(bytes(chunk).translate(None, b"\x00\x01") for chunk in self.tensor_chunks(member, info)):
            raise _bool_error(member, info)
        return True

    @property
    def _index(self) -> dict[str, dict[str, TensorInfo]]:
        cache = self.__dict__.get("_tensor_index")
        if cache is None:
            cache = {m: {t.name: t for t in table.tensors} for m, table in self.tables.items()}
            self.__dict__["_tensor_index"] = cache
        return cache

    def check_crcs(self, *, progress: Progress | None = None, members: list[str] | None = None) -> None:
        """CRC-32 of every member (or of the named ones); two threads per member on local files.

        Remotely each tensor member is downloaded and kept (:meth:`member_data`),
        so the tensors made afterwards are made of the bytes checked here,
        and the manifest's bytes are those decoded at open.
        """
        chosen = [m for m in self.members if members is None or m.name in members]
        tick = _counter(progress, sum(m.size for m in chosen))
        if not self.source.mappable:  # a URL: each byte fetched once, so the members checked are kept
            for m in chosen:
                if m.name in TENSOR_MEMBERS:
                    self.member_data(m.name, verify=True, tick=tick)  # kept: the tensors made later are these bytes
                else:
                    _check_crc(m, crc32(self.source.read(m.data_offset, m.size)))  # from the cache: the bytes decoded
                    if tick is not None:
                        tick(m.size)
            return
        # through the descriptor, two threads per member: a file truncated meanwhile is an error, not a SIGBUS
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=2) as pool:
            for m in chosen:
                half = m.size // 2 if m.size >= 2 * SPLIT else 0
                first = pool.submit(_stream_crc, self.source, m.data_offset, half, tick)
                rest = _stream_crc(self.source, m.data_offset + half, m.size - half, tick)
                _check_crc(m, crc32_combine(first.result(), rest, m.size - half) if half else rest)

    def sha256(self) -> str:
        """SHA-256 of the whole file, hex."""
        return sha256_of(self.source)

    def close(self) -> None:
        self.source.close()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _stream_crc(src: Source, offset: int, size: int, tick: Callable[[int], None] | None) -> int:
    crc = 0
    for chunk in src.read_stream(offset, size):
        crc = crc32(chunk, crc)
        if tick is not None:
            tick(len(chunk))
    return crc


def _check_crc(member: zc.Member, actual: int) -> None:
    if actual != member.crc32:
        raise IntegrityError(
            f"member {member.name!r}: CRC-32 is 0x{actual:08x}; the directory records 0x{member.crc32:08x} (FORMAT.md §6)",
            code="crc-mismatch",
        )


MAX_NUMPY_BYTES = (1 << 63) - 1  # FORMAT.md §4.4: numpy refuses arrays whose nominal size exceeds this


def _numpy_extent(info: TensorInfo) -> int:
    """What numpy computes for an array's size: the dimensions, zeros counted as 1, times the element size."""
    n = DTYPES[info.dtype][0]
    for d in info.shape:
        n *= max(d, 1)
    return n


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


def _cross_check(manifest: Manifest, members: list[zc.Member], tables: dict[str, TensorTable]) -> dict[str, dict[str, TensorInfo]]:
    """Manifest versus members: sizes, aliases, and placeholders one to one with tensors (FORMAT.md §6).

    Returns each member's tensors by name (the archive keeps it). Linear in the number of
    tensors and placeholders: a file may hold 2**20 of each.
    """
    declared = manifest.raw["members"]
    infos = {m: {t.name: t for t in table.tensors} for m, table in tables.items()}
    for m in members[1:]:
        if declared[m.name]["size"] != m.size:
            raise ManifestError(
                f"$.members.{m.name}.size is {declared[m.name]['size']}; the member holds {m.size} bytes (FORMAT.md §6)",
                code="manifest-mismatch",
            )
        stored = infos[m.name]
        for alias, target in declared[m.name]["aliases"].items():
            check_name(alias, f"$.members.{m.name}.aliases", ManifestError)
            if alias in stored or target not in stored:
                raise ManifestError(
                    f"$.members.{m.name}.aliases: {alias!r} -> {target!r} must name a new tensor and a stored one (FORMAT.md §5.5)",
                    code="manifest-mismatch",
                )
    claimed: dict[str, dict[str, tuple[Any, ...]]] = {m: {} for m in tables}
    kinds: dict[str, dict[str, tuple[str, bool]]] = {m: {} for m in tables}
    aliases = {m: declared[m]["aliases"] for m in tables}
    for ref, path in manifest.refs:
        member, name = ref.member, ref.name
        names = claimed[member]
        if name in names:
            raise ManifestError(
                f"{render_path(path)} and {render_path(names[name])} both name tensor {name!r} of {member}; "
                "each tensor and alias is named by one placeholder (FORMAT.md §6)",
                code="manifest-mismatch",
            )
        names[name] = path
        target = aliases[member].get(name, name)
        info = infos[member].get(target)
        if info is None:
            raise ManifestError(
                f"{render_path(path)} names tensor {name!r}, which {member} does not hold (FORMAT.md §6)", code="manifest-mismatch"
            )
        kind = (ref.kind, ref.requires_grad)
        if kind != ("tensor", False):
            _check_kind(ref, info, path)
        if kinds[member].setdefault(target, kind) != kind:
            raise ManifestError(
                f"{render_path(path)}: tensor {target!r} of {member} is named by placeholders of different kinds (FORMAT.md §5.5)",
                code="manifest-mismatch",
            )
    for m in members[1:]:
        names = claimed[m.name]
        # every claimed name is a stored tensor or an alias (checked above), and aliases are new names
        if len(names) == len(infos[m.name]) + len(aliases[m.name]):
            continue
        for name in [*infos[m.name], *aliases[m.name]]:
            if name not in names:
                raise ManifestError(
                    f"tensor {name!r} of {m.name} is named by no placeholder of the manifest (FORMAT.md §6)", code="manifest-mismatch"
                )
    return infos


def _check_kind(ref: Ref, info: TensorInfo, path: tuple[Any, ...]) -> None:
    """An ndarray placeholder needs a numpy dtype and extent; requires_grad needs a float or complex tensor (§4.4)."""
    if ref.kind == "ndarray" and info.dtype not in NUMPY_DTYPES:
        raise ManifestError(
            f"{render_path(path)}: tensor {ref.name!r} is {info.dtype}, which has no numpy dtype; an ndarray placeholder needs one of "
            f"{', '.join(sorted(NUMPY_DTYPES))} (FORMAT.md §4.4)",
            code="manifest-mismatch",
        )
    if ref.kind == "ndarray" and _numpy_extent(info) > MAX_NUMPY_BYTES:
        raise ManifestError(
            f"{render_path(path)}: tensor {ref.name!r} of shape {list(info.shape)} cannot be a numpy "
            "array: its dimensions, zeros counted as 1, times its element size exceed 2**63 - 1 bytes (FORMAT.md §4.4)",
            code="manifest-mismatch",
        )
    if ref.requires_grad and info.dtype not in FLOAT_DTYPES:
        raise ManifestError(
            f"{render_path(path)}: tensor {ref.name!r} is {info.dtype}; only floating point and complex tensors can require gradients (FORMAT.md §4.4)",
            code="manifest-mismatch",
        )


def _looks_like_safetensors(src: Source) -> bool:
    """FORMAT.md §7: a little-endian u64 header length N with 8 + N within the file, then '{'."""
    if src.size < 10:
        return False
    head = src.read(0, 9)
    return head[8:9] == b"{" and 8 + int.from_bytes(head[:8], "little") <= src.size


def open_archive(
    path: str | os.PathLike[str], *, source: Source | None = None, storage_options: Mapping[str, Any] | None = None
) -> Archive:
    """Open and validate every layer of an archive (a path or an fsspec URL); tensor data is not read.

    A local file is mapped privately (copy-on-write), so tensors made from
    it may be modified without touching the file. ``source`` reads ``path``'s
    bytes from there instead (a :class:`~distillgan.source.SnapshotFile` of a signed load).
    """
    src = open_source(path, storage_options) if source is None else source
    try:
        check_not_legacy(src)
        try:
            members = zc.read_container(src)
        except ContainerError as e:
            if e.code == "not-zip" and _looks_like_safetensors(src):
                raise ContainerError(
                    f"{os.fspath(path)!r} is a plain safetensors file, not a .distillgan archive; "
                    "make a model of it with `distillgan convert FILE` (FORMAT.md §7)",
                    code="safetensors-file",
                ) from e
            raise
        m0 = members[0]
        if m0.size > MAX_MANIFEST_BYTES:
            raise ManifestError(
                f"manifest member is {m0.size} bytes; the limit is {MAX_MANIFEST_BYTES} (FORMAT.md §8)", code="manifest-too-large"
            )
        raw = src.read(m0.data_offset, m0.size)
        _check_crc(m0, crc32(raw))
        with gc_paused():  # tens of thousands of small objects, no cycles: collections would only cost time
            manifest = decode_manifest(raw)
            _check_v1_members(manifest.raw, members)
            tables = {m.name: parse_header(src, m.data_offset, m.size, m.name) for m in members[1:]}
            index = _cross_check(manifest, members, tables)
        archive = Archive(os.fspath(path), src, members, manifest, tables)
        archive.__dict__["_tensor_index"] = index
        return archive
    except BaseException:
        src.close()
        raise


# --- inspect / verify -------------------------------------------------------------


def describe(archive: Archive, tensors_table: bool = True) -> dict[str, Any]:
    """What ``inspect`` reports of an open archive: its manifest's JSON projection, members and (optionally) tensor tables."""
    manifest = archive.manifest
    tensors = {}
    for name, table in archive.tables.items() if tensors_table else ():
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
        "manifest": json_view(manifest),
        **({"tensors": tensors} if tensors_table else {}),
    }


def inspect(path: str | os.PathLike[str], *, tensors: bool = True, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Describe an archive (a path or an fsspec URL) without torch and without reading tensor data.

    Returns a JSON-serialisable dict: format, version, file_size, members
    (name, header_offset, data_offset, size, crc32), the manifest, and per
    tensor member a table of name, dtype, shape, bytes and data_offset
    (left out with ``tensors=False``; the file is validated the same).
    ``storage_options`` go to the remote reader of a URL: ``{"headers": {...}}`` for
    http(s) (a token for a private server; FORMAT.md §12.2), the backend's options for another
    fsspec scheme.
    Raises :class:`~distillgan.DistillganError` for any invalid file.
    """
    with open_archive(path, storage_options=storage_options) as archive, gc_paused():
        return describe(archive, tensors)


def _check_bools(archive: Archive) -> None:
    """Every BOOL byte is 0 or 1 (FORMAT.md §5.3), read in bounded chunks (a 1 GiB BOOL tensor costs 8 MiB)."""
    for member, table in archive.tables.items():
        for t in table.tensors:
            if t.dtype == "BOOL" and any(bytes(chunk).translate(None, b"\x00\x01") for chunk in archive.tensor_chunks(member, t)):
                raise _bool_error(member, t)


def _bool_error(member: str, t: TensorInfo) -> TensorError:
    return TensorError(f"{member}: tensor {t.name!r} holds bool bytes other than 0 and 1 (FORMAT.md §5.3)", code="st-bool")


def verify(
    path: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    progress: Progress | None = None,
    signature: str | os.PathLike[str] | None = None,
    public_key: Any = None,
    certificate_chain: Any = None,
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Check every layer and every member's CRC-32 (and, if given, the file's SHA-256).

    Returns the :func:`inspect` description plus ``sha256`` when it was
    checked. Raises :class:`~distillgan.IntegrityError` on a checksum
    mismatch and other :class:`~distillgan.DistillganError` subclasses for
    structural defects. ``progress(done, total)`` reports CRC progress.

    With ``public_key`` (one PEM file or a list) or ``certificate_chain``, the file must also carry
    a valid signature (its sidecar ``path + ".sig"``, or ``signature``), checked before any data is
    read, whose signed SHA-256 is the file's: the same pass computes it (FORMAT.md §16.3;
    :class:`~distillgan.SignatureError`). ``info["signature"]`` then says who signed it.
    ``storage_options``: as for :func:`inspect`.
    """
    if signature is None and public_key is None and certificate_chain is None:
        return _verify(path, sha256, progress, storage_options, digest=False)
    from .errors import DistillganError
    from .signing import mismatch_error, signed_sha256

    signed = signed_sha256(path, signature=signature, public_key=public_key, certificate_chain=certificate_chain,
                           storage_options=storage_options)
    try:
        info = _verify(path, sha256, progress, storage_options, digest=True)
    except DistillganError as e:  # bytes that are not the signed ones say so first, whatever else is wrong with them
        actual = file_sha256(path, storage_options)
        if actual != signed.sha256:
            raise mismatch_error(os.fspath(path), signed, actual) from e
        raise
    if info["sha256"] != signed.sha256:
        raise mismatch_error(os.fspath(path), signed, info["sha256"])
    info["signature"] = {"file": signed.signature, "signer": signed.signer}
    return info


def _verify(
    path: str | os.PathLike[str], sha256: str | None, progress: Progress | None, storage_options: Mapping[str, Any] | None, *, digest: bool
) -> dict[str, Any]:
    with open_archive(path, storage_options=storage_options) as archive:
        info = describe(archive)
        if not archive.source.mappable:  # a URL: one pass over the file (FORMAT.md §12.1)
            return _verify_remote(archive, info, sha256, progress, digest=digest)
        if sha256 is not None or digest:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=1) as pool:
                digest_future = pool.submit(archive.sha256)
                archive.check_crcs(progress=progress)
                got = digest_future.result()
            if sha256 is not None and got != sha256.strip().lower():
                raise IntegrityError(f"SHA-256 of the file is {got}; expected {sha256.strip().lower()}", code="sha256-mismatch")
            info["sha256"] = got
        else:
            archive.check_crcs(progress=progress)
        _check_bools(archive)
        return info


def _verify_remote(archive: Archive, info: dict[str, Any], sha256: str | None, progress: Progress | None, *, digest: bool) -> dict[str, Any]:
    """:func:`verify` of a URL: one pass over the whole file gives the SHA-256, every CRC-32 and the bool bytes.

    The pass takes the bytes validated at open from the source's cache and
    fetches each other byte once, so the digest is of exactly the bytes
    whose structure was validated and whose checksums were checked (a
    server cannot show the digest one file and the validator another;
    FORMAT.md §12). Failures come in the order of the local verify: CRC-32,
    then SHA-256, then bool bytes.
    """
    import hashlib

    src = archive.source
    hasher = hashlib.sha256() if sha256 is not None or digest else None
    crcs = [0] * len(archive.members)
    spans = [(m.data_offset, m.data_offset + m.size) for m in archive.members]
    bools = [
        (table.data_start + t.begin, table.data_start + t.end, member, t)
        for member, table in archive.tables.items()
        for t in table.tensors
        if t.dtype == "BOOL" and t.nbytes
    ]
    bad_bool: TensorError | None = None
    tick = _counter(progress, src.size)
    pos = 0
    for chunk in src.read_stream(0, src.size):
        end = pos + len(chunk)
        if hasher is not None:
            hasher.update(chunk)
        for i, (a, b) in enumerate(spans):
            if a < end and pos < b:
                crcs[i] = crc32(chunk[max(a, pos) - pos : min(b, end) - pos], crcs[i])
        for a, b, member, t in bools:
            if bad_bool is None and a < end and pos < b and bytes(chunk[max(a, pos) - pos : min(b, end) - pos]).translate(None, b"\x00\x01"):
                bad_bool = _bool_error(member, t)
        if tick is not None:
            tick(len(chunk))
        pos = end
    for m, crc in zip(archive.members, crcs):
        _check_crc(m, crc)
    if hasher is not None:
        got = hasher.hexdigest()
        if sha256 is not None and got != sha256.strip().lower():
            raise IntegrityError(f"SHA-256 of the file is {got}; expected {sha256.strip().lower()}", code="sha256-mismatch")
        info["sha256"] = got
    if bad_bool is not None:
        raise bad_bool
    return info
