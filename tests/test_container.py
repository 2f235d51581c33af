"""Byte-level facts of written files (read with struct, not distillgan), errors, and the file-level API."""

from __future__ import annotations

import json
import os
import pickle
import stat
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import distillgan
from distillgan import (
    MODEL_FILE_EXTENSION,
    DistillganError,
    InputError,
    ModelLibrary,
    ModelMetadata,
    delete_model,
    inspect,
    load_model,
    save_model,
    save_model_from_checkpoint,
)

LOCAL = struct.Struct("<4sHHHHHIIIHH")  # APPNOTE 4.3.7
CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")  # APPNOTE 4.3.12
EOCD = struct.Struct("<4sHHHHIIH")  # APPNOTE 4.3.16


@dataclass
class Local:
    offset: int
    version: int
    flags: int
    method: int
    time: int
    date: int
    crc: int
    csize: int
    usize: int
    name: bytes
    extra: bytes
    data_offset: int


@dataclass
class Central:
    made_by: int
    version: int
    flags: int
    method: int
    time: int
    date: int
    crc: int
    csize: int
    usize: int
    name: bytes
    extra: bytes
    comment: bytes
    disk: int
    internal: int
    external: int
    local_offset: int


def _parse(data: bytes) -> tuple[list[Local], list[Central], tuple[Any, ...], int]:
    """Walk the archive as a plain zip: end record, central directory, then each local header."""
    eocd_pos = len(data) - EOCD.size
    eocd = EOCD.unpack_from(data, eocd_pos)
    sig, _disk, _cd_disk, _n_disk, n_total, cd_size, cd_off, _comment_len = eocd
    assert sig == b"PK\x05\x06"
    centrals = []
    pos = cd_off
    for _ in range(n_total):
        f = CENTRAL.unpack_from(data, pos)
        assert f[0] == b"PK\x01\x02"
        nlen, xlen, klen = f[10], f[11], f[12]
        base = pos + CENTRAL.size
        centrals.append(
            Central(
                made_by=f[1],
                version=f[2],
                flags=f[3],
                method=f[4],
                time=f[5],
                date=f[6],
                crc=f[7],
                csize=f[8],
                usize=f[9],
                name=data[base : base + nlen],
                extra=data[base + nlen : base + nlen + xlen],
                comment=data[base + nlen + xlen : base + nlen + xlen + klen],
                disk=f[13],
                internal=f[14],
                external=f[15],
                local_offset=f[16],
            )
        )
        pos = base + nlen + xlen + klen
    assert pos == cd_off + cd_size == eocd_pos
    locals_ = []
    for c in centrals:
        f = LOCAL.unpack_from(data, c.local_offset)
        assert f[0] == b"PK\x03\x04"
        nlen, xlen = f[9], f[10]
        base = c.local_offset + LOCAL.size
        locals_.append(
            Local(
                offset=c.local_offset,
                version=f[1],
                flags=f[2],
                method=f[3],
                time=f[4],
                date=f[5],
                crc=f[6],
                csize=f[7],
                usize=f[8],
                name=data[base : base + nlen],
                extra=data[base + nlen : base + nlen + xlen],
                data_offset=base + nlen + xlen,
            )
        )
    return locals_, centrals, eocd, eocd_pos


@pytest.fixture(params=["with-vocoder", "without-vocoder", "empty-tensors"])
def archive_bytes(request: pytest.FixtureRequest, save: Callable[..., Path], vocoder_state: dict[str, Any]) -> bytes:
    if request.param == "with-vocoder":
        path = save(vocoder_state=vocoder_state, analysis={"n_active_components": 1, "a": torch.ones(3)})
    elif request.param == "without-vocoder":
        path = save()
    else:
        path = save({"empty": torch.empty(0), "scalar": torch.tensor(1, dtype=torch.int8)})
    return path.read_bytes()


# --- zip structure ------------------------------------------------------------------------------


def test_local_headers(archive_bytes: bytes) -> None:
    locals_, _, _, _ = _parse(archive_bytes)
    assert [h.name for h in locals_] == [b"manifest.msgpack", b"model.safetensors", b"vocoder.safetensors"][: len(locals_)]
    for h in locals_:
        assert h.version == 20
        assert h.flags == 0
        assert h.method == 0
        assert h.time == 0
        assert h.date == 0x0021  # 1980-01-01
        assert h.csize == h.usize


def test_crc_in_local_header_matches_directory_and_data(archive_bytes: bytes) -> None:
    locals_, centrals, _, _ = _parse(archive_bytes)
    for h, c in zip(locals_, centrals, strict=True):
        member = archive_bytes[h.data_offset : h.data_offset + h.usize]
        assert len(member) == h.usize
        assert h.crc == c.crc == zlib.crc32(member)


def test_central_directory_agrees_with_local_headers(archive_bytes: bytes) -> None:
    locals_, centrals, _, _ = _parse(archive_bytes)
    for h, c in zip(locals_, centrals, strict=True):
        assert (c.name, c.version, c.flags, c.method, c.time, c.date, c.csize, c.usize) == (
            h.name,
            h.version,
            h.flags,
            h.method,
            h.time,
            h.date,
            h.csize,
            h.usize,
        )
        assert c.extra == b"" and c.comment == b""
        assert c.disk == 0 and c.internal == 0
        assert stat.S_ISREG(c.external >> 16) and not c.external & 0x10
        assert c.made_by >> 8 in (0, 3)


def test_members_are_contiguous_from_offset_zero(archive_bytes: bytes) -> None:
    locals_, _, eocd, _ = _parse(archive_bytes)
    expected = 0
    for h in locals_:
        assert h.offset == expected
        expected = h.data_offset + h.usize
    assert eocd[6] == expected  # the central directory follows the last member


def test_padding_extra_field_is_minimal(archive_bytes: bytes) -> None:
    locals_, _, _, _ = _parse(archive_bytes)
    assert locals_[0].extra == b""  # the manifest is not padded
    for h in locals_[1:]:
        field_id, length = struct.unpack_from("<HH", h.extra, 0)
        assert field_id == 0x6764
        assert len(h.extra) == 4 + length
        assert h.extra[4:] == bytes(length)
        assert h.data_offset % 64 == 0
        assert length < 64
        # minimal: the smallest padding that aligns the data after a 4-byte field header
        assert length == (-(h.offset + LOCAL.size + len(h.name) + 4)) % 64


def test_end_record_is_last_with_no_comment_and_no_zip64(archive_bytes: bytes) -> None:
    locals_, centrals, eocd, eocd_pos = _parse(archive_bytes)
    _sig, disk, cd_disk, n_disk, n_total, cd_size, cd_off, comment_len = eocd
    assert eocd_pos == len(archive_bytes) - 22
    assert archive_bytes[-22:-18] == b"PK\x05\x06"
    assert comment_len == 0
    assert disk == cd_disk == 0
    assert n_disk == n_total == len(locals_) == len(centrals)
    assert cd_off + cd_size == eocd_pos
    assert b"PK\x06\x06" not in archive_bytes[cd_off:] and b"PK\x06\x07" not in archive_bytes[cd_off:]
    assert cd_off < 0xFFFFFFFF and cd_size < 0xFFFFFFFF
    assert all(c.usize < 0xFFFFFFFF and c.local_offset < 0xFFFFFFFF for c in centrals)


def test_the_readers_parsers_take_bytes_and_return_what_zipfile_sees(archive_bytes: bytes) -> None:
    """FORMAT.md §13.2–§13.4 as three parsers over bytes: end records, directory entries, local headers."""
    import io
    import zipfile

    from distillgan import container as zc

    infos = zipfile.ZipFile(io.BytesIO(archive_bytes)).infolist()
    size = len(archive_bytes)
    end = zc.parse_end_records(archive_bytes[-zc.END_RECORDS_MAX_BYTES :], size)
    assert (end.entry_count, end.directory_end, end.zip64) == (len(infos), size - 22, False)
    entries = zc.parse_central_directory(archive_bytes[end.directory_offset : end.directory_end], end)
    assert [(e.name, e.header_offset, e.size, e.crc32) for e in entries] == [
        (i.filename, i.header_offset, i.file_size, i.CRC) for i in infos
    ]
    previous = 0
    for index, entry in enumerate(entries):
        offset = zc.locate_local_header(entry, previous, end)
        header = zc.parse_local_header(archive_bytes[offset : offset + 30], entry, end)
        variable = archive_bytes[header.variable_offset : header.data_offset]
        member = zc.check_local_header(index, entry, header, variable, end)
        assert archive_bytes[member.data_offset : member.data_end] == zipfile.ZipFile(io.BytesIO(archive_bytes)).read(entry.name)
        previous = member.data_end
    # one byte changed in a parser's input gives that parser's code
    with pytest.raises(DistillganError) as e:
        zc.parse_end_records(archive_bytes[-zc.END_RECORDS_MAX_BYTES : -2] + b"\x01\x00", size)
    assert e.value.code == "zip-comment"
    directory = bytearray(archive_bytes[end.directory_offset : end.directory_end])
    directory[10] = 8  # the first entry's method: deflate
    with pytest.raises(DistillganError) as e:
        zc.parse_central_directory(bytes(directory), end)
    assert e.value.code == "zip-method"


def test_signatures_appear_only_where_expected(save: Callable[..., Path]) -> None:
    """With tensor data that cannot contain "PK", every signature found is a real header."""
    path = save({"w": torch.zeros(100)})
    data = path.read_bytes()
    locals_, centrals, _, eocd_pos = _parse(data)
    assert [i for i in range(len(data)) if data.startswith(b"PK\x03\x04", i)] == [h.offset for h in locals_]
    assert data.count(b"PK\x01\x02") == len(centrals)
    assert data.count(b"PK\x05\x06") == 1 and data.rfind(b"PK\x05\x06") == eocd_pos


# --- errors -------------------------------------------------------------------------------------


ERROR_NAMES = [n for n in distillgan.__all__ if n.endswith("Error")]


@pytest.mark.parametrize("name", ERROR_NAMES)
def test_every_error_is_a_value_error_with_a_code(name: str) -> None:
    cls = getattr(distillgan, name)
    assert issubclass(cls, DistillganError) and issubclass(cls, ValueError)
    err = cls("something went wrong", code="some-code")
    assert err.code == "some-code" and str(err) == "something went wrong"
    copy = pickle.loads(pickle.dumps(err))  # errors cross process boundaries intact
    assert type(copy) is cls and copy.code == "some-code" and str(copy) == str(err)


def test_error_tree_has_the_documented_shape() -> None:
    assert len(ERROR_NAMES) == 14
    assert issubclass(distillgan.VersionError, distillgan.ManifestError)
    assert distillgan.SignatureError.__bases__ == (DistillganError,)  # FORMAT.md §16
    for name, os_error in (("NotFoundError", FileNotFoundError), ("AccessDeniedError", PermissionError),
                           ("IsAFolderError", IsADirectoryError)):  # also the OSError code written for the standard library expects
        assert issubclass(getattr(distillgan, name), distillgan.FileAccessError) and issubclass(getattr(distillgan, name), os_error)
    with pytest.raises(TypeError):
        DistillganError("no code")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "content, error, code",
    [
        (b"", distillgan.ContainerError, "not-zip"),
        (b"hello world, not a zip at all", distillgan.ContainerError, "not-zip"),
        (b"PK\x03\x04" + bytes(200), distillgan.ContainerError, None),
    ],
    ids=["empty", "text", "zip-magic-then-zeros"],
)
def test_bad_files_raise_typed_errors_with_codes(tmp_path: Path, content: bytes, error: type, code: str | None) -> None:
    path = tmp_path / "bad.distillgan"
    path.write_bytes(content)
    for reader in (load_model, inspect, distillgan.verify):
        with pytest.raises(error) as e:
            reader(path)
        assert isinstance(e.value, ValueError)
        assert isinstance(e.value.code, str) and e.value.code
        if code is not None:
            assert e.value.code == code


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(distillgan.FileAccessError) as e:
        load_model(tmp_path / "nope.distillgan")
    assert e.value.code == "not-found"
    with pytest.raises(distillgan.FileAccessError) as e:
        inspect(tmp_path)
    assert e.value.code == "not-regular-file"


def test_crc_damage_is_found_by_verify(saved_model: Path, tmp_path: Path) -> None:
    data = bytearray(saved_model.read_bytes())
    locals_, _, _, _ = _parse(bytes(data))
    model = locals_[1]
    data[model.data_offset + model.usize - 1] ^= 0x01  # last byte of tensor data
    damaged = tmp_path / "damaged.distillgan"
    damaged.write_bytes(bytes(data))
    inspect(damaged)  # inspect reads no tensor data
    with pytest.raises(distillgan.IntegrityError) as e:
        distillgan.verify(damaged)
    assert e.value.code == "crc-mismatch"
    with pytest.raises(distillgan.IntegrityError):
        load_model(damaged, verify=True)


# --- delete_model -----------------------------------------------------------------------------


def test_delete_model_removes_file_and_index_entry(save: Callable[..., Path], models_dir: Path) -> None:
    keep = save(name="keep")
    path = save(name="doomed")
    model_id = load_model(path).metadata.model_id
    assert ModelLibrary(models_dir).get(model_id) is not None
    assert delete_model(model_id, models_dir) is True
    assert not path.exists()
    assert ModelLibrary(models_dir).get(model_id) is None
    index = json.loads((models_dir / "model_library.json").read_text(encoding="utf-8"))
    assert model_id not in json.dumps(index)
    assert keep.exists() and ModelLibrary(models_dir).get(load_model(keep).metadata.model_id) is not None
    assert delete_model(model_id, models_dir) is False  # already gone


def test_delete_unknown_model_returns_false(save: Callable[..., Path], models_dir: Path) -> None:
    path = save()
    assert delete_model("00000000-0000-0000-0000-000000000000", models_dir) is False
    assert path.exists()
    assert delete_model("anything", models_dir / "empty-folder") is False


# --- file names -------------------------------------------------------------------------------


def test_same_name_twice_gets_a_counter(save: Callable[..., Path], models_dir: Path) -> None:
    first = save(name="My Model")
    second = save(name="My Model")
    third = save(name="My Model")
    assert (first.name, second.name, third.name) == ("my_model.distillgan", "my_model_1.distillgan", "my_model_2.distillgan")
    ids = {load_model(p).metadata.model_id for p in (first, second, third)}
    assert len(ids) == 3
    assert {e.file_path for e in ModelLibrary(models_dir).list_all()} == {first.name, second.name, third.name}


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/passwd",
        "..\\..\\windows\\system32",
        "/absolute/path",
        "CON",
        "nul",
        "Com1",
        "x" * 300,
        "🎵🎶",
        "..",
        "a\x00b\nc",
        "",
    ],
    ids=["dotdot-slash", "dotdot-backslash", "absolute", "CON", "nul", "Com1", "300-chars", "emoji", "dots", "control", "empty"],
)
def test_file_names_are_sanitised(name: str, save: Callable[..., Path], models_dir: Path) -> None:
    path = save(name=name)
    assert path.parent == models_dir
    assert path.resolve().parent == models_dir.resolve()
    assert path.name.endswith(MODEL_FILE_EXTENSION)
    stem = path.name[: -len(MODEL_FILE_EXTENSION)]
    assert 0 < len(stem) <= 100
    assert all(c.isascii() and (c.isalnum() or c in "_-") for c in stem), stem
    assert stem.lower() not in {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
    assert sorted(p.name for p in models_dir.glob("*.distillgan")) == [path.name]
    loaded = load_model(path)
    assert loaded.metadata.name == name  # the manifest keeps the name as given
    assert ModelLibrary(models_dir).get(loaded.metadata.model_id).file_path == path.name
    assert save(name="next").name == "next.distillgan"  # the folder stays usable


# --- save_model_from_checkpoint --------------------------------------------------------------


def test_save_model_from_checkpoint(tmp_path: Path, generator: nn.Module, models_dir: Path) -> None:
    params = list(generator.parameters())
    # what torch.optim.Adam(...).state_dict() holds after some steps (built by hand: a real first
    # step costs seconds of torch._dynamo import)
    optimizer_state = {
        "state": {
            i: {"step": torch.tensor(10.0), "exp_avg": torch.full_like(p, 0.123), "exp_avg_sq": torch.full_like(p, 0.0456)}
            for i, p in enumerate(params)
        },
        "param_groups": [
            {
                "lr": 1e-3,
                "betas": (0.9, 0.999),
                "eps": 1e-8,
                "weight_decay": 0,
                "amsgrad": False,
                "params": list(range(len(params))),
            }
        ],
    }
    ckpt = tmp_path / "epoch_007.pt"
    spec = {"sample_rate": 48000, "n_mels": 128, "hop_length": 512}
    train = {"epochs": 50, "learning_rate": 0.001}
    torch.save(
        {
            "model_state_dict": generator.state_dict(),
            "optimizer_state_dict": optimizer_state,
            "scheduler_state_dict": {"last_epoch": 7},
            "epoch": 7,
            "train_loss": 0.5,
            "val_loss": 0.6,
            "spectrogram_config": spec,
            "training_config": train,
            "latent_dim": 8,
        },
        ckpt,
    )
    meta = ModelMetadata(name="From Checkpoint")
    path = save_model_from_checkpoint(ckpt, meta, models_dir, keep_training_state=True)
    assert path.parent == models_dir and path.name == "from_checkpoint.distillgan"
    loaded = load_model(path)
    assert loaded.metadata.training_epochs == 7
    assert loaded.metadata.final_train_loss == 0.5 and loaded.metadata.final_val_loss == 0.6
    assert loaded.spectrogram_config == spec and loaded.training_config == train
    assert loaded.latent_dim == 8
    assert set(loaded.state_dict) == set(generator.state_dict())
    for name, t in generator.state_dict().items():
        assert torch.equal(loaded.state_dict[name], t)
    # with keep_training_state nothing is dropped: optimizer and scheduler state, the epoch and the losses stay, as extra
    assert set(loaded.extra) == {"optimizer_state_dict", "scheduler_state_dict", "epoch", "train_loss", "val_loss"}
    got = loaded.extra["optimizer_state_dict"]
    assert list(got["state"]) == list(range(len(params))) and got["param_groups"][0]["betas"] == (0.9, 0.999)
    for i, s in optimizer_state["state"].items():
        for k, v in s.items():
            assert torch.equal(got["state"][i][k], v), (i, k)
    info = inspect(path)
    stored = {t["name"] for t in info["tensors"]["model.safetensors"]}
    assert {f"state_dict/{k}" for k in generator.state_dict()} <= stored
    assert "extra/optimizer_state_dict/state/0/exp_avg" in stored
    assert ModelLibrary(models_dir).get(loaded.metadata.model_id) is not None


class CreatesMarker:
    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (self.path,)


def test_malicious_checkpoint_is_read_without_running(tmp_path: Path, generator: nn.Module, models_dir: Path) -> None:
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.pt"
    torch.save({"model_state_dict": generator.state_dict(), "epoch": 1, "extra": CreatesMarker(marker)}, ckpt)
    path = save_model_from_checkpoint(ckpt, ModelMetadata(name="evil"), models_dir)
    assert not marker.exists()  # read without running: the call is kept as a record of itself, inert data
    recorded = load_model(path).extra["extra"]
    assert recorded["__class__"] in ("posix.mkdir", "nt.mkdir") and recorded["__args__"] == [str(marker)]
    # the payload is real: torch.load without weights_only would have run it
    torch.load(ckpt, weights_only=False)
    assert marker.is_dir()


def test_checkpoint_without_state_dict_is_refused(tmp_path: Path, models_dir: Path) -> None:
    ckpt = tmp_path / "bad.pt"
    torch.save({"epoch": 3}, ckpt)
    with pytest.raises(InputError) as e:
        save_model_from_checkpoint(ckpt, ModelMetadata(), models_dir)
    assert e.value.code == "bad-checkpoint"
    with pytest.raises(distillgan.FileAccessError) as e:  # also a FileNotFoundError
        save_model_from_checkpoint(tmp_path / "missing.pt", ModelMetadata(), models_dir)
    assert e.value.code == "not-found" and isinstance(e.value, FileNotFoundError)


def _model_files(models_dir: Path) -> list[str]:
    """Every file a save may have left behind: published models and temporary files."""
    if not models_dir.exists():
        return []
    return sorted(p.name for p in models_dir.iterdir() if p.name.endswith((".distillgan", ".tmp", ".distillgan-tmp")))


def test_input_errors_before_anything_is_written(models_dir: Path, generator: nn.Module) -> None:
    with pytest.raises(InputError):
        save_model(generator, {}, {}, {"name": "x", "author": "no such field"}, models_dir)
    with pytest.raises(InputError):
        save_model(generator, {(1, 2): "tuple key"}, {}, ModelMetadata(), models_dir)
    with pytest.raises(InputError):
        save_model(generator, {}, {}, ModelMetadata(), models_dir, vocoder_state={"callback": print})
    with pytest.raises(InputError):
        save_model(generator, {}, {"ids": {1, 2}}, ModelMetadata(), models_dir)  # a set
    with pytest.raises(InputError):
        save_model([torch.ones(1)], {}, {}, ModelMetadata(), models_dir)  # type: ignore[arg-type]
    with pytest.raises(InputError):
        save_model({"n" * 1100: torch.ones(1)}, {}, {}, ModelMetadata(), models_dir)  # tensor name over 1024 bytes
    assert _model_files(models_dir) == []


@pytest.mark.parametrize(
    "fields",
    [
        {"training_epochs": -1},
        {"training_epochs": "7"},
        {"training_epochs": True},
        {"dataset_file_count": 2.0},
        {"tags": "drums"},
        {"tags": [1, 2]},
        {"has_analysis": 1},
        {"final_train_loss": "low"},
        {"name": None},
    ],
    ids=lambda f: "-".join(f"{k}={v!r}" for k, v in f.items()),
)
def test_metadata_of_the_wrong_type_is_refused_before_writing(
    fields: dict[str, Any], models_dir: Path, generator: nn.Module
) -> None:
    """save_model must not publish a file its own reader refuses (FORMAT.md §4.3 types)."""
    with pytest.raises(InputError):
        save_model(generator, {}, {}, ModelMetadata(**fields), models_dir)
    assert _model_files(models_dir) == []


@pytest.mark.parametrize("epoch", [-3, True], ids=["negative", "bool"])
def test_checkpoint_with_an_invalid_epoch_keeps_it_out_of_the_metadata(epoch: Any, tmp_path: Path, models_dir: Path) -> None:
    ckpt = tmp_path / "odd.pt"
    torch.save({"model_state_dict": {"w": torch.ones(2)}, "epoch": epoch}, ckpt)
    loaded = load_model(save_model_from_checkpoint(ckpt, ModelMetadata(name="odd"), models_dir))
    assert loaded.metadata.training_epochs == 0  # not an epoch count: not put into the metadata...
    assert loaded.extra == {"epoch": epoch} and type(loaded.extra["epoch"]) is type(epoch)  # ...but kept as found
