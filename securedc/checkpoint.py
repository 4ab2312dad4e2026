"""Checkpoints of a condensation run: safetensors tensors + one JSON metadata record.

A checkpoint holds the synthetic images, the optimiser state, the statistics bank made so
far, the learning-rate adapter's state and the run's bookkeeping (step, losses, privacy plan,
accountant history). In DP mode it also holds the SECRET key of the mechanism's random
streams: checkpoints are private to the data owner and must never be shipped.

Resuming never repeats a release: releases already in the bank are reused as they are, and
new ones draw fresh secret streams (each release has its own stream index).

Example:
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "c.safetensors")
    >>> save_checkpoint(path, {"images": torch.zeros(2, 1, 2, 2)}, {"step": 3})
    >>> tensors, meta = load_checkpoint(path)
    >>> meta["step"], tensors["images"].shape
    (3, torch.Size([2, 1, 2, 2]))
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save
from torch import Tensor

from securedc.errors import DataError
from securedc.io import atomic_write_bytes

__all__ = ["save_checkpoint", "load_checkpoint", "check_checkpoint", "optimizer_to_tensors", "optimizer_from_tensors", "CHECKPOINT_KIND"]

CHECKPOINT_KIND = "securedc-checkpoint"
_KEY = "securedc_checkpoint"


def save_checkpoint(path: str | os.PathLike[str], tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> None:
    """Atomically write ``tensors`` and the JSON record ``meta`` to ``path``, readable by its owner only (``0o600``)."""
    record = dict(meta, kind=CHECKPOINT_KIND)
    data = st_save(
        {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
        metadata={_KEY: json.dumps(record, allow_nan=False)},
    )
    atomic_write_bytes(Path(path), data, mode=0o600)  # owner-only: DP checkpoints hold the secret key


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        DataError: the file is missing or is not a securedc checkpoint.
    """
    return _read(path, tensors=True)


def check_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Its JSON record, reading no tensors: a cheap check before a long run resumes from ``path``.

    Raises:
        DataError: the file is missing or is not a securedc checkpoint.
    """
    return _read(path, tensors=False)[1]


def _read(path: str | os.PathLike[str], *, tensors: bool) -> tuple[dict[str, Tensor], dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint {path} not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})[_KEY])
            out = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}
    except (SafetensorError, KeyError, ValueError, OSError) as err:
        raise DataError(f"{path} is not a securedc checkpoint ({err})") from None
    if not isinstance(meta, dict) or meta.get("kind") != CHECKPOINT_KIND:
        raise DataError(f"{path} is not a securedc checkpoint")
    return out, meta


def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split an optimiser's state into tensors (``opt.<param>.<name>``) and a JSON record."""
    state = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"opt.{pid}.{key}"] = value
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_tensors(
    optimizer: torch.optim.Optimizer, tensors: Mapping[str, Tensor], record: Mapping[str, Any], *, device: torch.device
) -> None:
    """Inverse of :func:`optimizer_to_tensors`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value.to(device)
    for key, value in record["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": record["param_groups"]})
