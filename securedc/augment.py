"""Differentiable Siamese Augmentation (DSA), with parameters shared per group (class).

DSA applies the *same* random transformation to real and synthetic images so that matching
their statistics is not blurred by the augmentation, and keeps it differentiable so gradients
reach the synthetic pixels. Here parameters are drawn once per **group** (securedc uses one
group per class) by :meth:`DSA.sample` from an explicit ``torch.Generator``; :meth:`DSA.__call__`
is then a deterministic, differentiable function of the images and those parameters. Real and
synthetic images of one class therefore see one transform, while classes differ (the
reference shares one draw across the whole batch in its Siamese mode, re-seeding per class).

Operations (names in the ``strategy`` string, ``_``-separated, reference ``ParamDiffAug``
defaults):

- ``color``: brightness ``x + (u - 0.5) * brightness``; saturation ``(x - m_c) * u * saturation + m_c``
  (``m_c`` = mean over channels; a no-op on one-channel images); contrast
  ``(x - m) * (u + contrast) + m`` (``m`` = image mean). Outputs may leave ``[0, 1]``
  (as in the reference); models standardise whatever they get, so this is intended.
- ``crop``: translation by an integer number of pixels in
  ``[-round(ratio_crop_pad * H), +...]`` (rows) and likewise for columns, zero padding.
- ``cutout``: zeroes a ``round(ratio_cutout * H) x round(ratio_cutout * W)`` rectangle
  whose centre is uniform over the image (clipped at the borders).
- ``flip``: horizontal flip with probability 1/2.
- ``scale``: independent x/y scaling by a factor in ``[1/ratio_scale, ratio_scale]``.
- ``rotate``: rotation by an angle in ``[-ratio_rotate, ratio_rotate]`` degrees.

Geometric ops are affine warps of normalised coordinates (``align_corners=True`` as the
reference's scale/rotate) evaluated with bilinear ``grid_sample`` and zero padding; adjacent
geometric ops are fused into one warp (one resampling instead of several). Integer
translations and flips land on pixel centres, so they reproduce the reference's exact
index shuffles up to float rounding.

``mode="single"`` (the reference default, ``aug_mode='S'``) applies **one** op per group,
chosen uniformly from the strategy; ``mode="multiple"`` (``'M'``) applies all ops in the
strategy's order. In single mode, samples whose transform is the identity (e.g. a flip whose
coin said "no") are passed through bit-exactly.

Privacy: touches no data by itself; the parameters depend only on the generator, so they
are public. DP-compatible (it is per-sample post-processing inside the mechanism's φ).

References:
    Zhao, Bilen. Dataset Condensation with Differentiable Siamese Augmentation. ICML 2021 (arXiv:2102.08259).
    Zhao, Bilen. Dataset Condensation with Distribution Matching. WACV 2023 (arXiv:2110.04181).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
from torch import Tensor
from torch.nn import functional as F

from securedc.errors import ConfigError, DataError

__all__ = ["DSA", "DSAParams", "OPS", "MODES"]

#: Operation names a strategy string may contain.
OPS: tuple[str, ...] = ("color", "crop", "cutout", "flip", "scale", "rotate")
#: ``single``: one random op per group (reference default); ``multiple``: every op, in order.
MODES: tuple[str, ...] = ("single", "multiple")
_GEOMETRIC = frozenset({"crop", "flip", "scale", "rotate"})


@dataclass(frozen=True)
class DSAParams:
    """Transformation parameters, one row per group, all drawn by :meth:`DSA.sample`.

    Size-dependent quantities (crop shift, cutout position) are stored as uniforms in
    ``[0, 1)`` and turned into pixels when applied, so one draw serves any image size.

    Attributes:
        ops: the op names of the strategy (column order of ``active``).
        active: ``[G, K]`` bool, which ops apply to each group.
        brightness: ``[G]`` additive shift.
        saturation: ``[G]`` saturation factor.
        contrast: ``[G]`` contrast factor.
        crop: ``[G, 2]`` uniforms for the (row, column) translation.
        cutout: ``[G, 2]`` uniforms for the (row, column) centre.
        flip: ``[G]`` bool, flip horizontally.
        scale: ``[G, 2]`` (x, y) scale factors.
        rotate: ``[G]`` angle in radians.
    """

    ops: tuple[str, ...]
    active: Tensor
    brightness: Tensor
    saturation: Tensor
    contrast: Tensor
    crop: Tensor
    cutout: Tensor
    flip: Tensor
    scale: Tensor
    rotate: Tensor

    @property
    def num_groups(self) -> int:
        """Number of groups ``G``."""
        return int(self.active.shape[0])

    def to(self, device: torch.device | str) -> "DSAParams":
        """Copy of the parameters on ``device``."""
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return DSAParams(**{k: v.to(device) if isinstance(v, Tensor) else v for k, v in moved.items()})


class DSA:
    """Differentiable Siamese Augmentation with per-group parameters.

    Args:
        strategy: ``_``-separated op names from :data:`OPS`; ``"none"`` or ``""`` disables.
        mode: ``"single"`` (one op per group, reference default) or ``"multiple"``.
        flip: ``False`` removes ``flip`` from the strategy (digits, text).
        ratio_scale: maximal scale factor (> 1).
        ratio_rotate: maximal rotation in degrees (>= 0).
        ratio_crop_pad: maximal translation as a fraction of the size, in ``[0, 1)``.
        ratio_cutout: cutout side as a fraction of the size, in ``(0, 1]``.
        brightness: brightness shift range.
        saturation: saturation factor range.
        contrast: contrast factor offset.

    Raises:
        ConfigError: unknown op or mode, or an out-of-range ratio.

    Example:
        >>> dsa = DSA("flip_rotate")
        >>> params = dsa.sample(2, generator=torch.Generator().manual_seed(0))
        >>> x = torch.rand(4, 1, 8, 8, requires_grad=True)
        >>> y = dsa(x, params, torch.tensor([0, 0, 1, 1]))
        >>> y.shape, y.requires_grad
        (torch.Size([4, 1, 8, 8]), True)
    """

    def __init__(
        self,
        strategy: str = "color_crop_cutout_flip_scale_rotate",
        *,
        mode: str = "single",
        flip: bool = True,
        ratio_scale: float = 1.2,
        ratio_rotate: float = 15.0,
        ratio_crop_pad: float = 0.125,
        ratio_cutout: float = 0.5,
        brightness: float = 1.0,
        saturation: float = 2.0,
        contrast: float = 0.5,
    ) -> None:
        key = strategy.strip().lower()
        ops = () if key in ("", "none") else tuple(p for p in key.replace("-", "_").split("_") if p)
        if unknown := [op for op in ops if op not in OPS]:
            raise ConfigError(f"unknown DSA op(s) {unknown} in strategy {strategy!r}; choose from {list(OPS)} or 'none'")
        if len(set(ops)) != len(ops):
            raise ConfigError(f"DSA strategy {strategy!r} repeats an op; list each op once")
        if mode not in MODES:
            raise ConfigError(f"unknown DSA mode {mode!r}; choose one of {list(MODES)}")
        checks = {
            "ratio_scale": (ratio_scale, ratio_scale >= 1.0, ">= 1"),
            "ratio_rotate": (ratio_rotate, 0.0 <= ratio_rotate <= 180.0, "in [0, 180]"),
            "ratio_crop_pad": (ratio_crop_pad, 0.0 <= ratio_crop_pad < 1.0, "in [0, 1)"),
            "ratio_cutout": (ratio_cutout, 0.0 < ratio_cutout <= 1.0, "in (0, 1]"),
            "brightness": (brightness, brightness >= 0.0, ">= 0"),
            "saturation": (saturation, saturation >= 0.0, ">= 0"),
            "contrast": (contrast, contrast >= 0.0, ">= 0"),
        }
        if bad := [f"{k}={v} (must be {rule})" for k, (v, ok, rule) in checks.items() if not ok]:
            raise ConfigError("invalid DSA settings: " + "; ".join(bad))
        self.ops: tuple[str, ...] = tuple(op for op in ops if flip or op != "flip")
        self.mode = mode
        self.ratio_scale, self.ratio_rotate = float(ratio_scale), float(ratio_rotate)
        self.ratio_crop_pad, self.ratio_cutout = float(ratio_crop_pad), float(ratio_cutout)
        self.brightness, self.saturation, self.contrast = float(brightness), float(saturation), float(contrast)
        self._segments = self._plan()

    @property
    def strategy(self) -> str:
        """The effective strategy string (``"none"`` when empty)."""
        return "_".join(self.ops) or "none"

    def __repr__(self) -> str:
        return f"DSA(strategy={self.strategy!r}, mode={self.mode!r})"

    def _plan(self) -> list[tuple[str, ...]]:
        """Segments to run: ``("color",)``, ``("cutout",)`` or a fused run of geometric ops."""
        ops = self.ops
        if self.mode == "single":  # one active op per group: order is irrelevant, fuse all warps
            ops = tuple(op for op in ops if op not in _GEOMETRIC) + tuple(op for op in ops if op in _GEOMETRIC)
        segments: list[tuple[str, ...]] = []
        for op in ops:
            if op in _GEOMETRIC and segments and segments[-1][0] in _GEOMETRIC:
                segments[-1] = (*segments[-1], op)
            else:
                segments.append((op,))
        return segments

    def sample(self, num_groups: int, *, generator: torch.Generator) -> DSAParams:
        """Draw one set of parameters per group; the only source of randomness is ``generator``.

        Args:
            num_groups: number of groups ``G`` (e.g. classes).
            generator: random source (tensors are created on its device).

        Returns:
            :class:`DSAParams` with ``G`` rows.

        Raises:
            ConfigError: ``num_groups < 1``.
        """
        if num_groups < 1:
            raise ConfigError(f"num_groups must be >= 1, got {num_groups}")
        g, dev = generator, generator.device

        def u(*shape: int) -> Tensor:
            return torch.rand((num_groups, *shape), generator=g, device=dev)

        k = len(self.ops)
        if self.mode == "single" and k > 0:
            choice = torch.randint(0, k, (num_groups,), generator=g, device=dev)
            active = F.one_hot(choice, k).bool()
        else:
            active = torch.ones(num_groups, k, dtype=torch.bool, device=dev)
        lo = 1.0 / self.ratio_scale
        return DSAParams(
            ops=self.ops,
            active=active,
            brightness=(u() - 0.5) * self.brightness,
            saturation=u() * self.saturation,
            contrast=u() + self.contrast,
            crop=u(2),
            cutout=u(2),
            flip=(u() < 0.5) & ("flip" in self.ops),
            scale=u(2) * (self.ratio_scale - lo) + lo,
            rotate=(u() - 0.5) * 2.0 * self.ratio_rotate / 180.0 * math.pi,
        )

    def __call__(self, x: Tensor, params: DSAParams, groups: Tensor) -> Tensor:
        """Augment ``x``; sample ``i`` gets the transform of group ``groups[i]``.

        Args:
            x: images ``[N, C, H, W]`` (any real values; usually ``[0, 1]``).
            params: from :meth:`sample` of a DSA with the same strategy.
            groups: ``[N]`` int64 in ``[0, params.num_groups)``.

        Returns:
            ``[N, C, H, W]``, differentiable w.r.t. ``x``; deterministic given the arguments.
            ``x`` is never modified in place.

        Raises:
            ConfigError: ``params`` were drawn for another strategy.
            DataError: bad shapes or group indices.
        """
        if not self.ops:
            return x
        if params.ops != self.ops:
            raise ConfigError(f"DSAParams were sampled for ops {params.ops}, this DSA applies {self.ops}")
        if x.dim() != 4:
            raise DataError(f"DSA expects images [N, C, H, W], got shape {list(x.shape)}")
        if groups.shape != (x.shape[0],) or groups.dtype not in (torch.int64, torch.int32):
            raise DataError(f"groups must be an int64 tensor of shape [{x.shape[0]}], got {groups.dtype} {list(groups.shape)}")
        if x.shape[0] == 0:
            return x
        if int(groups.min()) < 0 or int(groups.max()) >= params.num_groups:
            raise DataError(f"groups must lie in [0, {params.num_groups}), got [{int(groups.min())}, {int(groups.max())}]")
        p = params.to(x.device)
        groups = groups.to(x.device, torch.int64)
        for segment in self._segments:
            if segment[0] == "color":
                x = self._masked(x, p, groups, "color", self._color)
            elif segment[0] == "cutout":
                x = self._masked(x, p, groups, "cutout", self._cutout)
            else:
                x = self._warp(x, p, groups, segment)
        return x

    # -- operations ---------------------------------------------------------------------------

    @staticmethod
    def _subset(x: Tensor, on: Tensor, fn: Callable[[Tensor, Tensor | None], Tensor]) -> Tensor:
        """Apply ``fn(x_sub, idx)`` only to samples with ``on`` set; others pass through unchanged."""
        if bool(on.all()):
            return fn(x, None)
        idx = on.nonzero().squeeze(1)
        if idx.numel() == 0:
            return x
        return x.index_copy(0, idx, fn(x.index_select(0, idx), idx))

    def _masked(
        self, x: Tensor, p: DSAParams, groups: Tensor, op: str, fn: Callable[[Tensor, DSAParams, Tensor], Tensor]
    ) -> Tensor:
        on = p.active[:, p.ops.index(op)][groups]

        def apply(xs: Tensor, idx: Tensor | None) -> Tensor:
            return fn(xs, p, groups if idx is None else groups[idx])

        return self._subset(x, on, apply)

    @staticmethod
    def _color(x: Tensor, p: DSAParams, g: Tensor) -> Tensor:
        def col(v: Tensor) -> Tensor:
            return v[g].to(x.dtype).view(-1, 1, 1, 1)

        x = x + col(p.brightness)
        m = x.mean(dim=1, keepdim=True)
        x = (x - m) * col(p.saturation) + m
        m = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - m) * col(p.contrast) + m

    def _cutout(self, x: Tensor, p: DSAParams, g: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        ch, cw = int(h * self.ratio_cutout + 0.5), int(w * self.ratio_cutout + 0.5)
        # reference: centre uniform over H + (1 - ch % 2) positions, box [c - ch//2, c - ch//2 + ch)
        u = p.cutout[g]
        top = (u[:, 0] * (h + 1 - ch % 2)).floor().long() - ch // 2
        left = (u[:, 1] * (w + 1 - cw % 2)).floor().long() - cw // 2
        rows = torch.arange(h, device=x.device).view(1, h, 1)
        cols = torch.arange(w, device=x.device).view(1, 1, w)
        top, left = top.view(-1, 1, 1), left.view(-1, 1, 1)
        hole = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)
        return x * (~hole).unsqueeze(1).to(x.dtype)

    def _matrices(self, p: DSAParams, ops: tuple[str, ...], h: int, w: int) -> Tensor:
        """Per-group 3x3 sampling matrices (output coords -> input coords), composed in order."""
        n = p.num_groups
        eye = torch.eye(3, device=p.active.device).expand(n, 3, 3)
        total = eye.clone()
        for op in ops:
            m = eye.clone()
            if op == "crop":
                sh, sw = int(h * self.ratio_crop_pad + 0.5), int(w * self.ratio_crop_pad + 0.5)
                dy = (p.crop[:, 0] * (2 * sh + 1)).floor() - sh  # rows, integer pixels
                dx = (p.crop[:, 1] * (2 * sw + 1)).floor() - sw
                m[:, 0, 2] = dx * 2.0 / max(w - 1, 1)
                m[:, 1, 2] = dy * 2.0 / max(h - 1, 1)
            elif op == "flip":
                m[:, 0, 0] = torch.where(p.flip, -1.0, 1.0)
            elif op == "scale":
                m[:, 0, 0], m[:, 1, 1] = p.scale[:, 0], p.scale[:, 1]
            elif op == "rotate":
                c, s = torch.cos(p.rotate), torch.sin(p.rotate)
                m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -s, s, c
            on = p.active[:, p.ops.index(op)].view(-1, 1, 1)
            total = total @ torch.where(on, m, eye)
        return total

    def _warp(self, x: Tensor, p: DSAParams, groups: Tensor, ops: tuple[str, ...]) -> Tensor:
        h, w = x.shape[-2:]
        mats = self._matrices(p, ops, h, w)
        moving = (mats != torch.eye(3, device=mats.device)).any(dim=(1, 2))  # identity warps are skipped

        def apply(xs: Tensor, idx: Tensor | None) -> Tensor:
            g = groups if idx is None else groups[idx]
            theta = mats[g, :2, :].to(xs.dtype)
            grid = F.affine_grid(theta, list(xs.shape), align_corners=True)
            return F.grid_sample(xs, grid, mode="bilinear", padding_mode="zeros", align_corners=True)

        return self._subset(x, moving[groups], apply)
