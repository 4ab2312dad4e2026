"""The (DP-)gradient-matching term: per-sample gradients of a random network, matched as in DC.

Real side (one row per real example, what the mechanism clips and noises):
    ``g_i = ∇_θ CE(f_θ(x_i), y_i)`` for the selected parameters θ of the step's random
    network, computed with Opacus' :class:`~opacus.grad_sample.GradSampleModule` and
    flattened to ``[n, d]``. Per class, the mechanism releases the (noisy) mean ``ĝ_c``.

Synthetic side:
    ``g^S_c = ∇_θ CE(f_θ(S_c), c)`` (mean loss over the synthetic images of class c),
    built with ``create_graph=True`` so the loss is differentiable w.r.t. ``S``.

Loss (DC's layer-wise distance, Zhao, Mopuri & Bilen, ICLR 2021): for every matrix-shaped
parameter reshaped to ``[out, -1]``, ``Σ_rows (1 - cos(ĝ_row, g^S_row))``, summed over
parameters and over the classes present in ``S``. One-dimensional parameters (biases,
norm scales) are ignored by DC's distance and are therefore not released either.

Which parameters (``layers``):
    The default is the final linear layer (``("classifier",)``): ``d = C · feature_dim``
    (ConvNet-3 on 28×28, padded to 32×32 as in DC: 10 · 2048 = 20 480 floats per example, ~52 MB
    for a Poisson batch of 640 in float32; on 8×8 digits 1 280). Per-sample gradients of the whole
    ConvNet-3 (``layers=("",)``, every parameter) are ~300 k floats per example, i.e.
    ~1.2 MB each and ~0.8 GB per batch of 640: possible on a GPU, too slow/large for the
    default CPU path. Any parameter-name prefixes may be given (e.g.
    ``("features.6", "classifier")``); the per-sample vector is their concatenation.

Privacy:
    The step network is random (seeded by the step, never trained on real data); the
    term only *reads* it: it works on a private copy whose selected parameters are
    made trainable so Opacus can attach its hooks. Real examples enter only through
    :meth:`GradientTerm.real_vectors` (one row each, per-sample, no batch coupling:
    the models use GroupNorm, never BatchNorm). The rows are clipped to ``clip`` by the
    mechanism (Abadi et al., CCS 2016).

References:
    Zhao, Mopuri & Bilen, "Dataset Condensation with Gradient Matching", ICLR 2021, arXiv:2006.05929.
    Abadi et al., "Deep Learning with Differential Privacy", CCS 2016, arXiv:1607.00133.
    Yousefpour et al., "Opacus: User-Friendly Differential Privacy Library in PyTorch", 2021, arXiv:2109.12298.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from securedc.errors import ConfigError
from securedc.terms.base import StepContext, Term, register_term

if TYPE_CHECKING:
    from securedc.config import CondenseConfig

__all__ = ["GradientTerm", "per_sample_gradients", "gradient_match_distance"]


def _selected(module: nn.Module, layers: Sequence[str]) -> list[tuple[str, nn.Parameter]]:
    """Matrix-shaped parameters whose names start with one of ``layers`` ("" = all)."""
    return [
        (name, p)
        for name, p in module.named_parameters()
        if p.ndim >= 2 and any(name == pre or name.startswith(pre) for pre in layers)
    ]


def per_sample_gradients(module: nn.Module, params: Sequence[nn.Parameter], x: Tensor, y: Tensor) -> Tensor:
    """Per-sample gradients of ``CE(module(x_i), y_i)`` w.r.t. ``params``, as rows ``[n, d]``.

    Uses Opacus' ``GradSampleModule`` (hooks computing per-sample gradients in one
    backward pass); the hooks are removed again before returning. Only ``params`` may
    require gradients in ``module``.

    Example:
        >>> lin = nn.Linear(3, 2)
        >>> per_sample_gradients(lin, [lin.weight], torch.rand(4, 3), torch.tensor([0, 1, 1, 0])).shape
        torch.Size([4, 6])
    """
    from opacus.grad_sample import GradSampleModule  # lazy: see securedc.privacy.rdp.rdp_orders

    was_training = module.training
    gsm = GradSampleModule(module, batch_first=True, loss_reduction="sum")
    try:
        # Opacus records activations only in training mode; the registered models have
        # no dropout and no BatchNorm, so train and eval mode compute the same function.
        gsm.train()
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            loss = F.cross_entropy(gsm(x), y, reduction="sum")
            loss.backward()
        rows = torch.cat([p.grad_sample.detach().reshape(x.shape[0], -1) for p in params], dim=1)
    finally:
        gsm._close()  # removes the hooks and the grad_sample attributes
        module.train(was_training)
        for p in params:
            p.grad = None
    return rows


def gradient_match_distance(real: Sequence[Tensor], syn: Sequence[Tensor], *, eps: float = 1e-6) -> Tensor:
    """DC's layer-wise distance ``Σ_layers Σ_rows (1 - cos(real_row, syn_row))``.

    Args:
        real, syn: gradients of the same parameters, each reshaped to ``[out, -1]`` here.

    Example:
        >>> g = [torch.tensor([[1.0, 0.0], [0.0, 2.0]])]
        >>> float(gradient_match_distance(g, g)) < 1e-5
        True
    """
    total = syn[0].new_zeros(())
    for r, s in zip(real, syn):
        r2, s2 = r.reshape(r.shape[0], -1), s.reshape(s.shape[0], -1)
        cos = (r2 * s2).sum(1) / (r2.norm(dim=1) * s2.norm(dim=1) + eps)
        total = total + (1 - cos).sum()
    return total


@register_term("gradient")
class GradientTerm(Term):
    """Match per-class mean gradients of a random network (DC), privatised per sample.

    Args:
        layers: parameter-name prefixes whose gradients are matched (default: the final
            linear layer ``"classifier"``; ``""`` selects every parameter). Only
            matrix-shaped parameters (ndim >= 2) are used, as in DC.
        weight: weight of the term.
        clip: per-sample L2 bound of the flattened gradient in DP mode (default: the
            run's ``--clip``, 1.0; cosine matching is scale-free, so C only sets the
            signal-to-noise ratio against the other terms' bounds).

    References:
        Zhao, Mopuri & Bilen, "Dataset Condensation with Gradient Matching", ICLR 2021.
    """

    def __init__(self, *, layers: Sequence[str] = ("classifier",), weight: float = 1.0, clip: float = 1.0) -> None:
        super().__init__(weight=weight, clip=clip)
        if isinstance(layers, str) or not layers:
            raise ConfigError(f"layers must be a non-empty sequence of parameter-name prefixes (got {layers!r})")
        self.layers = tuple(layers)
        self._module: nn.Module | None = None
        self._params: list[nn.Parameter] = []
        self._shapes: list[torch.Size] = []

    @classmethod
    def from_config(cls, config: "CondenseConfig") -> "GradientTerm | None":
        if config.grad_weight <= 0:
            return None
        return cls(weight=config.grad_weight, clip=config.privacy.clip)

    def prepare(self, ctx: StepContext) -> None:
        """Make a private trainable copy of the step network's selected parameters."""
        module = copy.deepcopy(ctx.network)
        module.eval()
        for p in module.parameters():
            p.requires_grad_(False)
        named = _selected(module, self.layers)
        if not named:
            names = [n for n, p in module.named_parameters() if p.ndim >= 2]
            raise ConfigError(f"gradient term: no matrix parameter matches {self.layers}; choose among {names}")
        for _, p in named:
            p.requires_grad_(True)
        self._module = module
        self._params = [p for _, p in named]
        self._shapes = [p.shape for p in self._params]

    @property
    def dim(self) -> int:
        """Length d of the per-sample vector (after :meth:`prepare`)."""
        return int(sum(s.numel() for s in self._shapes))

    def _need_module(self) -> nn.Module:
        if self._module is None:
            raise RuntimeError("GradientTerm.prepare(ctx) must be called before use")
        return self._module

    def real_vectors(self, ctx: StepContext, x: Tensor, y: Tensor) -> Tensor:
        module = self._need_module()
        if x.shape[0] == 0:
            return x.new_zeros(0, self.dim)
        return per_sample_gradients(module, self._params, x.detach(), y)

    def _split(self, row: Tensor) -> list[Tensor]:
        out, start = [], 0
        for shape in self._shapes:
            n = shape.numel()
            out.append(row[start : start + n].reshape(shape))
            start += n
        return out

    def loss(self, ctx: StepContext, real_stat: Tensor, syn_x: Tensor, syn_y: Tensor) -> Tensor:
        module = self._need_module()
        total = syn_x.new_zeros(())
        logits = module(syn_x)  # one forward for all classes; gradients per class below
        for c in torch.unique(syn_y).tolist():
            mask = syn_y == c
            ce = F.cross_entropy(logits[mask], syn_y[mask])
            g_syn = torch.autograd.grad(ce, self._params, create_graph=True, retain_graph=True)
            total = total + gradient_match_distance(self._split(real_stat[c].to(syn_x)), list(g_syn))
        return total

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "layers": list(self.layers), "dim": self.dim if self._shapes else None}
