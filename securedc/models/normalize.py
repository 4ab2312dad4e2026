"""Normalisation layers: the input standardisation every model owns, and the feature norms.

Images cross package boundaries as float tensors in ``[0, 1]`` (torchattacks' convention);
each model standardises them itself with :class:`Normalize`, whose mean and std are *public*
constants (fixed per dataset or given by the user, never computed from private data; see
docs/privacy.md). :func:`make_norm` builds the Opacus-compatible feature norms of the DC/DM
ConvNet (BatchNorm is not allowed under DP-SGD because it mixes samples of a batch).

References:
    Zhao, Mopuri, Bilen. Dataset Condensation with Gradient Matching. ICLR 2021 (arXiv:2006.05929).
    Wu, He. Group Normalization. ECCV 2018 (arXiv:1803.08494).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from securedc.errors import ConfigError

__all__ = ["Normalize", "make_norm", "NORMS"]

#: Feature-norm names accepted by :func:`make_norm`.
NORMS: tuple[str, ...] = ("instance", "group", "none")


def _per_channel(
    values: Sequence[float] | None, *, channels: int, default: float, what: str
) -> Tensor:
    if values is None:
        return torch.full((channels,), default, dtype=torch.float32)
    vals = torch.as_tensor([float(v) for v in values], dtype=torch.float32)
    if vals.numel() == 1:
        vals = vals.expand(channels).clone()
    if vals.numel() != channels:
        raise ConfigError(
            f"{what} has {vals.numel()} values but the images have {channels} channels; "
            f"give one value per channel or a single value"
        )
    if not torch.isfinite(vals).all():
        raise ConfigError(f"{what} must be finite, got {vals.tolist()}")
    return vals


class Normalize(nn.Module):
    """Per-channel standardisation ``(x - mean) / std`` with the constants as buffers.

    Args:
        channels: number of image channels ``C``.
        mean: one value per channel (or a single value); default 0.5.
        std: one positive value per channel (or a single value); default 0.5.

    Raises:
        ConfigError: wrong number of values, non-finite values or ``std <= 0``.

    Shape:
        ``[N, C, H, W]`` -> ``[N, C, H, W]``; never modifies its input in place.

    Example:
        >>> norm = Normalize(1, mean=[0.5], std=[0.25])
        >>> norm(torch.tensor([[[[0.0, 1.0]]]])).tolist()
        [[[[-2.0, 2.0]]]]
    """

    mean: Tensor
    std: Tensor

    def __init__(
        self,
        channels: int,
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        m = _per_channel(mean, channels=channels, default=0.5, what="mean")
        s = _per_channel(std, channels=channels, default=0.5, what="std")
        if (s <= 0).any():
            raise ConfigError(f"std must be > 0 for every channel, got {s.tolist()}")
        self.register_buffer("mean", m.view(1, channels, 1, 1))
        self.register_buffer("std", s.view(1, channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def make_norm(kind: str, channels: int, *, groups: int = 4) -> nn.Module:
    """Build an Opacus-compatible feature norm for ``channels`` feature maps.

    ``"instance"`` is DC's ``instancenorm``: ``GroupNorm(channels, channels, affine=True)``
    (one group per channel, i.e. instance norm with a learnable affine map, which Opacus
    supports, unlike ``nn.InstanceNorm2d`` with running stats). ``"group"`` is
    ``GroupNorm(groups, channels, affine=True)`` (DC uses 4 groups); ``"none"`` is identity.

    Args:
        kind: one of :data:`NORMS` (``-``/``_`` and case are ignored).
        channels: number of feature maps.
        groups: number of groups for ``"group"``; must divide ``channels``.

    Raises:
        ConfigError: unknown ``kind`` or ``groups`` not dividing ``channels``.

    Example:
        >>> norm = make_norm("instance", 8)
        >>> type(norm).__name__, norm.num_groups, norm.num_channels
        ('GroupNorm', 8, 8)
    """
    key = kind.strip().lower().replace("_", "-")
    if key == "instance":
        return nn.GroupNorm(channels, channels, affine=True)
    if key == "group":
        if groups < 1 or channels % groups != 0:
            raise ConfigError(
                f"group norm needs groups dividing the width; got groups={groups}, "
                f"width={channels}; pick a width that is a multiple of {groups}"
            )
        return nn.GroupNorm(groups, channels, affine=True)
    if key == "none":
        return nn.Identity()
    raise ConfigError(f"unknown norm {kind!r}; choose one of {list(NORMS)} (BatchNorm is not DP-compatible)")
