"""What a saved value comes back as: FORMAT.md §4.4's documented conversions, written independently of distillgan."""

from __future__ import annotations

import enum
from typing import Any

import numpy as np
import torch


def saved_form(value: Any) -> Any:
    """``value`` after the conversions: Enum members become their value, numpy scalars Python numbers."""
    if isinstance(value, enum.Enum):
        return saved_form(value.value)
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {saved_form(k): saved_form(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(saved_form(v) for v in value)
    if isinstance(value, list):
        return [saved_form(v) for v in value]
    return value
