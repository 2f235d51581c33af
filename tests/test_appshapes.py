"""Sanity checks of tests/support/appshapes.py itself: its builders make what app v1.1 makes.

These tests never touch distillgan; they pin down the app's data shapes so
that the interop tests built on appshapes rest on facts.
"""

from __future__ import annotations

import io
import json
import math
import os
import stat
from dataclasses import asdict, fields
from pathlib import Path

import appshapes as app
import numpy as np
import pytest
import torch


def _same(a: object, b: object) -> bool:
    """Bitwise equality of nested structures of tensors, arrays and plain values (NaN equals NaN)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(
            a.view(torch.uint8) if a.dim() else a.reshape(1).view(torch.uint8),
            b.view(torch.uint8) if b.dim() else b.reshape(1).view(torch.uint8),
        )
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return type(a) is type(b) and a == b


def _training_state(t: app.VocoderTraining) -> dict:
    return {
        "generator": t.generator.state_dict(), "mpd": t.mpd.state_dict(), "msd": t.msd.state_dict(),
        "optim_g": t.optim_g.state_dict(), "optim_d": t.optim_d.state_dict(),
        "sched_g": t.sched_g.state_dict(), "sched_d": t.sched_d.state_dict(),
    }


# --- configs ------------------------------------------------------------------


def test_training_config_dict_is_asdict_with_an_enum_member_and_nested_dict() -> None:
    d = app.training_config_dict()
    assert list(d) == [f.name for f in fields(app.TrainingConfig)]
    assert d["preset"] is app.OverfittingPreset.BALANCED and not isinstance(d["preset"], str)
    assert d["regularization"] == {"dropout": 0.2, "weight_decay": 0.01, "augmentation_expansion": 10, "gradient_clip_norm": 1.0}
    assert (d["latent_dim"], d["kl_weight_max"], d["free_bits"], d["device"]) == (64, 0.01, 0.1, "auto")
    small_corpus = app.training_config_dict(12)
    assert small_corpus["preset"] is app.OverfittingPreset.CONSERVATIVE
    assert (small_corpus["max_epochs"], small_corpus["batch_size"], small_corpus["val_fraction"]) == (100, 15, 0.3)
    early = app.training_config_dict(early=True)
    assert "kl_weight_max" not in early and early["free_bits"] == 0.5


def test_spectrogram_config_dict() -> None:
    assert app.spectrogram_config_dict() == {
        "sample_rate": 48000, "n_fft": 2048, "hop_length": 512, "n_mels": 128, "f_min": 0.0, "f_max": None, "power": 2.0,
    }


# --- latent analysis -----------------------------------------------------------


def test_analysis_dict_has_the_serialized_shape_dtypes_and_edge_values() -> None:
    d = app.analysis_dict(latent_dim=16, n_components=3, seed=1)
    assert list(d) == ["version", "pca_components", "pca_mean", "explained_variance_ratio", "n_active_components",
                       "component_labels", "suggested_labels", "safe_min", "safe_max", "warning_min", "warning_max",
                       "step_size", "n_steps", "feature_correlations", "latent_dim"]
    assert d["version"] == 1 and d["n_active_components"] == 3 and d["n_steps"] == 21 and d["latent_dim"] == 16
    assert d["pca_components"].shape == (3, 16) and d["pca_mean"].shape == (16,)
    for key in ("pca_components", "pca_mean", "explained_variance_ratio", "safe_min", "safe_max", "warning_min",
                "warning_max", "step_size"):
        assert isinstance(d[key], np.ndarray) and d[key].dtype == np.float32, key
    assert np.all(d["warning_min"] <= d["safe_min"]) and np.all(d["safe_max"] <= d["warning_max"])
    assert np.all(np.diff(d["explained_variance_ratio"]) <= 0) and d["explained_variance_ratio"].sum() < 1
    assert d["component_labels"] == ["Axis 1", "Axis 2", "Axis 3"]
    corr = d["feature_correlations"]
    assert list(corr) == app.FEATURE_NAMES and all(len(v) == 3 and all(type(x) is float for x in v) for v in corr.values())
    assert math.isnan(corr["rms_energy"][0])  # non-finite audio in component 1's sweep
    assert [corr[n][2] for n in app.FEATURE_NAMES] == [0.0] * 5  # constant sweep: the app's guard stores 0.0
    assert d["suggested_labels"][2] == "Axis 3"
    clean = app.analysis_dict(latent_dim=16, n_components=3, seed=1, constant_component=False, nonfinite_component=False)
    assert not any(math.isnan(x) for v in clean["feature_correlations"].values() for x in v)


# --- vocoder ---------------------------------------------------------------------


def test_vocoder_modules_use_old_weight_norm_and_spectral_norm_in_the_first_msd_scale() -> None:
    t = app.vocoder_training(small=True)
    g = t.generator.state_dict()
    assert list(g)[:3] == ["conv_pre.bias", "conv_pre.weight_g", "conv_pre.weight_v"]
    assert g["conv_pre.weight_g"].shape == (32, 1, 1) and "resblocks.11.convs2.2.weight_v" in g
    assert not any(k.endswith(".weight") or "parametrizations" in k for k in g)
    msd = t.msd.state_dict()
    assert msd["discriminators.0.convs.0.weight_orig"].shape == (16, 1, 15)
    assert msd["discriminators.0.convs.0.weight_v"].shape == (15,)  # spectral norm's v buffer, not weight norm's v
    assert "discriminators.1.convs.0.weight_g" in msd and "discriminators.0.convs.0.weight_g" not in msd
    assert msd._metadata["discriminators.0.convs.0"]["spectral_norm"] == {"weight.version": 1}
    assert sorted({k.split(".")[1] for k in t.mpd.state_dict()}) == ["0", "1", "2", "3", "4"]
    # The full-size shapes (built without training): the app's channel counts.
    full = app.build_msd(small=False).state_dict()
    assert full["discriminators.2.convs.5.weight_v"].shape == (1024, 64, 41)
    full_mpd = app.build_mpd(app.hifigan_config(False), small=False).state_dict()
    assert full_mpd["discriminators.4.convs.3.weight_v"].shape == (1024, 512, 5, 1)


def test_cancelled_vocoder_state_has_the_apps_keys_and_optimizer_shapes() -> None:
    s = app.vocoder_state(small=True, with_checkpoint=True, seed=0)
    assert list(s) == ["type", "generator_state_dict", "config", "training_metadata", "checkpoint"]
    assert s["type"] == "hifigan_v2"
    assert type(s["config"]) is dict and s["config"]["resblock_dilation_sizes"] == [[1, 3, 5]] * 3
    assert asdict(app.HiFiGANConfig(**s["config"])) == s["config"]
    meta = s["training_metadata"]
    assert list(meta) == ["epochs", "total_epochs", "final_loss", "training_date"]
    assert (meta["epochs"], meta["total_epochs"], type(meta["final_loss"])) == (1, 100, float)
    assert meta["training_date"].endswith("+00:00")
    ck = s["checkpoint"]
    assert list(ck) == ["generator_state_dict", "mpd_state_dict", "msd_state_dict", "optim_g_state_dict",
                        "optim_d_state_dict", "sched_g_state_dict", "sched_d_state_dict", "epoch"]
    assert ck["epoch"] == 0
    # the generator weights appear twice, as separate tensors over the same storage
    a, b = s["generator_state_dict"]["conv_pre.weight_v"], ck["generator_state_dict"]["conv_pre.weight_v"]
    assert a is not b and a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
    for name in ("optim_g_state_dict", "optim_d_state_dict"):
        opt = ck[name]
        assert list(opt["state"]) == list(range(len(opt["state"]))) and all(type(k) is int for k in opt["state"])
        group = opt["param_groups"][0]
        assert group["betas"] == (0.8, 0.99) and type(group["betas"]) is tuple
        assert group["foreach"] is None and group["fused"] is None and group["weight_decay"] == 0.01
        assert group["params"] == list(range(len(opt["state"])))
        first = opt["state"][0]
        assert list(first) == ["step", "exp_avg", "exp_avg_sq"]
        assert first["step"].dim() == 0 and first["step"].dtype == torch.float32 and first["step"].item() == 1.0
    assert len(ck["optim_g_state_dict"]["state"]) == len(ck["generator_state_dict"])
    spectral_buffers = sum(1 for k in ck["msd_state_dict"] if k.startswith("discriminators.0.") and k.endswith(("_u", "_v")))
    n_d_params = len(ck["mpd_state_dict"]) + len(ck["msd_state_dict"]) - spectral_buffers
    assert len(ck["optim_d_state_dict"]["state"]) == n_d_params
    assert ck["optim_d_state_dict"]["param_groups"][0]["lr"] == pytest.approx(1e-4)
    # cancelled mid-epoch: the per-epoch scheduler step has not happened yet
    assert ck["sched_g_state_dict"]["last_epoch"] == 0 and ck["sched_g_state_dict"]["_last_lr"] == [0.0002]
    done = app.vocoder_state(small=True, with_checkpoint=False, seed=0, epochs_done=2)
    assert "checkpoint" not in done and done["training_metadata"]["epochs"] == done["training_metadata"]["total_epochs"] == 2


def test_resume_from_continues_training_bit_for_bit(tmp_path: Path) -> None:
    """build -> step -> vocoder_state -> resume -> step equals build -> step -> step, also via torch.save and plain dicts."""
    t = app.vocoder_training(small=True, seed=3)
    t.step(10)
    state = app.build_vocoder_state(t.generator, t.config, 0, 100, 1.0, app.vocoder_checkpoint_data(t, 0))
    buf = io.BytesIO()
    torch.save(state, buf)
    saved = buf.getvalue()
    plain = app.plain_copy(state)
    t.step(11)
    expected = _training_state(t)
    for source in (torch.load(io.BytesIO(saved), weights_only=False), plain):
        r = app.resume_from(source, small=True)
        assert r.start_epoch == 1
        r.step(11)
        assert _same(_training_state(r), expected)
    # a vocoder_state without checkpoint is "resumed" from scratch by the app
    fresh = app.resume_from(app.vocoder_state(small=True, with_checkpoint=False))
    assert fresh.start_epoch == 0 and not fresh.optim_g.state_dict()["state"]


def test_inference_generator_loads_the_generator_and_fuses_weight_norm() -> None:
    s = app.vocoder_state(small=True, with_checkpoint=False, seed=2)
    g = app.inference_generator(app.plain_copy(s))
    assert "conv_pre.weight" in g.state_dict() and "conv_pre.weight_g" not in g.state_dict()
    with torch.no_grad():
        wav = g(torch.rand(1, 128, 3))
    assert wav.shape == (1, 1, 3 * 512)


# --- VAE training checkpoint ------------------------------------------------------------


def test_training_checkpoint_cancelled_matches_save_checkpoint_and_loads_the_app_way() -> None:
    ck = app.training_checkpoint(cancelled=True, epoch=2)
    assert list(ck) == ["version", "epoch", "step", "model_state_dict", "optimizer_state_dict", "scheduler_state_dict",
                        "train_loss", "val_loss", "kl_weight", "training_config", "spectrogram_config", "metrics_history",
                        "latent_analysis"]
    assert ck["val_loss"] == float("inf") and math.isfinite(ck["train_loss"]) and ck["step"] == 0
    assert ck["training_config"]["preset"] is app.OverfittingPreset.BALANCED and ck["latent_analysis"] is None
    hist = ck["metrics_history"]
    assert hist["step_metrics"] == [] and [m["epoch"] for m in hist["epoch_metrics"]] == [0, 1]
    assert list(hist["epoch_metrics"][0]) == [f.name for f in fields(app.EpochMetrics)]
    assert ck["scheduler_state_dict"]["last_epoch"] == 2  # two finished epochs; the cancelled one is not stepped
    keys = list(ck["model_state_dict"])
    assert keys[:3] == ["encoder.convs.0.weight", "encoder.convs.0.bias", "encoder.convs.1.weight"]
    assert keys.index("encoder.fc_logvar.bias") < keys.index("decoder.deconvs.0.weight")
    assert keys[-2:] == ["decoder.fc.weight", "decoder.fc.bias"]
    assert ck["model_state_dict"]["encoder.convs.1.num_batches_tracked"].dtype == torch.int64
    assert '"val_loss": Infinity' in app.checkpoint_sidecar_text(ck)
    model, _opt, sched, start = app.app_load_checkpoint(app.plain_copy(ck))
    assert start == 3 and model.latent_dim == 64 and sched.last_epoch == 2
    nan = app.training_checkpoint(cancelled=True, nan_train_loss=True, epoch=1)
    assert math.isnan(nan["train_loss"]) and nan["val_loss"] == float("inf")
    assert sum(v.numel() for v in app.build_vae(small=False).state_dict().values() if v.is_floating_point()) > 3_000_000


# --- seed files and the index ---------------------------------------------------------------


def test_seed_distillgan_dict_pickles_like_the_app(tmp_path: Path) -> None:
    voc = app.vocoder_state(small=True, with_checkpoint=True, seed=0)
    saved = app.seed_distillgan_dict(vocoder=voc)
    assert list(saved) == ["format", "version", "model_state_dict", "latent_dim", "spectrogram_config", "latent_analysis",
                           "training_config", "metadata", "vocoder_state"]
    assert saved["format"] == "distillgan_model" and saved["latent_dim"] == 64
    meta = saved["metadata"]
    assert list(meta) == [f.name for f in fields(app.ModelMetadata)]
    assert meta["training_date"] == "" and meta["training_epochs"] == 200 and meta["has_analysis"] is True
    path = app.write_app_pickle(saved, tmp_path / "m.distillgan")
    raw = path.read_bytes()
    assert raw[:2] == b"PK" and b"distill.training.config" in raw and b"OverfittingPreset" in raw
    back = app.read_app_pickle(path)
    assert back["training_config"]["preset"] is app.OverfittingPreset.BALANCED
    assert _same(back["vocoder_state"]["checkpoint"], voc["checkpoint"])
    via_ckpt = app.seed_distillgan_dict(via="checkpoint", checkpoint=app.training_checkpoint(cancelled=True))
    assert via_ckpt["metadata"]["final_val_loss"] == float("inf") and via_ckpt["metadata"]["training_epochs"] == 2
    legacy = app.legacy_distill_dict(early=True)
    assert legacy["format"] == "distill_model" and "vocoder_state" not in legacy
    assert "kl_weight_max" not in legacy["training_config"]


def test_app_model_library_index_format_and_semantics(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    saved = app.seed_distillgan_dict(name="Rain / Thunder!", tags=["Field"],
                                     checkpoint=app.training_checkpoint(cancelled=True, nan_train_loss=True), via="checkpoint")
    path = app.app_save_model(saved, tmp_path)
    assert path.name == "rain_thunder.distillgan"
    index = tmp_path / "model_library.json"
    text = index.read_text()
    assert "NaN" in text and "Infinity" in text and not text.endswith("\n")
    assert stat.S_IMODE(os.stat(index).st_mode) == 0o600
    raw = json.loads(text)
    assert raw["version"] == 2 and list(raw["models"]) == [saved["metadata"]["model_id"]]
    entry = raw["models"][saved["metadata"]["model_id"]]
    assert list(entry) == [f.name for f in fields(app.ModelEntry)] and entry["vocoder"] is None
    assert entry["file_path"] == "rain_thunder.distillgan"

    second = app.seed_distillgan_dict(name="Rain / Thunder!", seed=1, description="drums")
    assert app.app_save_model(second, tmp_path).name == "rain_thunder_1.distillgan"
    assert (tmp_path / "model_library.json.bak").exists()
    lib = app.AppModelLibrary(tmp_path)
    assert lib.count() == 2 and [e.name for e in lib.search("DRUM")] == ["Rain / Thunder!"]
    assert len(lib.search(tags=["field"])) == 1 and len(lib.list_all()) == 2
    assert math.isnan(lib.get(saved["metadata"]["model_id"]).final_train_loss)

    # an entry with an unknown key is skipped, the rest still loads
    raw = json.loads(index.read_text())
    raw["models"][second["metadata"]["model_id"]]["extra"] = 1
    index.write_text(json.dumps(raw))
    with caplog.at_level("WARNING", logger="appshapes"):
        assert app.AppModelLibrary(tmp_path).count() == 1
    assert "Skipping corrupt entry" in caplog.text

    # repair: the stale entry goes, both files come back as orphans (vocoder None), a non-pickle orphan is skipped
    (tmp_path / "ours.distillgan").write_bytes(b"PK\x03\x04 not a torch file")
    path.unlink()
    lib = app.AppModelLibrary(tmp_path)
    assert lib.repair_index() == (1, 1)
    assert [e.file_path for e in lib.list_all()] == ["rain_thunder_1.distillgan"]

    # the vocoder is written into the file, never into the index
    voc = app.vocoder_state(small=True, with_checkpoint=False)
    app.app_save_vocoder_state(tmp_path / "rain_thunder_1.distillgan", voc)
    assert app.AppModelLibrary(tmp_path).list_all()[0].vocoder is None
    assert "vocoder_state" in app.read_app_pickle(tmp_path / "rain_thunder_1.distillgan")
