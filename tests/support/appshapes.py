"""What the real app stores: builders rebuilt from Distill (taylorbrook/Distill_SmallCorpusGenerativeAIAudio, tag v1.1).

This module never imports ``distillgan``: it rebuilds, in its own code, the
data structures the app writes, so tests can check that our library stores and
returns exactly those.  Everything is deterministic (seeded); nothing reads the
clock or the global RNG in a way that leaks out.

Which app code each builder mirrors (paths under ``src/distill/`` at v1.1)
--------------------------------------------------------------------------
OverfittingPreset, RegularizationConfig, TrainingConfig, PRESET_PARAMS,
get_adaptive_config, training_config_dict
    training/config.py; ``training_config_dict`` is ``dataclasses.asdict(config)``
    exactly as training/loop.py passes it to ``save_model`` and ``save_checkpoint``.
SpectrogramConfig, spectrogram_config_dict
    audio/spectrogram.py (``asdict(SpectrogramConfig())`` as loop.py stores it).
AnalysisResult, analysis_to_dict, analysis_result, analysis_dict, FEATURE_NAMES
    controls/analyzer.py (``LatentSpaceAnalyzer.analyze``), controls/serialization.py
    (``analysis_to_dict``), controls/features.py (feature names, guards).
ModelMetadata, sanitize_filename
    models/persistence.py (its own dataclass, not ours).
StepMetrics, EpochMetrics, MetricsHistory, metrics_history_dict
    training/metrics.py (``MetricsHistory.to_dict``).
ConvEncoder, ConvDecoder, ConvVAE, init_lazy_linears, build_vae, vae_training,
vae_train_step, get_kl_weight
    models/vae.py, models/losses.py, and the model/optimiser/scheduler set-up
    in training/loop.py ``train``.  ``small=True`` narrows the channels only;
    key names, the lazy linears and their registration order are the app's.
training_checkpoint, checkpoint_sidecar_text, app_load_checkpoint
    training/checkpoint.py ``save_checkpoint`` / ``load_checkpoint`` with the
    arguments loop.py ``_save_checkpoint_safe`` passes (cancel path included).
HiFiGANConfig, hifigan_config, ResBlock1, Generator (= HiFiGANGenerator),
PeriodDiscriminator, MultiPeriodDiscriminator, ScaleDiscriminator,
MultiScaleDiscriminator, generator_loss, discriminator_loss, feature_loss
    vocoder/hifigan/config.py, generator.py, discriminator.py, losses.py.
    ``small=True`` narrows channels (generator via ``upsample_initial_channel``,
    discriminators via constructor arguments the app does not have); parameter
    names, norm style, kernel sizes, strides and groups are the app's.
VocoderTraining, vocoder_training, train_one_step, build_vocoder_state,
vocoder_checkpoint_data, vocoder_state, resume_from
    vocoder/hifigan/trainer.py ``VocoderTrainer.train`` (optimisers,
    schedulers, D/G step, cancel paths, resume block) and
    ``VocoderTrainer._build_vocoder_state``.
inference_generator
    vocoder/hifigan/vocoder.py ``HiFiGANVocoder.__init__``.
seed_distillgan_dict, legacy_distill_dict, write_app_pickle, read_app_pickle,
app_module_aliases, app_save_model, app_save_vocoder_state
    models/persistence.py ``save_model`` / ``save_model_from_checkpoint``,
    trainer.py ``_save_vocoder_state``; the legacy ``.distill`` dict is
    persistence.py before commit c594363 (initial push 116a9f0 for ``early``).
VocoderInfo, ModelEntry, AppModelLibrary, write_index_atomic, catalog_entry,
legacy_index_dict
    library/catalog.py (``ModelLibrary``), plus the entry save_model builds.

Surprises found in the app's data (details next to each builder)
-----------------------------------------------------------------
* ``training_config`` is ``asdict(TrainingConfig)``: ``preset`` stays an
  ``OverfittingPreset`` Enum *member* (a plain Enum, no ``str`` mixin, value
  e.g. ``"balanced"``), ``regularization`` becomes a nested dict.  In the
  app's pickles the Enum is a global ``distill.training.config.OverfittingPreset``,
  so ``torch.load`` of any app file needs the app importable (and
  ``weights_only=True`` refuses it).  json with ``default=str`` would turn it
  into ``"OverfittingPreset.BALANCED"``.
* ``spectrogram_config["f_max"]`` is ``None``.
* The latent analysis holds numpy arrays, all float32 (sklearn PCA keeps the
  float32 of the encoder's mu; ``np.percentile`` of float32 stays float32),
  plus python ints, lists of str and a ``dict[str, list[float]]``.
  A *constant* feature sweep does NOT give NaN: the analyzer guards
  ``np.std(values) < 1e-12`` and stores 0.0 (p = 1.0).  NaN appears only when
  a feature value is non-finite (NaN/inf audio from the decoder+vocoder makes
  ``rms_energy`` NaN; the other features are guarded to 0.0 there), or when the
  sweep itself is constant (safe_min == safe_max) while features jitter, since
  ``pearsonr`` of a constant x is NaN.  NaN correlations are never chosen as
  labels (``abs(nan) > 0.5`` is False).
* ``TrainingConfig`` field ``kl_weight_max`` and the values ``free_bits=0.1``,
  ``preview_interval=20`` only exist since commit 83d43ab/926df6d: the earliest
  ``.distill`` files hold ``free_bits=0.5``, ``preview_interval=5`` and no
  ``kl_weight_max``.
* The vocoder's ``config`` is ``dataclasses.asdict(HiFiGANConfig)``: a plain
  dict of ints, floats, lists and a list of lists (not the dataclass object).
  The app reads it back with ``HiFiGANConfig(**config)``.  ``resblock_type``
  is stored but ignored (always ResBlock1).
* Weight norm is the OLD ``torch.nn.utils.weight_norm`` (deprecated; warns
  FutureWarning): keys ``...weight_g`` (shape ``[out, 1, 1]``) and
  ``...weight_v``; no ``weight`` key.  The MSD's first scale uses the OLD
  ``torch.nn.utils.spectral_norm``: keys ``weight_orig`` (parameter),
  ``weight_u`` and ``weight_v`` (buffers, 1-D, updated by every training
  forward) -- so ``weight_v`` means two different things in one state dict.
  Spectral norm also records ``{"spectral_norm": {"weight.version": 1}}`` in
  ``state_dict()._metadata``; loading a plain dict without it still works.
  Parameter order inside each normed conv is ``bias, weight_g, weight_v``
  (bias first), which is the order the AdamW int keys follow.
* AdamW state dicts: ``state`` keyed by python ints, ``step`` a 0-d float32
  tensor, ``betas`` a tuple ``(0.8, 0.99)``, ``foreach``/``fused`` ``None``,
  ``initial_lr`` added by the scheduler, ``decoupled_weight_decay`` True (the
  exact param-group keys depend on the torch version; the app pins 2.10).
  Weight decay is torch's AdamW default 0.01: HiFiGANConfig has no field for
  it.  The discriminator optimiser covers ``list(mpd.parameters()) +
  list(msd.parameters())`` at ``lr * 0.5``.  ExponentialLR state dicts hold
  ``_last_lr``/``base_lrs`` lists and ``_is_initial``.
* The vocoder's cancel check runs after every batch and returns BEFORE the
  per-epoch scheduler step, so a cancelled checkpoint almost always has
  schedulers one step behind its ``epoch``; resume starts at ``epoch + 1``
  (the rest of the cancelled epoch is skipped).  ``training_metadata.epochs``
  is ``epoch + 1`` even then; ``final_loss`` is the partial-epoch average.
* The cancelled vocoder_state holds the generator weights twice
  (``generator_state_dict`` and ``checkpoint.generator_state_dict`` are two
  ``state_dict()`` calls): different tensor objects sharing storage, and
  ``torch.save`` keeps that sharing.
* The app resumes with a NEW ``HiFiGANConfig(learning_rate=..., batch_size=...)``
  from the UI/CLI, not the stored config; since the optimiser state dict
  restores ``lr``, the new learning rate is silently ignored.  A vocoder_state
  without ``checkpoint`` (training completed) is "resumed" from scratch.
* In the G step the mel L1 loss is computed from ``wav_fake_g.clamp()`` taken
  under ``torch.no_grad()``, so it carries no gradient (the app's mel loss is
  inert); generator gradients come from the adversarial and feature losses.
* The VAE checkpoint's ``step`` is always 0; ``metrics_history.step_metrics``
  is always ``[]`` (loop.py never calls ``add_step``).  On cancel,
  ``val_loss = float("inf")`` and ``train_loss`` is NaN if the epoch was
  cancelled before its first step; ``latent_analysis`` is None except in the
  final re-save.  Epoch metrics can hold NaN (empty validation loader, NaN
  training epoch).  The sidecar ``.meta.json`` then holds ``Infinity``/``NaN``.
* ``save_model_from_checkpoint`` (the CLI and the Library tab's save path)
  writes ``training_epochs = checkpoint["epoch"]`` (0-based, one short),
  ``latent_dim = 64`` whatever the model (checkpoints hold no latent_dim) and
  copies ``val_loss`` -- ``inf`` when the only checkpoint is a cancelled one,
  which ``get_best_checkpoint`` then picks.  The CLI sets ``training_date`` in
  local time without offset (``%Y-%m-%dT%H:%M:%S``); loop.py leaves it ``""``;
  ``save_date`` is UTC ``isoformat()`` with ``+00:00``.
* ``model_library.json``: ``json.dump(data, f, indent=2, default=str)`` --
  ``allow_nan`` left on, so NaN/inf become the non-JSON tokens ``NaN`` and
  ``Infinity``; ASCII-escaped; no trailing newline; written to a
  ``tempfile.mkstemp`` file then ``os.replace``d, so the index has mode 0600;
  the previous index is first copied to ``model_library.json.bak``.  The
  reader ignores ``version``; an entry with an unknown or missing key (or a
  bad ``vocoder``) is skipped with a warning, but a non-dict top level or
  entry raises.  ``vocoder`` is never filled in v1.1: the only writer of
  ``vocoder_state`` (``_save_vocoder_state``) rewrites the model file without
  touching the index (``file_size_bytes`` goes stale too).  ``repair_index``
  unpickles orphans with ``torch.load(weights_only=False)`` and always sets
  ``vocoder=None``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import math
import os
import random
import re
import shutil
import sys
import tempfile
import types
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger("appshapes")

FIXED_SAVE_DATE = "2026-01-15T10:20:30.123456+00:00"  # what datetime.now(timezone.utc).isoformat() looks like
FIXED_TRAINING_DATE = "2026-01-15T09:58:12.654321+00:00"
CLI_TRAINING_DATE = "2026-01-15T10:20:29"  # cli/train.py: datetime.now().strftime("%Y-%m-%dT%H:%M:%S"), local, no offset


# ===========================================================================
# 1. Training configuration (training/config.py)
# ===========================================================================


class OverfittingPreset(Enum):
    """A plain Enum (no str mixin): asdict() keeps the member itself."""

    CONSERVATIVE = "conservative"
    BALANCED = "balanced"
    AGGRESSIVE = "aggressive"


PRESET_PARAMS: dict[OverfittingPreset, dict[str, float | int]] = {
    OverfittingPreset.CONSERVATIVE: {
        "dropout": 0.4, "weight_decay": 0.05, "augmentation_expansion": 15, "gradient_clip_norm": 0.5,
        "max_epochs": 100, "learning_rate": 5e-4, "kl_warmup_fraction": 0.5,
    },
    OverfittingPreset.BALANCED: {
        "dropout": 0.2, "weight_decay": 0.01, "augmentation_expansion": 10, "gradient_clip_norm": 1.0,
        "max_epochs": 200, "learning_rate": 1e-3, "kl_warmup_fraction": 0.3,
    },
    OverfittingPreset.AGGRESSIVE: {
        "dropout": 0.1, "weight_decay": 0.001, "augmentation_expansion": 5, "gradient_clip_norm": 5.0,
        "max_epochs": 500, "learning_rate": 2e-3, "kl_warmup_fraction": 0.2,
    },
}


@dataclass
class RegularizationConfig:
    dropout: float = 0.2
    weight_decay: float = 0.01
    augmentation_expansion: int = 10
    gradient_clip_norm: float = 1.0


@dataclass
class TrainingConfig:
    latent_dim: int = 64
    batch_size: int = 32
    max_epochs: int = 200
    learning_rate: float = 1e-3
    kl_warmup_fraction: float = 0.3
    kl_weight_max: float = 0.01
    free_bits: float = 0.1
    val_fraction: float = 0.2
    chunk_duration_s: float = 1.0
    checkpoint_interval: int = 10
    preview_interval: int = 20
    preview_interval_short: int = 2
    max_checkpoints: int = 3
    preset: OverfittingPreset = OverfittingPreset.BALANCED
    regularization: RegularizationConfig = field(default_factory=RegularizationConfig)
    device: str = "auto"
    num_workers: int = 0


def get_adaptive_config(file_count: int) -> TrainingConfig:
    """The config every UI/CLI run starts from: preset, val split and batch size by dataset size.

    Small corpora (< 50 files, the app's target) get CONSERVATIVE: 100 epochs,
    lr 5e-4, dropout 0.4, weight decay 0.05, val_fraction 0.5 or 0.3, and
    batch_size ``min(32, max(1, file_count * 5 // 4))``.
    """
    if file_count < 50:
        preset = OverfittingPreset.CONSERVATIVE
    elif file_count < 200:
        preset = OverfittingPreset.BALANCED
    else:
        preset = OverfittingPreset.AGGRESSIVE
    p = PRESET_PARAMS[preset]
    if file_count < 10:
        val_fraction = 0.5
    elif file_count < 50:
        val_fraction = 0.3
    elif file_count < 200:
        val_fraction = 0.2
    else:
        val_fraction = 0.1
    batch_size = min(32, max(1, (file_count * 5) // 4))
    reg = RegularizationConfig(
        dropout=p["dropout"], weight_decay=p["weight_decay"],
        augmentation_expansion=int(p["augmentation_expansion"]), gradient_clip_norm=p["gradient_clip_norm"],
    )
    return TrainingConfig(
        latent_dim=64, batch_size=batch_size, max_epochs=int(p["max_epochs"]), learning_rate=p["learning_rate"],
        kl_warmup_fraction=p["kl_warmup_fraction"], free_bits=0.1, val_fraction=val_fraction, chunk_duration_s=1.0,
        preset=preset, regularization=reg,
    )


def training_config_dict(file_count: int | None = None, *, early: bool = False) -> dict[str, Any]:
    """``asdict(config)`` as loop.py stores it (an Enum member inside, a nested dict for regularization).

    ``file_count=None``: ``TrainingConfig()`` defaults (what the app's own tests
    expect); an int: ``get_adaptive_config(file_count)`` (what UI/CLI runs use).
    ``early=True``: the shape of the initial push (116a9f0): no ``kl_weight_max``,
    ``free_bits=0.5``, ``preview_interval=5``.
    """
    cfg = TrainingConfig() if file_count is None else get_adaptive_config(file_count)
    d = asdict(cfg)
    if early:
        d.pop("kl_weight_max")
        d["free_bits"] = 0.5
        d["preview_interval"] = 5
    return d


def get_kl_weight(epoch: int, total_epochs: int, warmup_fraction: float = 0.3, kl_weight_max: float = 1.0) -> float:
    """models/losses.py: linear KL warm-up (0.0 at epoch 0)."""
    warmup_epochs = int(total_epochs * warmup_fraction)
    if warmup_epochs == 0:
        return kl_weight_max
    return min(kl_weight_max, kl_weight_max * epoch / warmup_epochs)


# ===========================================================================
# 2. Spectrogram configuration (audio/spectrogram.py)
# ===========================================================================


@dataclass
class SpectrogramConfig:
    sample_rate: int = 48_000
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 128
    f_min: float = 0.0
    f_max: float | None = None
    power: float = 2.0


def spectrogram_config_dict() -> dict[str, Any]:
    """``asdict(SpectrogramConfig())``: note ``f_max`` is None."""
    return asdict(SpectrogramConfig())


def _vae_spatial(spec: SpectrogramConfig) -> tuple[int, int]:
    """loop.py / persistence.py: (n_mels, sr // hop + 1) padded to x16, divided by 16 -> (8, 6) by default."""
    n_mels = spec.n_mels
    time_frames = spec.sample_rate // spec.hop_length + 1
    pad_h = (16 - n_mels % 16) % 16
    pad_w = (16 - time_frames % 16) % 16
    return ((n_mels + pad_h) // 16, (time_frames + pad_w) // 16)


# ===========================================================================
# 3. Latent analysis (controls/analyzer.py, controls/serialization.py)
# ===========================================================================

FEATURE_NAMES = ["spectral_centroid", "rms_energy", "zero_crossing_rate", "spectral_rolloff", "spectral_flatness"]


@dataclass
class AnalysisResult:
    pca_components: Any  # float32 [n_active, latent_dim]
    pca_mean: Any  # float32 [latent_dim]
    explained_variance_ratio: Any  # float32 [n_active]
    n_active_components: int
    component_labels: list[str]
    suggested_labels: list[str]
    safe_min: Any  # float32 [n_active], 2nd percentile
    safe_max: Any  # 98th
    warning_min: Any  # 0.5th
    warning_max: Any  # 99.5th
    step_size: Any  # (safe_max - safe_min) / (n_steps - 1)
    n_steps: int = 21
    feature_correlations: dict[str, list[float]] = field(default_factory=dict)
    latent_dim: int = 64


def analysis_to_dict(analysis: AnalysisResult) -> dict[str, Any]:
    """serialization.py ``analysis_to_dict``: arrays kept as numpy, ``version`` 1 first."""
    return {
        "version": 1,
        "pca_components": analysis.pca_components,
        "pca_mean": analysis.pca_mean,
        "explained_variance_ratio": analysis.explained_variance_ratio,
        "n_active_components": analysis.n_active_components,
        "component_labels": list(analysis.component_labels),
        "suggested_labels": list(analysis.suggested_labels),
        "safe_min": analysis.safe_min,
        "safe_max": analysis.safe_max,
        "warning_min": analysis.warning_min,
        "warning_max": analysis.warning_max,
        "step_size": analysis.step_size,
        "n_steps": analysis.n_steps,
        "feature_correlations": dict(analysis.feature_correlations),
        "latent_dim": analysis.latent_dim,
    }


def analysis_result(
    latent_dim: int = 64,
    n_components: int = 5,
    seed: int = 0,
    constant_component: bool = True,
    nonfinite_component: bool = True,
    *,
    n_training: int = 48,
    n_prior: int = 200,
    n_steps: int = 21,
) -> AnalysisResult:
    """An AnalysisResult as ``LatentSpaceAnalyzer.analyze`` builds it, from synthetic encodings.

    The mu vectors are float32 (training encodings with ``n_components``
    strong directions plus ``n_prior`` N(0, 1) prior samples, as the app adds
    200); PCA is done the sklearn way in float32 (centre, SVD, sign flip, ratio
    of total variance); ranges are ``np.percentile`` of the float32
    projections.  Correlations are synthetic python floats in [-1, 1] with the
    app's edge cases:

    * ``constant_component``: the last component's sweep decodes to identical
      audio, so every feature is constant and the app's std guard stores 0.0.
    * ``nonfinite_component``: the first component's sweep reaches non-finite
      audio at some point, so ``rms_energy`` holds NaN there and its Pearson r
      is NaN (the other features are guarded to finite values by the app).
    """
    n_components = max(1, min(n_components, latent_dim, 20))
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((n_components, latent_dim))
    scales = 4.0 * 0.7 ** np.arange(n_components)
    training = (rng.standard_normal((n_training, n_components)) * scales) @ basis
    training += 0.05 * rng.standard_normal((n_training, latent_dim))
    prior = rng.standard_normal((n_prior, latent_dim))
    mu = np.concatenate([training, prior], axis=0).astype(np.float32)

    mean = mu.mean(axis=0)  # float32, like sklearn's mean_ for float32 input
    centred = mu - mean
    _u, s, vt = np.linalg.svd(centred, full_matrices=False)
    signs = np.sign(vt[np.arange(vt.shape[0]), np.argmax(np.abs(vt), axis=1)])
    vt = vt * signs[:, None]
    variance = (s**2) / (mu.shape[0] - 1)
    total = centred.var(axis=0, ddof=1).sum()
    ratio = (variance / total).astype(np.float32)

    components = np.ascontiguousarray(vt[:n_components]).astype(np.float32)
    projected = (centred @ components.T).astype(np.float32)
    safe_min = np.percentile(projected, 2, axis=0)
    safe_max = np.percentile(projected, 98, axis=0)
    warning_min = np.percentile(projected, 0.5, axis=0)
    warning_max = np.percentile(projected, 99.5, axis=0)
    step_size = (safe_max - safe_min) / (n_steps - 1)

    corr: dict[str, list[float]] = {name: [] for name in FEATURE_NAMES}
    for comp in range(n_components):
        for name in FEATURE_NAMES:
            if nonfinite_component and comp == 0 and name == "rms_energy":
                corr[name].append(float("nan"))  # pearsonr with a NaN among the values
            elif constant_component and comp == n_components - 1:
                corr[name].append(0.0)  # np.std(values) < 1e-12 -> 0.0 (p = 1.0)
            else:
                corr[name].append(float(rng.uniform(-1.0, 1.0)))

    default_labels = [f"Axis {i + 1}" for i in range(n_components)]
    suggested: list[str] = []
    for comp in range(n_components):
        best, best_abs = None, 0.0
        for name in FEATURE_NAMES:
            r = corr[name][comp]
            # app: abs(r) > 0.5 and p < 0.05; with 20 sweep points |r| > 0.5 implies p < 0.025
            if abs(r) > 0.5 and abs(r) > best_abs:
                best, best_abs = name, abs(r)
        suggested.append(best if best is not None else default_labels[comp])

    return AnalysisResult(
        pca_components=components,
        pca_mean=mean,
        explained_variance_ratio=np.ascontiguousarray(ratio[:n_components]),
        n_active_components=int(n_components),
        component_labels=list(default_labels),
        suggested_labels=suggested,
        safe_min=safe_min,
        safe_max=safe_max,
        warning_min=warning_min,
        warning_max=warning_max,
        step_size=step_size,
        n_steps=n_steps,
        feature_correlations=corr,
        latent_dim=latent_dim,
    )


def analysis_dict(
    latent_dim: int = 64, n_components: int = 5, seed: int = 0, constant_component: bool = True, **kwargs: Any
) -> dict[str, Any]:
    """``analysis_to_dict(analysis_result(...))``: the ``latent_analysis`` value of app files and checkpoints."""
    return analysis_to_dict(analysis_result(latent_dim, n_components, seed, constant_component, **kwargs))


# ===========================================================================
# 4. ModelMetadata (models/persistence.py) -- the app's own class
# ===========================================================================


@dataclass
class ModelMetadata:
    model_id: str = ""
    name: str = "Untitled Model"
    description: str = ""
    dataset_name: str = ""
    dataset_file_count: int = 0
    dataset_total_duration_s: float = 0.0
    training_date: str = ""
    save_date: str = ""
    training_epochs: int = 0
    final_train_loss: float = 0.0
    final_val_loss: float = 0.0
    tags: list[str] = field(default_factory=list)
    has_analysis: bool = False
    n_active_components: int = 0


def sanitize_filename(name: str) -> str:
    """persistence.py ``_sanitize_filename``."""
    s = re.sub(r"[^a-zA-Z0-9_\-]", "_", name)
    s = re.sub(r"_+", "_", s).strip("_").lower()[:100]
    return s or "untitled"


# ===========================================================================
# 5. HiFi-GAN V2 (vocoder/hifigan/)
# ===========================================================================

LRELU_SLOPE = 0.1
FULL_MPD_CHANNELS = (32, 128, 512, 1024, 1024)
SMALL_MPD_CHANNELS = (4, 8, 16, 16, 16)
FULL_MSD_CHANNELS = (128, 128, 256, 512, 1024, 1024, 1024)
SMALL_MSD_CHANNELS = (16, 16, 32, 32, 32, 32, 32)
_MSD_LAYERS = (  # (kernel, stride, groups, padding) of the seven convs, as in the app
    (15, 1, 1, 7), (41, 2, 4, 20), (41, 2, 16, 20), (41, 4, 16, 20), (41, 4, 16, 20), (41, 1, 16, 20), (5, 1, 1, 2),
)


@dataclass
class HiFiGANConfig:
    resblock_type: int = 1
    upsample_rates: list[int] = field(default_factory=lambda: [8, 8, 4, 2])
    upsample_kernel_sizes: list[int] = field(default_factory=lambda: [16, 16, 8, 4])
    upsample_initial_channel: int = 128
    resblock_kernel_sizes: list[int] = field(default_factory=lambda: [3, 7, 11])
    resblock_dilation_sizes: list[list[int]] = field(default_factory=lambda: [[1, 3, 5], [1, 3, 5], [1, 3, 5]])
    num_mels: int = 128
    sample_rate: int = 48_000
    hop_size: int = 512
    learning_rate: float = 0.0002
    adam_b1: float = 0.8
    adam_b2: float = 0.99
    lr_decay: float = 0.999
    segment_size: int = 24_576
    batch_size: int = 8
    mpd_periods: list[int] = field(default_factory=lambda: [2, 3, 5, 7, 11])

    def __post_init__(self) -> None:
        product = math.prod(self.upsample_rates)
        if product != self.hop_size:
            raise ValueError(f"Product of upsample_rates {self.upsample_rates} is {product}, but hop_size is {self.hop_size}.")
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise ValueError("upsample_rates and upsample_kernel_sizes must have the same length.")


def hifigan_config(small: bool = True) -> HiFiGANConfig:
    """The app has no presets: the defaults are the only config (CLI/UI override lr and batch size).

    ``small=True`` only narrows ``upsample_initial_channel`` to 32.
    """
    return HiFiGANConfig(upsample_initial_channel=32) if small else HiFiGANConfig()


def _old_weight_norm(module: nn.Module) -> nn.Module:
    with warnings.catch_warnings():  # the app uses the deprecated API, which warns FutureWarning
        warnings.simplefilter("ignore", FutureWarning)
        return torch.nn.utils.weight_norm(module)


def _old_spectral_norm(module: nn.Module) -> nn.Module:
    return torch.nn.utils.spectral_norm(module)


def _pad(kernel: int, dilation: int) -> int:
    return (kernel * dilation - dilation) // 2


class ResBlock1(nn.Module):
    def __init__(self, channels: int, kernel_size: int, dilations: list[int]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            _old_weight_norm(nn.Conv1d(channels, channels, kernel_size, 1, dilation=d, padding=_pad(kernel_size, d)))
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            _old_weight_norm(nn.Conv1d(channels, channels, kernel_size, 1, dilation=1, padding=_pad(kernel_size, 1)))
            for _ in dilations
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            xt = c2(F.leaky_relu(c1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE))
            x = xt + x
        return x

    def remove_weight_norm(self) -> None:
        for c in [*self.convs1, *self.convs2]:
            torch.nn.utils.remove_weight_norm(c)


class Generator(nn.Module):
    """HiFiGANGenerator: conv_pre, ups.{i}, resblocks.{i*3+j}.convs{1,2}.{k}, conv_post -- all old weight norm."""

    def __init__(self, config: HiFiGANConfig) -> None:
        super().__init__()
        self.num_kernels = len(config.resblock_kernel_sizes)
        self.num_upsamples = len(config.upsample_rates)
        self.hop_size = config.hop_size
        self.conv_pre = _old_weight_norm(nn.Conv1d(config.num_mels, config.upsample_initial_channel, 7, padding=3))
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        ch = config.upsample_initial_channel
        for u, k in zip(config.upsample_rates, config.upsample_kernel_sizes):
            self.ups.append(_old_weight_norm(nn.ConvTranspose1d(ch, ch // 2, k, stride=u, padding=(k - u) // 2)))
            ch //= 2
            for rk, rd in zip(config.resblock_kernel_sizes, config.resblock_dilation_sizes):
                self.resblocks.append(ResBlock1(ch, rk, rd))
        self.conv_post = _old_weight_norm(nn.Conv1d(ch, 1, 7, padding=3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_pre(x)
        for i in range(self.num_upsamples):
            x = self.ups[i](F.leaky_relu(x, LRELU_SLOPE))
            xs = torch.zeros_like(x)
            for j in range(self.num_kernels):
                xs += self.resblocks[i * self.num_kernels + j](x)
            x = xs / self.num_kernels
        x = self.conv_post(F.leaky_relu(x))  # default slope 0.01 here, as in the app
        return torch.tanh(x)

    def remove_weight_norm(self) -> None:
        torch.nn.utils.remove_weight_norm(self.conv_pre)
        for up in self.ups:
            torch.nn.utils.remove_weight_norm(up)
        for block in self.resblocks:
            block.remove_weight_norm()
        torch.nn.utils.remove_weight_norm(self.conv_post)


HiFiGANGenerator = Generator


class PeriodDiscriminator(nn.Module):
    def __init__(self, period: int, channels: tuple[int, ...] = FULL_MPD_CHANNELS) -> None:
        super().__init__()
        self.period = period
        chans = (1, *channels)
        self.convs = nn.ModuleList(
            _old_weight_norm(nn.Conv2d(chans[i], chans[i + 1], (5, 1), stride=(3, 1) if i < 4 else 1, padding=(2, 0)))
            for i in range(5)
        )
        self.conv_post = _old_weight_norm(nn.Conv2d(chans[-1], 1, (3, 1), stride=1, padding=(1, 0)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        fmap: list[torch.Tensor] = []
        b, c, t = x.shape
        if t % self.period != 0:
            pad_len = self.period - (t % self.period)
            x = F.pad(x, (0, pad_len), "reflect")
            t += pad_len
        x = x.view(b, c, t // self.period, self.period)
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LRELU_SLOPE)
            fmap.append(x)
        x = self.conv_post(x)
        fmap.append(x)
        return torch.flatten(x, 1, -1), fmap


class MultiPeriodDiscriminator(nn.Module):
    """discriminators.{0..4} for periods [2, 3, 5, 7, 11] (from the config)."""

    def __init__(self, config: HiFiGANConfig, channels: tuple[int, ...] = FULL_MPD_CHANNELS) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(PeriodDiscriminator(p, channels) for p in config.mpd_periods)

    def forward(self, y: torch.Tensor, y_hat: torch.Tensor) -> tuple[list, list, list, list]:
        rs, fs, rfs, ffs = [], [], [], []
        for d in self.discriminators:
            r, rf = d(y)
            f, ff = d(y_hat)
            rs.append(r), fs.append(f), rfs.append(rf), ffs.append(ff)
        return rs, fs, rfs, ffs


class ScaleDiscriminator(nn.Module):
    def __init__(self, use_spectral_norm: bool = False, channels: tuple[int, ...] = FULL_MSD_CHANNELS) -> None:
        super().__init__()
        norm = _old_spectral_norm if use_spectral_norm else _old_weight_norm
        chans = (1, *channels)
        self.convs = nn.ModuleList(
            norm(nn.Conv1d(chans[i], chans[i + 1], k, stride=s, groups=g, padding=p))
            for i, (k, s, g, p) in enumerate(_MSD_LAYERS)
        )
        self.conv_post = norm(nn.Conv1d(chans[-1], 1, 3, stride=1, padding=1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        fmap: list[torch.Tensor] = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LRELU_SLOPE)
            fmap.append(x)
        x = self.conv_post(x)
        fmap.append(x)
        return torch.flatten(x, 1, -1), fmap


class MultiScaleDiscriminator(nn.Module):
    """discriminators.0 (old spectral norm), .1 and .2 (old weight norm); meanpools hold no state."""

    def __init__(self, channels: tuple[int, ...] = FULL_MSD_CHANNELS) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(
            [ScaleDiscriminator(True, channels), ScaleDiscriminator(False, channels), ScaleDiscriminator(False, channels)]
        )
        self.meanpools = nn.ModuleList([nn.AvgPool1d(4, 2, padding=2), nn.AvgPool1d(4, 2, padding=2)])

    def forward(self, y: torch.Tensor, y_hat: torch.Tensor) -> tuple[list, list, list, list]:
        rs, fs, rfs, ffs = [], [], [], []
        for i, d in enumerate(self.discriminators):
            if i > 0:
                y = self.meanpools[i - 1](y)
                y_hat = self.meanpools[i - 1](y_hat)
            r, rf = d(y)
            f, ff = d(y_hat)
            rs.append(r), fs.append(f), rfs.append(rf), ffs.append(ff)
        return rs, fs, rfs, ffs


def build_mpd(config: HiFiGANConfig, small: bool = True) -> MultiPeriodDiscriminator:
    return MultiPeriodDiscriminator(config, SMALL_MPD_CHANNELS if small else FULL_MPD_CHANNELS)


def build_msd(small: bool = True) -> MultiScaleDiscriminator:
    return MultiScaleDiscriminator(SMALL_MSD_CHANNELS if small else FULL_MSD_CHANNELS)


def generator_loss(disc_outputs: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    loss = torch.tensor(0.0)
    parts = []
    for dg in disc_outputs:
        part = torch.mean((1 - dg) ** 2)
        parts.append(part)
        loss = loss + part
    return loss, parts


def discriminator_loss(real: list[torch.Tensor], fake: list[torch.Tensor]) -> tuple[torch.Tensor, list[float], list[float]]:
    loss = torch.tensor(0.0)
    r_losses, g_losses = [], []
    for dr, dg in zip(real, fake):
        r_loss = torch.mean((1 - dr) ** 2)
        g_loss = torch.mean(dg**2)
        loss = loss + r_loss + g_loss
        r_losses.append(r_loss.item())
        g_losses.append(g_loss.item())
    return loss, r_losses, g_losses


def feature_loss(fmap_r: list[list[torch.Tensor]], fmap_g: list[list[torch.Tensor]]) -> torch.Tensor:
    loss = torch.tensor(0.0)
    for dr, dg in zip(fmap_r, fmap_g):
        for rl, gl in zip(dr, dg):
            loss = loss + torch.mean(torch.abs(rl - gl))
    return loss * 2


# ===========================================================================
# 6-8. Vocoder training, vocoder_state and resume (vocoder/hifigan/trainer.py)
# ===========================================================================


@dataclass
class VocoderTraining:
    """Everything ``VocoderTrainer.train`` creates, in its order."""

    generator: Generator
    mpd: MultiPeriodDiscriminator
    msd: MultiScaleDiscriminator
    optim_g: torch.optim.AdamW
    optim_d: torch.optim.AdamW
    sched_g: torch.optim.lr_scheduler.ExponentialLR
    sched_d: torch.optim.lr_scheduler.ExponentialLR
    config: HiFiGANConfig
    start_epoch: int = 0
    small: bool = True

    def step(self, batch_seed: int, step_schedulers: bool = True, **kwargs: Any) -> dict[str, float]:
        return train_one_step(
            self.generator, self.mpd, self.msd, self.optim_g, self.optim_d, self.sched_g, self.sched_d, batch_seed,
            step_schedulers=step_schedulers, **kwargs,
        )

    def modules(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "mpd": self.mpd, "msd": self.msd}


def _make_optimizers(config: HiFiGANConfig, generator: nn.Module, mpd: nn.Module, msd: nn.Module) -> tuple:
    optim_g = torch.optim.AdamW(generator.parameters(), lr=config.learning_rate, betas=(config.adam_b1, config.adam_b2))
    optim_d = torch.optim.AdamW(
        list(mpd.parameters()) + list(msd.parameters()), lr=config.learning_rate * 0.5, betas=(config.adam_b1, config.adam_b2)
    )
    sched_g = torch.optim.lr_scheduler.ExponentialLR(optim_g, gamma=config.lr_decay)
    sched_d = torch.optim.lr_scheduler.ExponentialLR(optim_d, gamma=config.lr_decay)
    return optim_g, optim_d, sched_g, sched_d


def _fresh_vocoder(config: HiFiGANConfig, small: bool, seed: int) -> VocoderTraining:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = Generator(config)
        mpd = build_mpd(config, small)
        msd = build_msd(small)  # spectral norm draws its u/v from the RNG here
    return VocoderTraining(generator, mpd, msd, *_make_optimizers(config, generator, mpd, msd), config=config, small=small)


def vocoder_training(small: bool = True, seed: int = 0, config: HiFiGANConfig | None = None) -> VocoderTraining:
    """Fresh generator, MPD, MSD, two AdamW and two ExponentialLR, as the trainer builds them."""
    return _fresh_vocoder(config or hifigan_config(small), small, seed)


def _filterbank(n_mels: int, n_freqs: int) -> torch.Tensor:
    """A fixed triangular filterbank (linear spacing): stands in for torchaudio's mel filters."""
    centres = torch.linspace(0, n_freqs - 1, n_mels + 2, dtype=torch.float64)
    bins = torch.arange(n_freqs, dtype=torch.float64)
    lo, mid, hi = centres[:-2, None], centres[1:-1, None], centres[2:, None]
    up = (bins - lo) / (mid - lo)
    down = (hi - bins) / (hi - mid)
    return torch.clamp(torch.minimum(up, down), min=0.0).to(torch.float32)


def _pseudo_mel(wav: torch.Tensor, n_mels: int, hop: int) -> torch.Tensor:
    """[B, 1, L] -> [B, 1, n_mels, L // hop + 1], log1p of a power spectrogram (the app's AudioSpectrogram shape)."""
    n_fft = 4 * hop
    spec = torch.stft(wav.squeeze(1), n_fft, hop_length=hop, window=torch.hann_window(n_fft), center=True, return_complex=True)
    mel = _filterbank(n_mels, spec.shape[1]) @ (spec.abs() ** 2)
    return torch.log1p(mel).unsqueeze(1)


def _augment_disc_input(wav: torch.Tensor, gen: torch.Generator, gain_db_range: float = 3.0,
                        snr_range: tuple[float, float] = (30.0, 50.0)) -> torch.Tensor:
    """trainer.py ``_augment_disc_input`` with an explicit RNG: random gain +-3 dB, noise at 30-50 dB SNR."""
    b = wav.shape[0]
    gain_db = torch.rand(b, 1, 1, generator=gen) * 2 * gain_db_range - gain_db_range
    wav = wav * 10.0 ** (gain_db / 20.0)
    snr_db = torch.rand(b, 1, 1, generator=gen) * (snr_range[1] - snr_range[0]) + snr_range[0]
    signal_power = wav.pow(2).mean(dim=-1, keepdim=True).clamp(min=1e-8)
    noise_power = signal_power / (10.0 ** (snr_db / 10.0))
    return wav + torch.randn(wav.shape, generator=gen) * noise_power.sqrt()


def train_one_step(
    generator: Generator,
    mpd: MultiPeriodDiscriminator,
    msd: MultiScaleDiscriminator,
    optim_g: torch.optim.Optimizer,
    optim_d: torch.optim.Optimizer,
    sched_g: torch.optim.lr_scheduler.LRScheduler,
    sched_d: torch.optim.lr_scheduler.LRScheduler,
    batch_seed: int,
    *,
    step_schedulers: bool = True,
    batch_size: int = 2,
    n_frames: int = 8,
) -> dict[str, float]:
    """One batch of the app's GAN loop (D step on augmented audio, then G step), deterministic in ``batch_seed``.

    The batch is synthetic: ``batch_size`` tone+noise segments of
    ``(n_frames - 1) * hop`` samples, peak-normalised, and their log1p
    pseudo-mel of ``n_frames`` frames; the generator's ``n_frames * hop``
    output is cut to the segment length as in the app.  The losses are the
    app's (LSGAN D/G, feature matching x2, mel L1 x45 -- inert, see module
    docstring).  ``step_schedulers=True`` also makes the once-per-epoch
    ``ExponentialLR`` steps, i.e. treats the batch as a whole epoch.
    """
    gen = torch.Generator().manual_seed(int(batch_seed))
    hop = generator.hop_size
    n_mels = generator.conv_pre.in_channels
    length = (n_frames - 1) * hop
    t = torch.arange(length, dtype=torch.float32) / 48_000.0
    freq = 80.0 + 4000.0 * torch.rand(batch_size, 1, 1, generator=gen)
    wav = torch.sin(2 * math.pi * freq * t) + 0.1 * torch.randn(batch_size, 1, length, generator=gen)
    wav = wav / wav.abs().amax(dim=-1, keepdim=True)
    with torch.no_grad():
        mel_batch = _pseudo_mel(wav, n_mels, hop)  # [B, 1, n_mels, T]
    mel_input = mel_batch.squeeze(1)

    generator.train(), mpd.train(), msd.train()

    # ===== Discriminator step =====
    y_g_hat = generator(mel_input)
    min_len = min(wav.shape[-1], y_g_hat.shape[-1])
    wav_real = wav[..., :min_len]
    wav_fake = y_g_hat[..., :min_len].detach()
    real_aug = _augment_disc_input(wav_real, gen)
    fake_aug = _augment_disc_input(wav_fake, gen)
    mpd_r, mpd_f, _, _ = mpd(real_aug, fake_aug)
    loss_disc_mpd, _, _ = discriminator_loss(mpd_r, mpd_f)
    msd_r, msd_f, _, _ = msd(real_aug, fake_aug)
    loss_disc_msd, _, _ = discriminator_loss(msd_r, msd_f)
    loss_disc = loss_disc_mpd + loss_disc_msd
    optim_d.zero_grad()
    loss_disc.backward()
    optim_d.step()

    # ===== Generator step =====
    y_g_hat = generator(mel_input)
    wav_fake_g = y_g_hat[..., :min_len]
    with torch.no_grad():
        wav_for_mel = wav_fake_g.clamp(-1.0, 1.0)  # as in the app: this cuts the mel loss off the graph
    mel_fake = _pseudo_mel(wav_for_mel, n_mels, hop)
    mel_real = mel_batch[..., : mel_fake.shape[-1]]
    loss_mel = F.l1_loss(mel_fake[..., : mel_real.shape[-1]], mel_real)
    mpd_r, mpd_f, mpd_rf, mpd_ff = mpd(wav_real, wav_fake_g)
    msd_r, msd_f, msd_rf, msd_ff = msd(wav_real, wav_fake_g)
    loss_gen_mpd, _ = generator_loss(mpd_f)
    loss_gen_msd, _ = generator_loss(msd_f)
    loss_fm_mpd = feature_loss(mpd_rf, mpd_ff)
    loss_fm_msd = feature_loss(msd_rf, msd_ff)
    loss_gen = loss_gen_mpd + loss_gen_msd + loss_fm_mpd + loss_fm_msd + loss_mel * 45
    optim_g.zero_grad()
    loss_gen.backward()
    optim_g.step()

    if step_schedulers:
        sched_g.step()
        sched_d.step()
    return {
        "gen_loss": loss_gen.item(),
        "disc_loss": loss_disc.item(),
        "mel_loss": loss_mel.item(),
        "feature_loss": (loss_fm_mpd + loss_fm_msd).item(),
    }


def vocoder_checkpoint_data(training: VocoderTraining, epoch: int) -> dict[str, Any]:
    """The ``checkpoint_data`` dict the trainer builds on cancel (key order as in the app)."""
    return {
        "generator_state_dict": training.generator.state_dict(),
        "mpd_state_dict": training.mpd.state_dict(),
        "msd_state_dict": training.msd.state_dict(),
        "optim_g_state_dict": training.optim_g.state_dict(),
        "optim_d_state_dict": training.optim_d.state_dict(),
        "sched_g_state_dict": training.sched_g.state_dict(),
        "sched_d_state_dict": training.sched_d.state_dict(),
        "epoch": epoch,
    }


def build_vocoder_state(
    generator: Generator,
    config: HiFiGANConfig,
    epoch: int,
    epochs: int,
    gen_loss: float,
    checkpoint_data: dict[str, Any] | None,
    training_date: str = FIXED_TRAINING_DATE,
) -> dict[str, Any]:
    """``VocoderTrainer._build_vocoder_state``: config as ``asdict``, no ``checkpoint`` key on completion."""
    state: dict[str, Any] = {
        "type": "hifigan_v2",
        "generator_state_dict": generator.state_dict(),
        "config": asdict(config),
        "training_metadata": {
            "epochs": epoch + 1,
            "total_epochs": epochs,
            "final_loss": gen_loss,
            "training_date": training_date,
        },
    }
    if checkpoint_data is not None:
        state["checkpoint"] = checkpoint_data
    return state


def vocoder_state(
    small: bool = True,
    with_checkpoint: bool = True,
    seed: int = 0,
    *,
    epochs_done: int = 1,
    total_epochs: int = 100,
    batches_per_epoch: int = 1,
    cancel_mid_epoch: bool = True,
    training_date: str = FIXED_TRAINING_DATE,
) -> dict[str, Any]:
    """The vocoder_state dict the app stores, after real (synthetic-batch) training.

    ``with_checkpoint=True``: the run is cancelled in epoch ``epochs_done - 1``
    after its last batch -- by default before that epoch's scheduler step, as
    nearly always happens in the app (``cancel_mid_epoch``); ``False`` gives
    the rare epoch-boundary cancel.  ``with_checkpoint=False``: normal
    completion of ``epochs_done`` epochs (``total_epochs`` is then
    ``epochs_done``) and no ``checkpoint`` key.  The models are private to this
    call, so the live tensors in the returned dict never change afterwards.
    """
    training = vocoder_training(small, seed)
    avg = 0.0
    for epoch in range(epochs_done):
        gen_sum, n = 0.0, 0
        for b in range(batches_per_epoch):
            gen_sum += training.step(seed * 1_000_003 + epoch * 1000 + b, step_schedulers=False)["gen_loss"]
            n += 1
        last = epoch == epochs_done - 1
        if with_checkpoint and last and cancel_mid_epoch:
            return build_vocoder_state(training.generator, training.config, epoch, total_epochs, gen_sum / max(n, 1),
                                       vocoder_checkpoint_data(training, epoch), training_date)
        training.sched_g.step()
        training.sched_d.step()
        avg = gen_sum / max(n, 1)
        if with_checkpoint and last:
            return build_vocoder_state(training.generator, training.config, epoch, total_epochs, avg,
                                       vocoder_checkpoint_data(training, epoch), training_date)
    return build_vocoder_state(training.generator, training.config, epochs_done - 1, epochs_done, avg, None, training_date)


def resume_from(
    state: dict[str, Any], small: bool = True, config: HiFiGANConfig | None = None, seed: int = 12345
) -> VocoderTraining:
    """The trainer's resume block: build fresh objects, then load the seven state dicts if ``checkpoint`` exists.

    The app builds from the UI/CLI config (``HiFiGANConfig(learning_rate=...,
    batch_size=...)``), not from ``state["config"]``; here ``config=None`` uses
    ``HiFiGANConfig(**state["config"])`` so the small variant fits.  Without a
    ``checkpoint`` the app trains from scratch (start_epoch 0, nothing loaded).
    """
    cfg = config or HiFiGANConfig(**state["config"])
    training = _fresh_vocoder(cfg, small, seed)
    ckpt = state.get("checkpoint")
    if ckpt is not None:
        training.generator.load_state_dict(ckpt["generator_state_dict"])
        training.mpd.load_state_dict(ckpt["mpd_state_dict"])
        training.msd.load_state_dict(ckpt["msd_state_dict"])
        training.optim_g.load_state_dict(ckpt["optim_g_state_dict"])
        training.optim_d.load_state_dict(ckpt["optim_d_state_dict"])
        training.sched_g.load_state_dict(ckpt["sched_g_state_dict"])
        training.sched_d.load_state_dict(ckpt["sched_d_state_dict"])
        training.start_epoch = ckpt["epoch"] + 1
    return training


def inference_generator(state: dict[str, Any]) -> Generator:
    """``HiFiGANVocoder.__init__``: ``HiFiGANConfig(**config)``, load, eval, fuse weight norm."""
    generator = Generator(HiFiGANConfig(**state["config"]))
    generator.load_state_dict(state["generator_state_dict"])
    generator.eval()
    generator.remove_weight_norm()
    return generator


# ===========================================================================
# 9. The VAE and its training checkpoint (models/vae.py, training/*.py)
# ===========================================================================

FULL_VAE_WIDTHS = (32, 64, 128, 256)
SMALL_VAE_WIDTHS = (4, 8, 8, 16)


class ConvEncoder(nn.Module):
    """convs.{0,4,8,12} Conv2d, convs.{1,5,9,13} BatchNorm2d; fc_mu/fc_logvar created lazily."""

    def __init__(self, latent_dim: int = 64, dropout: float = 0.2, widths: tuple[int, ...] = FULL_VAE_WIDTHS) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        layers: list[nn.Module] = []
        c_in = 1
        for c in widths:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                       nn.Dropout2d(dropout)]
            c_in = c
        self.convs = nn.Sequential(*layers)
        self._flatten_dim: int | None = None
        self.fc_mu: nn.Linear | None = None
        self.fc_logvar: nn.Linear | None = None
        self._padded_shape: tuple[int, int] | None = None

    def _init_linear(self, flatten_dim: int) -> None:
        self._flatten_dim = flatten_dim
        self.fc_mu = nn.Linear(flatten_dim, self.latent_dim)
        self.fc_logvar = nn.Linear(flatten_dim, self.latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, _, h, w = x.shape
        pad_h, pad_w = (16 - h % 16) % 16, (16 - w % 16) % 16
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        self._padded_shape = (x.shape[2], x.shape[3])
        flat = self.convs(x).flatten(1)
        if self._flatten_dim is None:
            self._init_linear(flat.shape[1])
        assert self.fc_mu is not None and self.fc_logvar is not None
        return self.fc_mu(flat), torch.clamp(self.fc_logvar(flat), min=-20.0, max=20.0)


class ConvDecoder(nn.Module):
    """deconvs.{0,4,8,12} ConvTranspose2d, deconvs.{1,5,9} BatchNorm2d, deconvs.13 Softplus; fc lazily (after deconvs)."""

    def __init__(self, latent_dim: int = 64, dropout: float = 0.2, widths: tuple[int, ...] = FULL_VAE_WIDTHS) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self._top = widths[-1]
        self._spatial_shape: tuple[int, int] | None = None
        self._flatten_dim: int | None = None
        self.fc: nn.Linear | None = None
        rev = list(reversed(widths))
        layers: list[nn.Module] = []
        for c_in, c_out in zip(rev, rev[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1), nn.BatchNorm2d(c_out),
                       nn.ReLU(inplace=True), nn.Dropout2d(dropout)]
        layers += [nn.ConvTranspose2d(rev[-1], 1, 3, stride=2, padding=1, output_padding=1), nn.Softplus()]
        self.deconvs = nn.Sequential(*layers)

    def _init_linear(self, spatial_shape: tuple[int, int]) -> None:
        self._spatial_shape = spatial_shape
        self._flatten_dim = self._top * spatial_shape[0] * spatial_shape[1]
        self.fc = nn.Linear(self.latent_dim, self._flatten_dim)

    def forward(self, z: torch.Tensor, target_shape: tuple[int, int] | None = None) -> torch.Tensor:
        if self.fc is None or self._spatial_shape is None:
            raise RuntimeError("Decoder linear layer not initialised.")
        sh, sw = self._spatial_shape
        recon = self.deconvs(self.fc(z).view(-1, self._top, sh, sw))
        if target_shape is not None:
            recon = recon[:, :, : target_shape[0], : target_shape[1]]
        return recon


class ConvVAE(nn.Module):
    """``latent_dim`` is a read-only property backed by ``_latent_dim`` (not in the state dict)."""

    def __init__(self, latent_dim: int = 64, dropout: float = 0.2, widths: tuple[int, ...] = FULL_VAE_WIDTHS) -> None:
        super().__init__()
        self._latent_dim = latent_dim
        self.widths = tuple(widths)
        self.encoder = ConvEncoder(latent_dim, dropout, widths)
        self.decoder = ConvDecoder(latent_dim, dropout, widths)

    @property
    def latent_dim(self) -> int:
        return self._latent_dim

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x)

    def decode(self, z: torch.Tensor, target_shape: tuple[int, int] | None = None) -> torch.Tensor:
        return self.decoder(z, target_shape=target_shape)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        shape = (x.shape[2], x.shape[3])
        mu, logvar = self.encode(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(logvar)
        if self.decoder.fc is None:
            assert self.encoder._padded_shape is not None
            ph, pw = self.encoder._padded_shape
            self.decoder._init_linear((ph // 16, pw // 16))
        return self.decode(z, target_shape=shape), mu, logvar


def init_lazy_linears(model: ConvVAE, spec: SpectrogramConfig | None = None) -> ConvVAE:
    """loop.py / load_model: decoder first, then encoder, before any load_state_dict."""
    spatial = _vae_spatial(spec or SpectrogramConfig())
    model.decoder._init_linear(spatial)
    model.encoder._init_linear(model.widths[-1] * spatial[0] * spatial[1])
    return model


def build_vae(small: bool = True, latent_dim: int = 64, dropout: float = 0.2, seed: int = 0) -> ConvVAE:
    """A ConvVAE with its lazy linears initialised; ``small`` narrows channels (~0.1M vs ~3.3M parameters)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return init_lazy_linears(ConvVAE(latent_dim, dropout, SMALL_VAE_WIDTHS if small else FULL_VAE_WIDTHS))


def vae_training(
    small: bool = True, seed: int = 0, config: TrainingConfig | None = None
) -> tuple[ConvVAE, torch.optim.AdamW, torch.optim.lr_scheduler.CosineAnnealingLR]:
    """loop.py: ConvVAE(latent_dim, dropout), AdamW(lr, weight_decay), CosineAnnealingLR(T_max=max_epochs)."""
    cfg = config or TrainingConfig()
    model = build_vae(small, cfg.latent_dim, cfg.regularization.dropout, seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.regularization.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.max_epochs)
    return model, optimizer, scheduler


def vae_train_step(model: ConvVAE, optimizer: torch.optim.Optimizer, seed: int, kl_weight: float = 0.0,
                   gradient_clip_norm: float = 1.0, batch_size: int = 2) -> dict[str, float]:
    """One ``train_epoch`` step on a synthetic log1p mel batch [B, 1, 128, 94] (simplified loss, app's clip)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mel = torch.log1p(torch.rand(batch_size, 1, 128, 94) * 4.0)
        model.train()
        recon, mu, logvar = model(mel)
        recon_loss = F.mse_loss(recon, mel)
        kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).mean()
        total = recon_loss + kl_weight * kl
        optimizer.zero_grad()
        total.backward()
        if gradient_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=gradient_clip_norm)
        optimizer.step()
    return {"train_loss": total.item(), "recon_loss": recon_loss.item(), "kl_loss": (kl_weight * kl).item()}


@dataclass
class StepMetrics:
    epoch: int
    step: int
    total_steps: int
    train_loss: float
    recon_loss: float
    kl_loss: float
    kl_weight: float
    learning_rate: float
    step_time_s: float


@dataclass
class EpochMetrics:
    epoch: int
    total_epochs: int
    train_loss: float
    val_loss: float
    val_recon_loss: float
    val_kl_loss: float
    kl_divergence: float
    overfitting_gap: float
    learning_rate: float
    eta_seconds: float
    elapsed_seconds: float


@dataclass
class MetricsHistory:
    step_metrics: list[StepMetrics] = field(default_factory=list)
    epoch_metrics: list[EpochMetrics] = field(default_factory=list)

    def add_epoch(self, m: EpochMetrics) -> None:
        self.epoch_metrics.append(m)

    def compute_eta(self, current_epoch: int, total_epochs: int) -> float:
        if not self.epoch_metrics or current_epoch <= 0:
            return 0.0
        per_epoch = self.epoch_metrics[-1].elapsed_seconds / (current_epoch + 1)
        return max(0.0, per_epoch * (total_epochs - current_epoch - 1))

    def get_best_epoch(self) -> int:
        return min(self.epoch_metrics, key=lambda m: m.val_loss).epoch if self.epoch_metrics else 0

    def to_dict(self) -> dict[str, list[dict[str, Any]]]:
        """Lists of plain dicts in field order (``asdict`` gives the same keys and order)."""
        return {"step_metrics": [asdict(m) for m in self.step_metrics], "epoch_metrics": [asdict(m) for m in self.epoch_metrics]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MetricsHistory:
        h = cls()
        h.step_metrics = [StepMetrics(**d) for d in data.get("step_metrics", [])]
        h.epoch_metrics = [EpochMetrics(**d) for d in data.get("epoch_metrics", [])]
        return h


def _epoch_metrics(history: MetricsHistory, epoch: int, total: int, train_loss: float, lr: float,
                   nan_val: bool = False) -> EpochMetrics:
    """loop.py's per-epoch bookkeeping with deterministic stand-in validation numbers and times."""
    if nan_val:  # an empty validation loader: NaN losses, kl_divergence 0.0
        v_loss, v_recon, v_kl, kl_div = float("nan"), float("nan"), float("nan"), 0.0
    else:
        v_loss = train_loss * 1.125
        v_recon, v_kl, kl_div = train_loss * 1.0625, train_loss * 0.0625, 3.25 + 0.5 * epoch
    gap = (v_loss - train_loss) / train_loss if (train_loss > 0 and train_loss == train_loss) else 0.0
    eta = history.compute_eta(epoch, total)
    return EpochMetrics(epoch, total, train_loss, v_loss, v_recon, v_kl, kl_div, gap, lr, eta, 1.5 * (epoch + 1))


def metrics_history_dict(n_epochs: int = 3, *, total_epochs: int = 200, nan_val_epoch: int | None = None,
                         base_loss: float = 0.8) -> dict[str, Any]:
    """``MetricsHistory.to_dict()`` for ``n_epochs`` finished epochs; ``step_metrics`` is always [] in the app."""
    h = MetricsHistory()
    for e in range(n_epochs):
        lr = 1e-3 * (1 + math.cos(math.pi * (e + 1) / total_epochs)) / 2
        h.add_epoch(_epoch_metrics(h, e, total_epochs, base_loss / (1 + e), lr, nan_val=(e == nan_val_epoch)))
    return h.to_dict()


def training_checkpoint(
    model: ConvVAE | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    *,
    epoch: int = 2,
    train_loss: float | None = None,
    val_loss: float | None = None,
    kl_weight: float | None = None,
    config: TrainingConfig | None = None,
    metrics_history: dict[str, Any] | None = None,
    latent_analysis: dict[str, Any] | None = None,
    cancelled: bool = False,
    nan_train_loss: bool = False,
    nan_val_epoch: int | None = None,
    small: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """The dict ``save_checkpoint`` torch.saves, with loop.py's arguments.

    Without ``model``: simulate the loop for epochs ``0..epoch`` (one step each,
    scheduler stepped per finished epoch, an EpochMetrics per finished epoch).
    ``cancelled``: the cancel-after-train-epoch path -- the last epoch trains
    (no step at all when ``nan_train_loss``, which gives ``train_loss`` NaN)
    but gets no scheduler step and no metrics entry, and ``val_loss`` is inf.
    With ``model``/``optimizer``/``scheduler`` given they are stored as they are.
    """
    cfg = config or TrainingConfig()
    history = MetricsHistory.from_dict(metrics_history) if metrics_history is not None else None
    if model is None:
        model, optimizer, scheduler = vae_training(small, seed, cfg)
        sim = MetricsHistory()
        last_loss = float("nan")
        for e in range(epoch + 1):
            kl_w = get_kl_weight(e, cfg.max_epochs, cfg.kl_warmup_fraction, cfg.kl_weight_max)
            final_cancelled = cancelled and e == epoch
            if final_cancelled and nan_train_loss:
                last_loss = float("nan")  # valid_steps == 0 -> NaN averages
                break
            clip = cfg.regularization.gradient_clip_norm
            last_loss = vae_train_step(model, optimizer, seed * 7919 + e, kl_w, clip)["train_loss"]
            if final_cancelled:
                break
            scheduler.step()
            sim.add_epoch(_epoch_metrics(sim, e, cfg.max_epochs, last_loss, optimizer.param_groups[0]["lr"],
                                         nan_val=(e == nan_val_epoch)))
        history = history or sim
        if train_loss is None:
            train_loss = last_loss
        if val_loss is None:
            val_loss = float("inf") if cancelled else sim.epoch_metrics[-1].val_loss
    else:
        if optimizer is None or scheduler is None:
            optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.regularization.weight_decay)
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.max_epochs)
        history = history or MetricsHistory.from_dict(metrics_history_dict(epoch if cancelled else epoch + 1,
                                                                           total_epochs=cfg.max_epochs))
        if train_loss is None:
            train_loss = float("nan") if nan_train_loss else 0.5
        if val_loss is None:
            val_loss = float("inf") if cancelled else 0.5625
    if kl_weight is None:
        kl_weight = get_kl_weight(epoch, cfg.max_epochs, cfg.kl_warmup_fraction, cfg.kl_weight_max)
    return {
        "version": 1,
        "epoch": epoch,
        "step": 0,
        "model_state_dict": model.state_dict(),
        "optimizer_state_dict": optimizer.state_dict(),
        "scheduler_state_dict": scheduler.state_dict(),
        "train_loss": train_loss,
        "val_loss": val_loss,
        "kl_weight": kl_weight,
        "training_config": asdict(cfg),
        "spectrogram_config": spectrogram_config_dict(),
        "metrics_history": history.to_dict(),
        "latent_analysis": latent_analysis,
    }


def checkpoint_sidecar_text(ckpt: dict[str, Any]) -> str:
    """The ``.pt.meta.json`` sidecar: ``json.dumps(..., indent=2)`` -- ``Infinity``/``NaN`` tokens on cancel."""
    meta = {"epoch": ckpt["epoch"], "train_loss": float(ckpt["train_loss"]), "val_loss": float(ckpt["val_loss"])}
    return json.dumps(meta, indent=2)


def app_load_checkpoint(ckpt: dict[str, Any], small: bool = True, config: TrainingConfig | None = None) -> tuple:
    """loop.py resume: fresh model (lazy linears initialised first), optimiser, scheduler, then ``load_checkpoint``."""
    model, optimizer, scheduler = vae_training(small, 999, config)
    if ckpt.get("version", 0) > 1:
        raise ValueError("Checkpoint version is newer than supported")
    model.load_state_dict(ckpt["model_state_dict"])
    if "optimizer_state_dict" in ckpt:
        optimizer.load_state_dict(ckpt["optimizer_state_dict"])
    if "scheduler_state_dict" in ckpt:
        scheduler.load_state_dict(ckpt["scheduler_state_dict"])
    return model, optimizer, scheduler, ckpt.get("epoch", 0) + 1


# ===========================================================================
# 10. The pickled .distillgan (v1.1) and .distill (v1) files (models/persistence.py)
# ===========================================================================

_APP_MODULE = "distill.training.config"


@contextlib.contextmanager
def app_module_aliases() -> Iterator[None]:
    """Make ``OverfittingPreset`` pickle (and unpickle) as ``distill.training.config.OverfittingPreset``.

    Registers empty ``distill``, ``distill.training`` and
    ``distill.training.config`` modules for the duration (only those not
    already present), so that pickles written here reference the same global
    as the app's.  Assumes the real app is not importable.
    """
    added = []
    for name in ("distill", "distill.training", _APP_MODULE):
        if name not in sys.modules:
            sys.modules[name] = types.ModuleType(name)
            added.append(name)
    mod = sys.modules[_APP_MODULE]
    previous = mod.__dict__.get("OverfittingPreset", _MISSING)
    old_module = OverfittingPreset.__module__
    mod.OverfittingPreset = OverfittingPreset  # type: ignore[attr-defined]
    OverfittingPreset.__module__ = _APP_MODULE
    try:
        yield
    finally:
        OverfittingPreset.__module__ = old_module
        if previous is _MISSING:
            del mod.OverfittingPreset  # type: ignore[attr-defined]
        else:
            mod.OverfittingPreset = previous  # type: ignore[attr-defined]
        for name in reversed(added):
            del sys.modules[name]


_MISSING = object()


def write_app_pickle(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj, path)`` as the app does, with the app's module path for the Enum."""
    path = Path(path)
    with app_module_aliases():
        torch.save(obj, path)
    return path


def read_app_pickle(path: str | Path | io.BytesIO) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=False)`` as the app does (trusted test files only)."""
    with app_module_aliases():
        return torch.load(path, map_location="cpu", weights_only=False)


def _uuid(seed: int) -> str:
    return str(uuid.UUID(int=random.Random(f"model-id-{seed}").getrandbits(128), version=4))


def seed_distillgan_dict(
    model: ConvVAE | None = None,
    *,
    small: bool = True,
    seed: int = 0,
    with_analysis: bool = True,
    analysis: AnalysisResult | None = None,
    vocoder: dict[str, Any] | None = None,
    config: TrainingConfig | None = None,
    via: str = "loop",
    checkpoint: dict[str, Any] | None = None,
    name: str = "Field Recordings",
    description: str = "",
    tags: list[str] | None = None,
    dataset_name: str = "field_recordings",
    dataset_file_count: int = 12,
    model_id: str | None = None,
    save_date: str = FIXED_SAVE_DATE,
    marker: str = "distillgan_model",
) -> dict[str, Any]:
    """The dict app v1.1's ``save_model`` torch.saves into a ``.distillgan`` file.

    ``via="loop"``: the save at the end of loop.py ``train`` (training_epochs =
    max_epochs, training_date ""), from ``model`` or from a simulated
    ``training_checkpoint``.  ``via="checkpoint"``: ``save_model_from_checkpoint``
    (CLI / Library tab): training_epochs = the checkpoint's 0-based epoch,
    losses copied (inf/NaN if the checkpoint is a cancelled one), latent_dim
    64 whatever the model, training_date as the CLI writes it.  ``vocoder``: a
    vocoder_state dict to add (the key is absent otherwise), as
    ``_save_vocoder_state`` does later.
    """
    cfg = config or TrainingConfig()
    if model is not None:
        state_dict, latent_dim = model.state_dict(), model.latent_dim
        final_train, final_val, epoch = 0.5, 0.5625, cfg.max_epochs - 1
    else:
        ckpt = checkpoint or training_checkpoint(config=cfg, small=small, seed=seed)
        state_dict = ckpt["model_state_dict"]
        latent_dim = cfg.latent_dim
        final_train, final_val, epoch = ckpt["train_loss"], ckpt["val_loss"], ckpt["epoch"]
        if checkpoint is not None and via == "loop":
            hist = checkpoint["metrics_history"]["epoch_metrics"]
            final_train = hist[-1]["train_loss"] if hist else 0.0
            final_val = hist[-1]["val_loss"] if hist else 0.0
    if analysis is None and with_analysis:
        analysis = analysis_result(latent_dim=latent_dim, seed=seed)
    meta = ModelMetadata(name=name, description=description, dataset_name=dataset_name,
                         dataset_file_count=dataset_file_count, tags=list(tags or []))
    if via == "loop":
        meta.training_epochs = cfg.max_epochs
        meta.final_train_loss = final_train
        meta.final_val_loss = final_val
    elif via == "checkpoint":
        meta.training_date = CLI_TRAINING_DATE
        meta.training_epochs = epoch
        meta.final_train_loss = float(final_train)
        meta.final_val_loss = float(final_val)
        latent_dim = 64  # checkpoint.get("latent_dim", 64): checkpoints hold none
    else:
        raise ValueError(f"via must be 'loop' or 'checkpoint', not {via!r}")
    meta.model_id = model_id or _uuid(seed)
    meta.save_date = save_date
    if analysis is not None:
        meta.has_analysis = True
        meta.n_active_components = analysis.n_active_components
    saved: dict[str, Any] = {
        "format": marker,
        "version": 1,
        "model_state_dict": state_dict,
        "latent_dim": latent_dim,
        "spectrogram_config": spectrogram_config_dict(),
        "latent_analysis": analysis_to_dict(analysis) if analysis is not None else None,
        "training_config": asdict(cfg),
        "metadata": asdict(meta),
    }
    if vocoder is not None and marker == "distillgan_model":
        saved["vocoder_state"] = vocoder
    return saved


def legacy_distill_dict(*, early: bool = False, **kwargs: Any) -> dict[str, Any]:
    """A v1 ``.distill`` file's dict (format ``distill_model``, version 1; same keys, never a vocoder_state).

    ``early=True``: the initial push's training_config (see ``training_config_dict``).
    """
    kwargs.pop("vocoder", None)
    saved = seed_distillgan_dict(marker="distill_model", **kwargs)
    if early:
        saved["training_config"] = {**saved["training_config"]}
        saved["training_config"].pop("kl_weight_max")
        saved["training_config"]["free_bits"] = 0.5
        saved["training_config"]["preview_interval"] = 5
    return saved


# ===========================================================================
# 11. The model library index (library/catalog.py)
# ===========================================================================

INDEX_FILENAME = "model_library.json"
INDEX_VERSION = 2


@dataclass
class VocoderInfo:
    type: str
    epochs: int
    final_loss: float
    training_date: str


@dataclass
class ModelEntry:
    model_id: str
    name: str
    description: str
    file_path: str  # the file name inside models_dir
    file_size_bytes: int
    dataset_name: str
    dataset_file_count: int
    dataset_total_duration_s: float
    training_date: str
    save_date: str
    training_epochs: int
    final_train_loss: float
    final_val_loss: float
    has_analysis: bool
    n_active_components: int
    tags: list[str] = field(default_factory=list)
    vocoder: VocoderInfo | None = None


def write_index_atomic(index_path: Path, data: dict[str, Any]) -> None:
    """catalog.py ``_write_index_atomic``: .bak copy, mkstemp in the same dir (mode 0600), json.dump, os.replace."""
    if index_path.exists():
        with contextlib.suppress(OSError):
            shutil.copy2(index_path, index_path.with_suffix(".json.bak"))
    index_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=index_path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, default=str)
        os.replace(tmp, index_path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def catalog_entry(saved: dict[str, Any], file_name: str, file_size_bytes: int,
                  vocoder_state: dict[str, Any] | None = None) -> ModelEntry:
    """The ModelEntry ``save_model`` builds from the metadata (and VocoderInfo when given a vocoder_state)."""
    m = saved["metadata"]
    entry = ModelEntry(
        model_id=m["model_id"], name=m["name"], description=m["description"], file_path=file_name,
        file_size_bytes=file_size_bytes, dataset_name=m["dataset_name"], dataset_file_count=m["dataset_file_count"],
        dataset_total_duration_s=m["dataset_total_duration_s"], training_date=m["training_date"], save_date=m["save_date"],
        training_epochs=m["training_epochs"], final_train_loss=m["final_train_loss"], final_val_loss=m["final_val_loss"],
        has_analysis=m["has_analysis"], n_active_components=m["n_active_components"], tags=list(m["tags"]),
    )
    if vocoder_state is not None:
        tm = vocoder_state.get("training_metadata", {})
        entry.vocoder = VocoderInfo(type=vocoder_state.get("type", "hifigan_v2"), epochs=tm.get("epochs", 0),
                                    final_loss=tm.get("final_loss", 0.0), training_date=tm.get("training_date", ""))
    return entry


def legacy_index_dict(entries: list[ModelEntry]) -> dict[str, Any]:
    """A version-1 index (before commit 6426a84): the same entries without the ``vocoder`` key."""
    models = {}
    for e in entries:
        d = asdict(e)
        d.pop("vocoder")
        models[e.model_id] = d
    return {"version": 1, "models": models}


class AppModelLibrary:
    """catalog.py ``ModelLibrary``, re-implemented: reads and writes ``model_library.json`` as the app does.

    ``loader`` reads a model file for ``repair_index`` (default: the app's
    ``torch.load(weights_only=False)``, which fails on non-pickle files such
    as ours, so those orphans are skipped with a warning).
    """

    def __init__(self, models_dir: str | Path, loader: Callable[[Path], Any] | None = None) -> None:
        self.models_dir = Path(models_dir)
        self._index_path = self.models_dir / INDEX_FILENAME
        self._entries: dict[str, ModelEntry] = {}
        self._loader = loader or read_app_pickle
        self._load_index()

    @property
    def index_path(self) -> Path:
        return self._index_path

    def _load_index(self) -> None:
        if not self._index_path.exists():
            self._entries = {}
            return
        try:
            raw = json.loads(self._index_path.read_text(encoding="utf-8"))
            entries: dict[str, ModelEntry] = {}
            for model_id, entry_dict in raw.get("models", {}).items():  # a non-dict top level raises, as in the app
                try:
                    vocoder_raw = entry_dict.pop("vocoder", None)
                    vocoder = VocoderInfo(**vocoder_raw) if vocoder_raw else None
                    entries[model_id] = ModelEntry(**entry_dict, vocoder=vocoder)
                except (TypeError, KeyError) as exc:
                    logger.warning("Skipping corrupt entry %s in index: %s", model_id, exc)
            self._entries = entries
        except (json.JSONDecodeError, OSError, KeyError) as exc:
            logger.warning("Failed to load model library index (%s), starting fresh: %s", self._index_path, exc)
            self._entries = {}

    def _save_index(self) -> None:
        write_index_atomic(self._index_path, {
            "version": INDEX_VERSION,
            "models": {mid: asdict(e) for mid, e in self._entries.items()},
        })

    def add_entry(self, entry: ModelEntry) -> None:
        self._entries[entry.model_id] = entry
        self._save_index()

    def remove(self, model_id: str) -> bool:
        if model_id not in self._entries:
            return False
        del self._entries[model_id]
        self._save_index()
        return True

    def get(self, model_id: str) -> ModelEntry | None:
        return self._entries.get(model_id)

    def list_all(self, sort_by: str = "save_date", reverse: bool = True) -> list[ModelEntry]:
        results = list(self._entries.values())
        results.sort(key=lambda e: getattr(e, sort_by, ""), reverse=reverse)
        return results

    def search(self, query: str = "", tags: list[str] | None = None, sort_by: str = "save_date",
               reverse: bool = True) -> list[ModelEntry]:
        """Case-insensitive substring of name or description; tags match if any is shared (case-insensitive)."""
        results = list(self._entries.values())
        if query:
            q = query.lower()
            results = [e for e in results if q in e.name.lower() or q in e.description.lower()]
        if tags:
            wanted = {t.lower() for t in tags}
            results = [e for e in results if wanted & {t.lower() for t in e.tags}]
        results.sort(key=lambda e: getattr(e, sort_by, ""), reverse=reverse)
        return results

    def count(self) -> int:
        return len(self._entries)

    def repair_index(self) -> tuple[int, int]:
        """Drop entries whose file is gone, add ``*.distillgan`` orphans from their metadata (vocoder always None)."""
        removed = added = 0
        stale = [mid for mid, e in self._entries.items() if not (self.models_dir / e.file_path).exists()]
        for mid in stale:
            logger.warning("Index entry %s has no file on disk -- removing", mid)
            del self._entries[mid]
            removed += 1
        indexed = {e.file_path for e in self._entries.values()}
        for path in self.models_dir.glob("*.distillgan"):
            if path.name in indexed:
                continue
            try:
                meta = self._loader(path).get("metadata", {})
                entry = ModelEntry(
                    model_id=meta.get("model_id", str(path.stem)), name=meta.get("name", path.stem),
                    description=meta.get("description", ""), file_path=path.name, file_size_bytes=path.stat().st_size,
                    dataset_name=meta.get("dataset_name", ""), dataset_file_count=meta.get("dataset_file_count", 0),
                    dataset_total_duration_s=meta.get("dataset_total_duration_s", 0.0),
                    training_date=meta.get("training_date", ""), save_date=meta.get("save_date", ""),
                    training_epochs=meta.get("training_epochs", 0), final_train_loss=meta.get("final_train_loss", 0.0),
                    final_val_loss=meta.get("final_val_loss", 0.0), has_analysis=meta.get("has_analysis", False),
                    n_active_components=meta.get("n_active_components", 0), tags=meta.get("tags", []), vocoder=None,
                )
                self._entries[entry.model_id] = entry
                added += 1
            except Exception as exc:  # noqa: BLE001 -- the app swallows everything here too
                logger.warning("Failed to read orphan .distillgan file %s: %s", path.name, exc)
        if removed or added:
            self._save_index()
        return removed, added


def app_save_model(saved: dict[str, Any], models_dir: str | Path, *, index_vocoder: bool = False) -> Path:
    """``save_model``'s file side: ``<sanitized name>[_N].distillgan`` via torch.save, then the index entry.

    The entry gets a VocoderInfo only with ``index_vocoder=True`` (save_model
    called with a vocoder_state, which no v1.1 caller does).
    """
    models_dir = Path(models_dir)
    stem = sanitize_filename(saved["metadata"]["name"])
    ext = ".distill" if saved.get("format") == "distill_model" else ".distillgan"
    path = models_dir / f"{stem}{ext}"
    counter = 1
    while path.exists():
        path = models_dir / f"{stem}_{counter}{ext}"
        counter += 1
    models_dir.mkdir(parents=True, exist_ok=True)
    write_app_pickle(saved, path)
    voc = saved.get("vocoder_state") if index_vocoder else None
    AppModelLibrary(models_dir).add_entry(catalog_entry(saved, path.name, os.path.getsize(path), voc))
    return path


def app_save_vocoder_state(model_path: str | Path, state: dict[str, Any]) -> None:
    """trainer.py ``_save_vocoder_state``: load the pickle, set ``vocoder_state``, save it back; the index is untouched."""
    saved = read_app_pickle(model_path)
    saved["vocoder_state"] = state
    write_app_pickle(saved, model_path)


# ===========================================================================
# Helpers for tests
# ===========================================================================


def plain_copy(obj: Any) -> Any:
    """A deep copy with every OrderedDict state dict turned into a plain dict (no ``_metadata``), tensors cloned.

    Stands in for a round trip through a format that does not keep torch's
    state-dict metadata.
    """
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: plain_copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [plain_copy(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(plain_copy(v) for v in obj)
    return copy.deepcopy(obj)


def tensor_stats(obj: Any) -> tuple[int, int]:
    """(number of tensors, total bytes) in a nested structure, counting shared tensors each time they appear."""
    if isinstance(obj, torch.Tensor):
        return 1, obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        n = b = 0
        for v in obj:
            dn, db = tensor_stats(v)
            n += dn
            b += db
        return n, b
    return 0, 0
