"""What one model file holds, built from what the caller has: a module, a state dict or a checkpoint.

:class:`ModelContent` is the record of the eight values of a manifest (FORMAT.md §4) before they
are planned into an archive; ``save_model``, ``save_file`` and the converter each build one here,
so a config, analysis or vocoder state is accepted (a mapping, a dataclass, an object with
``to_dict()``) and refused (naming it) the same way whoever saves it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .errors import InputError
from .manifest import coerce_metadata
from .values import dataclass_to_dict


def as_tree(value: Any, where: str, *, allow_none: bool = False) -> Any:
    """A config, analysis or vocoder state given as a mapping, a dataclass or an object with ``to_dict()``."""
    if value is None and allow_none:
        return None
    if hasattr(type(value), "__dataclass_fields__") and not isinstance(value, type):
        return dataclass_to_dict(value)
    if isinstance(value, Mapping):
        return value
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return as_tree(to_dict(), where, allow_none=allow_none)
    raise InputError(
        f"{where}: expected a dict, a dataclass instance or an object with to_dict(), got {type(value).__name__}", code="invalid-input"
    )


def state_dict_of(model: Any, where: str) -> tuple[Mapping[str, Any], Any]:
    """(state dict, latent_dim attribute or None) of an nn.Module or a mapping of names to tensors."""
    import torch

    if isinstance(model, torch.nn.Module):
        return model.state_dict(), getattr(model, "latent_dim", None)
    if isinstance(model, Mapping):
        return model, None
    raise InputError(f"{where}: expected an nn.Module or a mapping of names to tensors, got {type(model).__name__}", code="invalid-input")


def checked_latent_dim(value: Any) -> int | None:
    """``latent_dim`` as stored: a non-negative int (a numpy or torch integer scalar is converted) or None."""
    if value is None:
        return None
    if type(value) is not int and getattr(value, "shape", None) == () and callable(getattr(value, "item", None)):
        value = value.item()  # a numpy or torch integer scalar
    if type(value) is not int or value < 0:
        raise InputError(f"latent_dim: expected a non-negative int or None, got {value!r}", code="invalid-input")
    return value


def _fill_in_place(owner: Any, name: str, value: Any) -> None:
    """Write a filled-in field back to the caller's object, as the app's save_model does."""
    if isinstance(owner, MutableMapping):
        owner[name] = value
    elif hasattr(type(owner), "__dataclass_fields__"):
        setattr(owner, name, value)


@dataclass
class ModelContent:
    """The eight values of a model file's manifest (FORMAT.md §4), checked and ready to plan.

    ``metadata`` is the map of ``ModelMetadata`` fields (``coerce_metadata``); the configs, the
    analysis and the vocoder state are value trees; ``state_dict`` and ``extra`` are stored as given.
    """

    state_dict: Any
    metadata: dict[str, Any]
    spectrogram_config: Any = field(default_factory=dict)
    training_config: Any = field(default_factory=dict)
    latent_dim: int | None = None
    analysis: Any = None
    vocoder_state: Any = None
    extra: Any = None

    @classmethod
    def build(
        cls,
        state_dict: Any,
        *,
        metadata: Any,
        spectrogram_config: Any,
        training_config: Any,
        latent_dim: Any = None,
        analysis: Any = None,
        vocoder_state: Any = None,
        extra: Any = None,
        training_config_name: str = "training_config",
    ) -> ModelContent:
        """Check and convert what a caller gives (see the module docstring); InputError naming the value otherwise."""
        meta = coerce_metadata(metadata)
        return cls(
            state_dict=state_dict,
            metadata=meta,
            analysis=as_tree(analysis, "analysis", allow_none=True),
            latent_dim=checked_latent_dim(latent_dim),
            spectrogram_config=as_tree(spectrogram_config, "spectrogram_config"),
            training_config=as_tree(training_config, training_config_name),
            vocoder_state=as_tree(vocoder_state, "vocoder_state", allow_none=True),
            extra=extra,
        )

    @classmethod
    def of_model(cls, model: Any, where: str, *, latent_dim: Any = None, **values: Any) -> ModelContent:
        """The content of an ``nn.Module`` (its state dict; ``latent_dim`` from its attribute unless given) or a mapping."""
        state_dict, attr_latent = state_dict_of(model, where)
        return cls.build(state_dict, latent_dim=latent_dim if latent_dim is not None else attr_latent, **values)

    @classmethod
    def of_checkpoint(cls, ck: Any, metadata: Any) -> ModelContent:
        """The content of a :class:`~distillgan.convert.Checkpoint` (what ``read_checkpoint`` sorted), with ``metadata``."""
        return cls.build(
            ck.state_dict,
            metadata=metadata,
            spectrogram_config=ck.spectrogram_config,
            training_config=ck.training_config,
            latent_dim=ck.latent_dim,
            analysis=ck.analysis,
            vocoder_state=ck.vocoder_state,
            extra=ck.extra,
        )

    def stamp(self, owner: Any) -> None:
        """Fill in what a save fills in, also on the caller's ``owner`` (a mapping or dataclass), as the app's save_model does.

        ``model_id`` (a new UUID) and ``save_date`` (now, UTC) when empty; ``has_analysis`` and
        ``n_active_components`` from the analysis.
        """
        meta = self.metadata
        if not meta["model_id"]:
            meta["model_id"] = str(uuid.uuid4())
            _fill_in_place(owner, "model_id", meta["model_id"])
        if not meta["save_date"]:
            meta["save_date"] = datetime.now(timezone.utc).isoformat()
            _fill_in_place(owner, "save_date", meta["save_date"])
        if self.analysis is not None:
            meta["has_analysis"] = True
            _fill_in_place(owner, "has_analysis", True)
            n_active = self.analysis.get("n_active_components") if isinstance(self.analysis, Mapping) else None
            if type(n_active) is int and n_active >= 0:
                meta["n_active_components"] = n_active
                _fill_in_place(owner, "n_active_components", n_active)

    def manifest(self) -> dict[str, Any]:
        """The values in the order save_model has always given them, for ``plan_archive`` (FORMAT.md §4)."""
        return {
            "latent_dim": self.latent_dim,
            "metadata": self.metadata,
            "spectrogram_config": self.spectrogram_config,
            "training_config": self.training_config,
            "analysis": self.analysis,
            "state_dict": self.state_dict,
            "vocoder_state": self.vocoder_state,
            "extra": self.extra,
        }
