"""Loading stored weights into a ``torch.nn.Module``: what ``load_into`` and ``load_model``'s builders use.

``module.load_state_dict(state, assign=True)`` wraps each key's tensor in a Parameter of its own,
so weights the module ties (``lm_head.weight is embed.weight``) come back as two Parameters that
merely share memory: ``parameters()`` counts them twice and ``.half()`` separates them. Here the
ties the module had before loading are restored after it, when the stored tensors are one object
(distillgan stores tied tensors once and loads them as one object: FORMAT.md §5.5).
"""

from __future__ import annotations

import logging
from typing import Any

from .errors import InputError

logger = logging.getLogger(__name__)


def _ties(module: Any) -> list[tuple[str, list[str]]]:
    """("parameter" or "buffer", names) for each parameter or buffer the module holds under several names."""
    out = []
    for kind, items in (("parameter", module.named_parameters(remove_duplicate=False)),
                        ("buffer", module.named_buffers(remove_duplicate=False))):
        groups: dict[int, list[str]] = {}
        for name, value in items:
            groups.setdefault(id(value), []).append(name)
        out += [(kind, names) for names in groups.values() if len(names) > 1]
    return out


def _retie(module: Any, ties: list[tuple[str, list[str]]], state: Any) -> None:
    """Make each group of ``ties`` one object again, where the loaded tensors of the group are one object."""
    for kind, names in ties:
        loaded = [state[n] for n in names if n in state]
        if len(loaded) < 2 or any(t is not loaded[0] for t in loaded):
            continue  # stored untied (or not loaded): leave them as load_state_dict made them
        first = module.get_parameter(names[0]) if kind == "parameter" else module.get_buffer(names[0])
        for name in names[1:]:
            owner, _, attr = name.rpartition(".")
            setattr(module.get_submodule(owner), attr, first)


def load_state_into(module: Any, state: Any, *, strict: bool, assign: bool, device: Any, what: str) -> tuple[Any, Any]:
    """``module.load_state_dict(state)`` with the module on ``device`` first (each tensor copied once at most) and its ties kept.

    Returns (the module on ``device`` in eval mode, torch's result: ``missing_keys``, ``unexpected_keys``).
    A module on the meta device needs ``assign=True``; a mismatch is InputError ``invalid-input``.
    """
    import torch

    if not isinstance(module, torch.nn.Module):
        raise InputError(f"{what} is a {type(module).__name__}, not an nn.Module", code="invalid-input")
    on_meta = any(p.is_meta for p in module.parameters()) or any(b.is_meta for b in module.buffers())
    if on_meta and not assign:
        raise InputError(
            f"{what} is a module on the meta device: load it with assign=True (its parameters become the loaded tensors)",
            code="invalid-input",
        )
    if not on_meta and not assign:
        module = module.to(device)  # then load_state_dict copies device to device, once
    ties = _ties(module) if assign else []
    try:
        result = module.load_state_dict(state, strict=strict, assign=assign)
    except RuntimeError as e:  # torch reports missing/unexpected keys and shape mismatches so
        raise InputError(f"the stored weights do not fit the module ({what}): {e}", code="invalid-input") from e
    _retie(module, ties, state)
    if not strict and (result.missing_keys or result.unexpected_keys):
        logger.info("%s: missing keys %s, unexpected keys %s", what, result.missing_keys, result.unexpected_keys)
    return module.to(device).eval(), result
