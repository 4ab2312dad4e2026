"""Convert image arrays of common layouts to float32 ``[N, C, H, W]`` in ``[0, 1]``, and labels to ``0..K-1``."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

from securedc.errors import DataError

__all__ = ["images_to_tensor", "labels_to_tensor", "remap_labels"]

_CHANNELS = (1, 3, 4)


def _writable(arr: np.ndarray) -> np.ndarray:
    """torch refuses to share read-only numpy memory without a warning: copy those."""
    return arr if arr.flags.writeable else arr.copy()


def _channel_axis(shape: tuple[int, ...], prefer: Literal["first", "last"]) -> Literal["first", "last"]:
    first, last = shape[0] in _CHANNELS, shape[-1] in _CHANNELS
    if first and not last:
        return "first"
    if last and not first:
        return "last"
    if first and last:
        return prefer
    raise DataError(f"cannot tell the channel axis of images shaped {shape}; expected 1, 3 or 4 channels "
                    "first (CHW) or last (HWC)")


def images_to_tensor(
    images: np.ndarray | Tensor,
    *,
    layout: Literal["auto", "NCHW", "NHWC"] = "auto",
    what: str = "images",
) -> Tensor:
    """Convert a batch of images to float32 ``[N, C, H, W]`` in ``[0, 1]``.

    Accepts ``[N, H, W]`` (grey), ``[N, H, W, C]`` or ``[N, C, H, W]``. Integer data must lie in
    ``0..255`` and is divided by 255; float data must already lie in ``[0, 1]``. With
    ``layout="auto"`` the channel axis is the one of size 1, 3 or 4; when both fit, uint8 data
    is taken as NHWC (numpy/PIL convention) and float data as NCHW (torch convention).

    Raises:
        DataError: wrong rank, unknown layout, values out of range or not finite.

    Example:
        >>> import numpy as np
        >>> images_to_tensor(np.full((2, 5, 6, 3), 255, dtype=np.uint8)).shape
        torch.Size([2, 3, 5, 6])
    """
    x = torch.as_tensor(_writable(images)) if isinstance(images, np.ndarray) else images
    if not isinstance(x, Tensor):
        raise DataError(f"{what} must be a numpy array or tensor; got {type(images).__name__}")
    x = x.detach().cpu()
    if x.is_complex():
        raise DataError(f"{what} are complex numbers; give real pixel values")
    if x.dim() == 3:
        x = x.unsqueeze(1)
    elif x.dim() == 4:
        if layout == "auto":
            prefer = "last" if x.dtype == torch.uint8 else "first"
            axis = _channel_axis(tuple(x.shape[1:]), prefer)
        elif layout in ("NCHW", "NHWC"):
            axis = "first" if layout == "NCHW" else "last"
        else:
            raise DataError(f"unknown layout {layout!r}; choose 'auto', 'NCHW' or 'NHWC'")
        if axis == "last":
            x = x.permute(0, 3, 1, 2)
    else:
        raise DataError(f"{what} must have shape [N, H, W], [N, H, W, C] or [N, C, H, W]; got {tuple(x.shape)}")
    if x.dtype == torch.bool:
        x = x.to(torch.float32)
    elif x.dtype == torch.uint8:
        x = x.to(torch.float32).div_(255.0)
    elif not x.is_floating_point():
        if x.numel() and (int(x.min()) < 0 or int(x.max()) > 255):
            raise DataError(f"integer {what} must lie in 0..255; got {int(x.min())}..{int(x.max())}")
        x = x.to(torch.float32).div_(255.0)
    else:
        x = x.to(torch.float32)
        if x.numel():
            if not bool(torch.isfinite(x).all()):
                raise DataError(f"{what} contain NaN or inf")
            lo, hi = float(x.min()), float(x.max())
            if lo < 0.0 or hi > 1.0:
                raise DataError(f"float {what} must lie in [0, 1]; got [{lo:g}, {hi:g}]. Scale them "
                                "(e.g. divide uint8-range floats by 255) before loading")
    return x.contiguous()


def labels_to_tensor(labels: np.ndarray | Tensor, *, what: str = "labels") -> Tensor:
    """Convert integer labels to int64 ``[N]``; float labels must be whole numbers.

    Raises:
        DataError: not one-dimensional or not integral.
    """
    y = torch.as_tensor(_writable(np.asarray(labels))) if not isinstance(labels, Tensor) else labels.detach().cpu()
    if y.dim() == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.dim() != 1:
        raise DataError(f"{what} must be one-dimensional [N]; got shape {tuple(y.shape)}")
    if y.is_floating_point():
        if y.numel() and not bool((y == y.round()).all()):
            raise DataError(f"{what} must be integers; got non-integral float values")
    elif y.dtype == torch.bool or y.is_complex():
        raise DataError(f"{what} must be integers; got {y.dtype}")
    return y.to(torch.int64).contiguous()


def remap_labels(*label_sets: Tensor) -> tuple[tuple[Tensor, ...], tuple[int, ...]]:
    """Map the sorted unique values of all ``label_sets`` to ``0..K-1``.

    Returns:
        The remapped tensors (same order) and the original value of each class.

    Example:
        >>> import torch
        >>> (a, b), orig = remap_labels(torch.tensor([7, 3]), torch.tensor([3]))
        >>> a.tolist(), b.tolist(), orig
        ([1, 0], [0], (3, 7))
    """
    values = torch.unique(torch.cat([y for y in label_sets])) if label_sets else torch.zeros(0, dtype=torch.int64)
    return tuple(torch.searchsorted(values, y) for y in label_sets), tuple(int(v) for v in values)
