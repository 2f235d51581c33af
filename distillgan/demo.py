"""The demo behind ``distillgan demo``: the library's main job on a small example model.

Saves a small convolutional generator with an Enum-bearing training config,
a NaN correlation and an inf loss; trains a HiFi-GAN-shaped vocoder for one
step and bundles it with a resumable checkpoint (discriminator, AdamW states)
through ``update_vocoder``, as the app does after vocoder training; inspects
and verifies the file, loads it back, checks every value, resumes vocoder
training from the file bit for bit; then shows a legacy pickle-based
``.distill`` file refused without being unpickled. Output goes through
``say`` (the CLI passes ``print``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from pathlib import Path
from typing import Any


def build_generator(latent_dim: int = 16) -> Any:
    """A small spectrogram generator: latent vector -> 1x32x32 mel patch."""
    import torch
    from torch import nn

    class Generator(nn.Module):
        def __init__(self, latent_dim: int) -> None:
            super().__init__()
            self.latent_dim = latent_dim
            self.fc = nn.Linear(latent_dim, 64 * 4 * 4)
            self.up = nn.Sequential(
                nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1),
                nn.BatchNorm2d(32),
                nn.LeakyReLU(0.2),
                nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1),
                nn.BatchNorm2d(16),
                nn.LeakyReLU(0.2),
                nn.ConvTranspose2d(16, 1, 4, stride=2, padding=1),
            )

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return self.up(self.fc(z).view(-1, 64, 4, 4))

    return Generator(latent_dim)


def build_vocoder(n_mels: int = 32) -> Any:
    """A HiFi-GAN-shaped vocoder: conv_pre, upsampling layers with resblocks, conv_post."""
    from torch import nn

    class ResBlock(nn.Module):
        def __init__(self, ch: int) -> None:
            super().__init__()
            self.convs1 = nn.ModuleList(nn.Conv1d(ch, ch, 3, dilation=d, padding=d) for d in (1, 3, 5))
            self.convs2 = nn.ModuleList(nn.Conv1d(ch, ch, 3, padding=1) for _ in range(3))

        def forward(self, x: Any) -> Any:
            for c1, c2 in zip(self.convs1, self.convs2, strict=True):
                x = x + c2(nn.functional.leaky_relu(c1(nn.functional.leaky_relu(x, 0.1)), 0.1))
            return x

    class HiFiGAN(nn.Module):
        def __init__(self, n_mels: int, ch: int = 32, rates: tuple[int, ...] = (4, 4)) -> None:
            super().__init__()
            self.conv_pre = nn.Conv1d(n_mels, ch, 7, padding=3)
            self.ups = nn.ModuleList()
            self.resblocks = nn.ModuleList()
            for i, r in enumerate(rates):
                self.ups.append(nn.ConvTranspose1d(ch // 2**i, ch // 2 ** (i + 1), 2 * r, stride=r, padding=r // 2))
                self.resblocks.append(ResBlock(ch // 2 ** (i + 1)))
            self.conv_post = nn.Conv1d(ch // 2 ** len(rates), 1, 7, padding=3)

        def forward(self, mel: Any) -> Any:
            x = self.conv_pre(mel)
            for up, rb in zip(self.ups, self.resblocks, strict=True):
                x = rb(up(nn.functional.leaky_relu(x, 0.1)))
            return nn.functional.tanh(self.conv_post(nn.functional.leaky_relu(x)))

    return HiFiGAN(n_mels)


class Preset(enum.Enum):
    """An Enum in a training config, as the app keeps its overfitting preset."""

    BALANCED = "balanced"


def build_discriminator() -> Any:
    """A small waveform discriminator (the HiFi-GAN trainer keeps two; one shows the point)."""
    from torch import nn

    return nn.Sequential(nn.Conv1d(1, 8, 15, stride=4, padding=7), nn.LeakyReLU(0.1), nn.Conv1d(8, 1, 3, padding=1))


def vocoder_step(voc: Any, disc: Any, opt_g: Any, opt_d: Any, *, seed: int) -> None:
    """One deterministic least-squares GAN step on a synthetic batch (touches every parameter)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    mel = torch.randn(2, 32, 8, generator=g)
    real = torch.randn(2, 1, 128, generator=g).tanh()
    fake = voc(mel)
    opt_d.zero_grad()
    d_loss = ((disc(real) - 1) ** 2).mean() + (disc(fake.detach()) ** 2).mean()
    d_loss.backward()
    opt_d.step()
    opt_g.zero_grad()
    g_loss = ((disc(fake) - 1) ** 2).mean() + (fake - real).abs().mean()
    g_loss.backward()
    opt_g.step()


def run_demo(folder: Path, say: Callable[[str], None] = print) -> None:
    """Run the demo in ``folder`` (created; an earlier demo's files there are replaced)."""
    import warnings

    with warnings.catch_warnings():  # torch warns at import when numpy is absent; the demo does not need numpy
        warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
        import torch

    from .archive import inspect, verify
    from .catalog import ModelLibrary
    from .errors import LegacyFormatError
    from .manifest import ModelMetadata
    from .persistence import delete_model, load_model, save_model, update_vocoder

    folder.mkdir(parents=True, exist_ok=True)
    library = ModelLibrary(folder)
    for entry in library.list_all():  # start clean so the demo can be re-run
        delete_model(entry.model_id, folder)

    torch.manual_seed(0)
    gen = build_generator()
    spec_cfg = {"sample_rate": 22050, "n_fft": 1024, "hop_length": 256, "n_mels": 32, "f_max": None}
    train_cfg = {"epochs": 3, "batch_size": 8, "learning_rate": 2e-4, "preset": Preset.BALANCED, "betas": (0.8, 0.99)}
    pca = torch.randn(4, 16)  # the analysis may hold tensors or numpy arrays; the demo needs no numpy
    analysis = {
        "pca_components": pca,
        "explained_variance_ratio": torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64),
        "feature_correlations": {"brightness": [0.8, float("nan"), 0.1, 0.0]},  # NaN: a constant feature
        "n_active_components": 4,
    }
    say(f"demo folder: {folder}")

    meta = ModelMetadata(name="Demo generator", dataset_name="synthetic", training_epochs=3,
                         final_train_loss=0.12, final_val_loss=float("inf"), tags=["demo"])
    path = save_model(gen, spec_cfg, train_cfg, meta, folder, analysis=analysis)
    say(f"saved: {path.name} ({path.stat().st_size} bytes); an Enum config value, a tuple, a NaN correlation "
        "and an inf validation loss are stored as they are")

    # Train the vocoder for a step, then "cancel": the app keeps everything needed to resume in the model file.
    voc, disc = build_vocoder(), build_discriminator()
    opt_g = torch.optim.AdamW(voc.parameters(), lr=2e-4, betas=(0.8, 0.99))
    opt_d = torch.optim.AdamW(disc.parameters(), lr=1e-4, betas=(0.8, 0.99))
    sched_g = torch.optim.lr_scheduler.ExponentialLR(opt_g, gamma=0.999)
    vocoder_step(voc, disc, opt_g, opt_d, seed=1)
    vocoder_state = {
        "type": "hifigan",
        "generator_state_dict": voc.state_dict(),
        "config": {"upsample_rates": (4, 4), "channels": 32},
        "training_metadata": {"epochs": 1, "total_epochs": 100, "final_loss": 0.5, "training_date": "2026-11-30T12:00:00+00:00"},
        "checkpoint": {
            "generator_state_dict": voc.state_dict(),
            "disc_state_dict": disc.state_dict(),
            "optim_g_state_dict": opt_g.state_dict(),
            "optim_d_state_dict": opt_d.state_dict(),
            "sched_g_state_dict": sched_g.state_dict(),
            "epoch": 0,
        },
    }
    update_vocoder(path, vocoder_state)
    info = inspect(path)
    n_tensors = {m: len(t) for m, t in info["tensors"].items()}
    say(f"update_vocoder: same file, same model id; tensors per member {n_tensors} "
        "(weights, discriminator, two AdamW states: int keys, tuple betas, 0-d step tensors)")
    verify(path)
    say("verify: every member's CRC-32 matches")

    loaded = load_model(path, model_builder=lambda m: build_generator(m.latent_dim or 16), copy=True)
    for name, tensor in gen.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict[name]), name
    assert loaded.training_config == {**train_cfg, "preset": "balanced"}
    assert loaded.analysis is not None and torch.equal(loaded.analysis["pca_components"], pca)
    with torch.no_grad():
        mel = loaded.model(torch.zeros(1, 16))
    say(f"load: {len(loaded.state_dict)} generator tensors equal the originals; generator output shape {tuple(mel.shape)}; "
        f"training_config['preset'] = {loaded.training_config['preset']!r}, betas = {loaded.training_config['betas']!r}")

    # Resume vocoder training from the file and from the live objects: one more step must agree bit for bit.
    assert loaded.vocoder_state is not None
    ckpt = loaded.vocoder_state["checkpoint"]
    resumed = []
    for source in (ckpt, vocoder_state["checkpoint"]):
        v, d = build_vocoder(), build_discriminator()
        v.load_state_dict(source["generator_state_dict"])
        d.load_state_dict(source["disc_state_dict"])
        og = torch.optim.AdamW(v.parameters(), lr=2e-4, betas=(0.8, 0.99))
        od = torch.optim.AdamW(d.parameters(), lr=1e-4, betas=(0.8, 0.99))
        og.load_state_dict(source["optim_g_state_dict"])
        od.load_state_dict(source["optim_d_state_dict"])
        vocoder_step(v, d, og, od, seed=2)
        resumed.append(v.state_dict())
    for name in resumed[0]:
        assert torch.equal(resumed[0][name].view(-1).view(torch.uint8), resumed[1][name].view(-1).view(torch.uint8)), name
    say(f"resume: vocoder training resumed from the file continues bit for bit as from memory ({len(resumed[0])} tensors "
        f"compared after one more step, epoch {ckpt['epoch'] + 1})")

    legacy = folder / "old_model.distill"
    torch.save({"format": "distill_model", "version": 1, "model_state_dict": gen.state_dict()}, legacy)
    try:
        load_model(legacy)
    except LegacyFormatError as e:
        say(f"legacy .distill refused [{e.code}]: {e}")
    else:  # pragma: no cover - the demo doubles as a smoke test
        raise AssertionError("a legacy file was accepted")
    entry = ModelLibrary(folder).list_all()[0]
    say(f"library: {entry.name!r}, vocoder {entry.vocoder.type if entry.vocoder else None}, "
        f"{entry.vocoder.epochs if entry.vocoder else 0} epoch(s)")
    say("demo finished: try `distillgan inspect " + str(path) + "`")
