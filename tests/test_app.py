"""The app's real data round-trips exactly: structures rebuilt from app v1.1's code (tests/support/appshapes.py).

Every save path of the app — the training loop's ``save_model`` with an
Enum-bearing config and NaN/inf losses, the latent analysis with a NaN
correlation, the HiFi-GAN trainer's ``vocoder_state`` with a resumable
checkpoint, the cancelled training checkpoint — is stored and given back with
the same structure, container and key types, dtypes and bits.
"""

from __future__ import annotations

import enum
import gc
import math
import os
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import appshapes as app
from expected import saved_form
import numpy as np
import pytest
import torch

import distillgan
from distillgan import ModelLibrary, load_model, save_model, update_vocoder


def _training_state(t: app.VocoderTraining) -> dict[str, Any]:
    return {
        "generator": t.generator.state_dict(), "mpd": t.mpd.state_dict(), "msd": t.msd.state_dict(),
        "optim_g": t.optim_g.state_dict(), "optim_d": t.optim_d.state_dict(),
        "sched_g": t.sched_g.state_dict(), "sched_d": t.sched_d.state_dict(),
    }  # fmt: skip


@pytest.fixture(scope="module")
def voc_state() -> dict[str, Any]:
    """The HiFi-GAN trainer's vocoder_state after a cancelled run: weights, config, metadata and a checkpoint."""
    return app.vocoder_state(small=True, with_checkpoint=True, seed=3)


# --- the training loop's save ------------------------------------------------------------------


def test_training_loop_save_with_enum_config_nan_losses_and_analysis(
    tmp_path: Path, assert_same_tree: Callable[..., None]
) -> None:
    vae = app.build_vae(small=True)
    config = app.training_config_dict()
    assert isinstance(config["preset"], app.OverfittingPreset)
    analysis = app.analysis_dict(latent_dim=64, n_components=3, seed=1)
    assert any(math.isnan(v) for corr in analysis["feature_correlations"].values() for v in corr)
    meta = app.ModelMetadata(name="Field Recordings", final_train_loss=float("nan"), final_val_loss=float("inf"))

    path = save_model(vae, app.spectrogram_config_dict(), config, meta, tmp_path, analysis=analysis)

    assert meta.model_id and meta.save_date and meta.has_analysis  # the app's own class, filled in place
    assert meta.n_active_components == 3
    loaded = load_model(path)
    assert_same_tree(loaded.state_dict, dict(vae.state_dict()))
    assert_same_tree(loaded.training_config, saved_form(config))
    assert loaded.training_config["preset"] == "balanced"  # the Enum's value, never "OverfittingPreset.BALANCED"
    assert_same_tree(loaded.spectrogram_config, app.spectrogram_config_dict())
    assert_same_tree(loaded.analysis, analysis)
    assert loaded.latent_dim == vae.latent_dim
    assert math.isnan(loaded.metadata.final_train_loss) and loaded.metadata.final_val_loss == math.inf
    assert loaded.metadata.model_id == meta.model_id


def test_every_enum_kind_is_stored_as_its_value(tmp_path: Path, assert_same_tree: Callable[..., None]) -> None:
    class Act(str, enum.Enum):
        LRELU = "lrelu"

    class Level(enum.IntEnum):
        HIGH = 3

    class Perm(enum.Flag):
        R = 4
        W = 2

    class Text(enum.StrEnum):
        A = "a"

    class Nested(enum.Enum):
        PAIR = (1, "x")

    cfg = {"act": Act.LRELU, "level": Level.HIGH, "perm": Perm.R | Perm.W, "text": Text.A, "pair": Nested.PAIR,
           "by_preset": {app.OverfittingPreset.CONSERVATIVE: 1, Level.HIGH: "int-valued enum key"}}
    loaded = load_model(save_model({"w": torch.ones(1)}, {}, cfg, distillgan.ModelMetadata(), tmp_path))
    assert_same_tree(loaded.training_config, {"act": "lrelu", "level": 3, "perm": 6, "text": "a", "pair": (1, "x"),
                                              "by_preset": {"conservative": 1, 3: "int-valued enum key"}})
    for value in loaded.training_config.values():
        assert not isinstance(value, enum.Enum)


# --- the vocoder trainer ----------------------------------------------------------------------


def test_vocoder_state_with_resumable_checkpoint_round_trips(
    tmp_path: Path, voc_state: dict[str, Any], assert_same_tree: Callable[..., None]
) -> None:
    ckpt = voc_state["checkpoint"]
    assert set(ckpt) >= {"generator_state_dict", "mpd_state_dict", "msd_state_dict", "optim_g_state_dict",
                         "optim_d_state_dict", "sched_g_state_dict", "sched_d_state_dict", "epoch"}
    path = save_model(app.build_vae(), {}, {}, app.ModelMetadata(name="With vocoder"), tmp_path, vocoder_state=voc_state)
    loaded = load_model(path).vocoder_state
    assert_same_tree(loaded, saved_form(voc_state))
    optim = loaded["checkpoint"]["optim_g_state_dict"]
    assert all(type(k) is int for k in optim["state"])
    first = next(iter(optim["state"].values()))
    assert first["step"].dim() == 0 and first["step"].dtype == torch.float32
    assert type(optim["param_groups"][0]["betas"]) is tuple and optim["param_groups"][0]["foreach"] is None
    # generator weights appear twice over the same storage (live state dict and checkpoint): stored once, one object
    gen, again = loaded["generator_state_dict"], loaded["checkpoint"]["generator_state_dict"]
    assert all(gen[k] is again[k] for k in gen)
    info = distillgan.inspect(path)
    assert info["manifest"]["members"]["vocoder.safetensors"]["aliases"]
    assert all(t["name"].startswith("vocoder_state/") for t in info["tensors"]["vocoder.safetensors"])
    entry = ModelLibrary(tmp_path).list_all()[0]
    assert entry.vocoder is not None and entry.vocoder.type == voc_state["type"]
    assert entry.vocoder.epochs == voc_state["training_metadata"]["epochs"]
    assert entry.vocoder.final_loss == voc_state["training_metadata"]["final_loss"]


@pytest.mark.parametrize("copy", [False, True], ids=["views", "copy"])
def test_resuming_from_a_loaded_state_is_bit_identical(tmp_path: Path, voc_state: dict[str, Any], copy: bool) -> None:
    """The trainer's resume block, fed from the file, continues exactly as from the live objects."""
    path = save_model({"w": torch.ones(1)}, {}, {}, distillgan.ModelMetadata(), tmp_path, vocoder_state=voc_state)
    from_file = app.resume_from(load_model(path, copy=copy).vocoder_state)
    from_memory = app.resume_from(voc_state)
    assert from_file.start_epoch == from_memory.start_epoch == voc_state["checkpoint"]["epoch"] + 1
    for t in (from_file, from_memory):
        t.step(batch_seed=777)
        t.sched_g.step()
        t.sched_d.step()
    a, b = _training_state(from_file), _training_state(from_memory)
    for part in ("generator", "mpd", "msd"):
        assert list(a[part]) == list(b[part])
        for k in a[part]:
            assert torch.equal(a[part][k].reshape(-1).view(torch.uint8), b[part][k].reshape(-1).view(torch.uint8)), (part, k)
    for part in ("optim_g", "optim_d"):
        for i, s in a[part]["state"].items():
            for k, v in s.items():
                w = b[part]["state"][i][k]
                assert torch.equal(v.reshape(-1).view(torch.uint8), w.reshape(-1).view(torch.uint8)), (part, i, k)
        assert a[part]["param_groups"] == b[part]["param_groups"]
    assert a["sched_g"] == b["sched_g"] and a["sched_d"] == b["sched_d"]


def test_update_vocoder_gives_the_file_save_model_would_write(
    tmp_path: Path, voc_state: dict[str, Any], assert_same_tree: Callable[..., None]
) -> None:
    """The app saves the model, trains the vocoder, then replaces the vocoder in the saved file."""
    vae = app.build_vae()
    meta = app.ModelMetadata(name="Piano", save_date=app.FIXED_SAVE_DATE, model_id="11111111-0000-4000-8000-000000000001")
    folder = tmp_path / "models"
    path = save_model(vae, app.spectrogram_config_dict(), app.training_config_dict(), meta, folder)
    before = ModelLibrary(folder).get(meta.model_id)
    assert before is not None and before.vocoder is None

    assert update_vocoder(path, voc_state) == path
    loaded = load_model(path)
    assert loaded.metadata.model_id == meta.model_id
    assert_same_tree(loaded.vocoder_state, saved_form(voc_state))
    assert_same_tree(loaded.state_dict, dict(vae.state_dict()))
    entry = ModelLibrary(folder).get(meta.model_id)
    assert entry is not None and entry.vocoder is not None and entry.file_size_bytes == path.stat().st_size
    assert [p.name for p in folder.iterdir() if p.suffix == ".distillgan"] == [path.name]
    assert not [p for p in folder.iterdir() if p.name.endswith((".tmp", ".distillgan-tmp"))]

    direct = save_model(vae, app.spectrogram_config_dict(), app.training_config_dict(), meta, tmp_path / "direct",
                        vocoder_state=voc_state)
    assert direct.read_bytes() == path.read_bytes()  # deterministic: the same inputs give the same file

    update_vocoder(path, None)
    assert load_model(path).vocoder_state is None
    assert ModelLibrary(folder).get(meta.model_id).vocoder is None  # type: ignore[union-attr]


def test_update_vocoder_refuses_damaged_weights(tmp_path: Path, voc_state: dict[str, Any]) -> None:
    """Copying the model member byte for byte must not give a bit flip a fresh, valid CRC."""
    path = save_model({"w": torch.arange(64.0)}, {}, {}, distillgan.ModelMetadata(), tmp_path)
    data = bytearray(path.read_bytes())
    with distillgan.open_archive(path) as archive:
        table = archive.tables["model.safetensors"]
        offset = table.data_start + table.tensors[0].begin + 5
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(distillgan.IntegrityError) as e:
        update_vocoder(path, voc_state)
    assert e.value.code == "crc-mismatch"
    assert path.read_bytes() == bytes(data)  # untouched


# --- the training checkpoint -------------------------------------------------------------------


def test_cancelled_training_checkpoint_is_kept_whole(tmp_path: Path, assert_same_tree: Callable[..., None]) -> None:
    """Optimizer and scheduler state, metrics history with NaN, val_loss inf: all of it, as ``extra``."""
    ckpt = app.training_checkpoint(cancelled=True, nan_val_epoch=1, latent_analysis=app.analysis_dict(seed=2))
    assert ckpt["val_loss"] == math.inf
    rest = {k: v for k, v in ckpt.items() if k not in ("model_state_dict", "training_config", "spectrogram_config", "latent_analysis")}
    path = save_model(ckpt["model_state_dict"], ckpt["spectrogram_config"], ckpt["training_config"],
                      app.ModelMetadata(name="From checkpoint", final_val_loss=ckpt["val_loss"]), tmp_path,
                      analysis=ckpt["latent_analysis"], latent_dim=ckpt["training_config"]["latent_dim"], extra=rest)
    loaded = load_model(path)
    assert_same_tree(loaded.extra, saved_form(rest))
    assert_same_tree(loaded.training_config, saved_form(ckpt["training_config"]))
    assert_same_tree(loaded.analysis, ckpt["latent_analysis"])
    assert loaded.latent_dim == 64


def test_seed_format_dict_of_the_app_round_trips(tmp_path: Path, voc_state: dict[str, Any], assert_same_tree: Callable[..., None]) -> None:
    """Every field app v1.1's torch.save dict held has a place, and comes back."""
    saved = app.seed_distillgan_dict(vocoder=voc_state)
    meta = dict(saved["metadata"])
    path = save_model(saved["model_state_dict"], saved["spectrogram_config"], saved["training_config"], meta, tmp_path,
                      analysis=saved["latent_analysis"], vocoder_state=saved["vocoder_state"], latent_dim=saved["latent_dim"])
    loaded = load_model(path)
    assert_same_tree(loaded.state_dict, dict(saved["model_state_dict"]))
    assert_same_tree(loaded.training_config, saved_form(saved["training_config"]))
    assert_same_tree(loaded.analysis, saved["latent_analysis"])
    assert_same_tree(loaded.vocoder_state, saved_form(saved["vocoder_state"]))
    assert loaded.metadata.model_id == saved["metadata"]["model_id"] == meta["model_id"]
    assert {k: v for k, v in vars(loaded.metadata).items()} == {**saved["metadata"], "tags": list(saved["metadata"]["tags"])}


# --- load_model(copy=True) --------------------------------------------------------------------


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc/self/maps")
def test_copy_true_keeps_nothing_mapped(tmp_path: Path, voc_state: dict[str, Any]) -> None:
    """On Windows a mapped file cannot be deleted or replaced: copy=True must leave no mapping behind."""
    path = save_model(app.build_vae(), {}, {}, distillgan.ModelMetadata(), tmp_path, vocoder_state=voc_state)

    def mapped() -> bool:
        gc.collect()
        return str(path) in Path("/proc/self/maps").read_text()

    views = load_model(path)
    assert mapped()  # the default: tensors view the file
    del views
    assert not mapped()
    owned = load_model(path, copy=True)
    assert not mapped()
    some = next(iter(owned.state_dict.values()))
    some.add_(1)  # writable, owns its memory
    os.unlink(path)
    assert torch.isfinite(owned.vocoder_state["checkpoint"]["optim_g_state_dict"]["state"][0]["exp_avg"]).all()


def test_ordered_dict_state_dict_comes_back_a_dict(tmp_path: Path) -> None:
    sd = app.build_vae().state_dict()
    assert type(sd) is OrderedDict
    loaded = load_model(save_model(sd, {}, {}, distillgan.ModelMetadata(), tmp_path)).state_dict
    assert type(loaded) is dict and list(loaded) == list(sd)
