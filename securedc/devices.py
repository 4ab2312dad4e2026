"""Device names: one validation and one ``auto`` rule for the configuration, the CLI and the library.

Accepted names are ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ``cuda:N`` and
``mps``. :func:`device_problem` says why a name cannot be used on this machine (unknown name,
no CUDA, a CUDA index beyond the devices present, no MPS); :func:`resolve_device` turns ``auto``
into the concrete device. torch is imported only when a check needs it, so parsing a command
line stays fast.

Example:
    >>> device_problem("tpu")
    "'tpu' is not a device; use auto, cpu, cuda, cuda:N or mps"
    >>> resolve_device("cpu")
    'cpu'
"""

from __future__ import annotations

import re

__all__ = ["DEVICE_CHOICES", "device_problem", "resolve_device"]

#: the device names :func:`device_problem` accepts (``N`` = a CUDA device index)
DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N", "mps")

_NAME = re.compile(r"^(auto|cpu|mps|cuda(:(?P<index>[0-9]+))?)$")


def device_problem(device: object) -> str | None:
    """Why ``device`` cannot be used on this machine (one line, after the field name); ``None`` if it can.

    Example:
        >>> device_problem("auto") is None
        True
    """
    match = _NAME.fullmatch(device) if isinstance(device, str) else None
    if match is None:
        return f"{device!r} is not a device; use {', '.join(DEVICE_CHOICES[:-1])} or {DEVICE_CHOICES[-1]}"
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return f"{device}: CUDA is not available on this machine; use cpu (or auto)"
        index = match.group("index")
        if index is not None and int(index) >= torch.cuda.device_count():
            return (f"{device}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                    f"numbered from 0; use cuda or auto")
    if device == "mps":
        import torch

        if not torch.backends.mps.is_available():
            return "mps: MPS is not available on this machine; use cpu (or auto)"
    return None


def resolve_device(device: object) -> str:
    """The concrete device of a name: ``auto`` is ``cuda`` when CUDA is available, else ``cpu``.

    Other names (and ``torch.device`` objects) are returned as their string, unchanged.

    Example:
        >>> resolve_device("auto") in ("cuda", "cpu")
        True
    """
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)
