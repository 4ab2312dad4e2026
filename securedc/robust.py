"""Robust training pieces shared by evaluation, audits, the plugins and the adversarial term.

* :class:`PGDRecipe` — an adversarial-training recipe (Madry et al.): every training batch
  is replaced by its L∞ PGD examples (torchattacks, per-example keyed random start) against
  the model being trained.
* :func:`soft_label_loss` — cross-entropy against per-image soft labels (the KD loss of
  Hinton et al. with the teacher's tempered probabilities stored in the file).
* :func:`train_robust_extractor` — adversarially trains a network on a (synthetic or
  declared-public) set; the robust-feature term matches real features under it.
* :func:`save_extractor` / :func:`load_extractor` — safetensors weights (no pickle).

References:
    Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018, arXiv:1706.06083.
    Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", arXiv:1503.02531, 2015.
    Goldblum et al., "Adversarially Robust Distillation", AAAI 2020, arXiv:1905.09747.
    Ilyas et al., "Adversarial Examples Are Not Bugs, They Are Features", NeurIPS 2019, arXiv:1905.02175.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from securedc.errors import ConfigError, DataError
from securedc.io import atomic_path

__all__ = [
    "PGDRecipe",
    "soft_label_loss",
    "check_soft_labels",
    "train_robust_extractor",
    "save_extractor",
    "load_extractor",
    "soft_labels_from",
]


@dataclass(frozen=True, kw_only=True)
class PGDRecipe:
    """Adversarial training with L∞ PGD examples (the model is trained on PGD(x) instead of x).

    Attributes:
        eps: L∞ radius in [0, 1] pixel units (normalisation stays inside the model).
        steps: PGD steps per training batch.
        alpha: step size; ``None`` = ``2.5 * eps / steps`` (Madry et al.'s rule).
        random_start: start each example at a keyed uniform point of the ball.

    Example:
        >>> r = PGDRecipe(eps=0.1, steps=5)
        >>> round(r.step_size, 3), r.describe()["name"]
        (0.05, 'pgd')
    """

    eps: float
    steps: int = 5
    alpha: float | None = None
    random_start: bool = True

    def __post_init__(self) -> None:
        problems = []
        if not (isinstance(self.eps, (int, float)) and 0 < self.eps <= 1):
            problems.append(f"PGDRecipe eps must be in (0, 1] in pixel units (got {self.eps!r}); e.g. 8/255")
        if not (isinstance(self.steps, int) and self.steps >= 1):
            problems.append(f"PGDRecipe steps must be an int >= 1 (got {self.steps!r})")
        if self.alpha is not None and not (0 < self.alpha <= 1):
            problems.append(f"PGDRecipe alpha must be in (0, 1] (got {self.alpha!r})")
        if problems:
            raise ConfigError("; ".join(problems))

    @classmethod
    def fast(cls, eps: float) -> "PGDRecipe":
        """Fast adversarial training: FGSM from a uniform random start with step ``1.25 * eps``
        (FGSM-RS, Wong, Rice & Kolter, "Fast is better than free: Revisiting adversarial training",
        ICLR 2020) — one input gradient per batch instead of ``steps``, about a third of the cost of
        the 5-step recipe. Its known failure (catastrophic overfitting) makes models *less* robust,
        which an evaluation with unchanged attacks shows; it cannot overstate robustness.

        Example:
            >>> r = PGDRecipe.fast(0.1)
            >>> r.steps, round(r.step_size, 3), r.describe()["name"]
            (1, 0.125, 'fgsm-rs')
        """
        return cls(eps=eps, steps=1, alpha=min(1.0, 1.25 * eps), random_start=True)

    @property
    def step_size(self) -> float:
        return float(self.alpha) if self.alpha is not None else 2.5 * self.eps / self.steps

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, *, seed: int) -> Tensor:
        """PGD examples of ``x`` against ``model`` (its training mode is restored afterwards)."""
        from securedc.keyed_pgd import KeyedPGD

        with torch.enable_grad():
            atk = KeyedPGD(model, eps=self.eps, alpha=self.step_size, steps=self.steps, seed=seed,
                           random_start=self.random_start)
            return atk(x.detach().clamp(0, 1), y).detach()

    def describe(self) -> dict[str, Any]:
        name = "fgsm-rs" if self.steps == 1 and self.random_start else "pgd"
        return {"name": name, "eps": self.eps, "steps": self.steps, "alpha": self.step_size,
                "random_start": self.random_start, "attack": "torchattacks.PGD (L-inf, keyed random start)"}


def check_soft_labels(soft_labels: Tensor, labels: Tensor, *, num_classes: int | None = None, where: str = "") -> Tensor:
    """Validate per-image soft labels ``[M, C]`` (non-negative rows summing to 1) against ``labels [M]``.

    Raises:
        DataError: wrong shape, dtype or values.
    """
    prefix = f"{where}: " if where else ""
    if not isinstance(soft_labels, Tensor) or soft_labels.dim() != 2 or soft_labels.shape[0] != labels.shape[0]:
        shape = list(soft_labels.shape) if isinstance(soft_labels, Tensor) else type(soft_labels).__name__
        raise DataError(f"{prefix}soft_labels must be [M, C] with M = {labels.shape[0]} images, got {shape}")
    if num_classes is not None and soft_labels.shape[1] != num_classes:
        raise DataError(f"{prefix}soft_labels have {soft_labels.shape[1]} columns but there are {num_classes} classes")
    if labels.numel() and int(labels.max()) >= soft_labels.shape[1]:
        raise DataError(f"{prefix}label {int(labels.max())} has no soft-label column ({soft_labels.shape[1]} columns)")
    if not soft_labels.is_floating_point() or not torch.isfinite(soft_labels).all() or soft_labels.min() < 0:
        raise DataError(f"{prefix}soft_labels must be finite non-negative floats (probabilities)")
    if soft_labels.numel() and (soft_labels.sum(1) - 1).abs().max() > 1e-3:
        raise DataError(f"{prefix}soft_labels rows must sum to 1 (probabilities), got sums up to "
                        f"{float((soft_labels.sum(1) - 1).abs().max() + 1):.4f}")
    return soft_labels.float()


def soft_label_loss(logits: Tensor, soft_labels: Tensor, *, reduction: str = "mean") -> Tensor:
    """Cross-entropy with soft targets, ``-Σ_c p_c log softmax(logits)_c`` (KD with stored probabilities).

    Example:
        >>> logits = torch.tensor([[2.0, 0.0]])
        >>> hard = soft_label_loss(logits, torch.tensor([[1.0, 0.0]]))
        >>> bool(torch.isclose(hard, F.cross_entropy(logits, torch.tensor([0]))))
        True
    """
    loss = -(soft_labels * F.log_softmax(logits, dim=1)).sum(1)
    return loss.sum() if reduction == "sum" else loss.mean()


def train_robust_extractor(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    recipe: PGDRecipe,
    epochs: int,
    seed: int,
    lr: float = 0.01,
    batch_size: int = 256,
    augment: Callable[[Tensor, torch.Generator], Tensor] | None = None,
) -> nn.Module:
    """Adversarially train ``model`` on (images, labels) with ``recipe``; returned frozen, in eval mode.

    Privacy: the only data seen are ``images`` — the synthetic set (post-processing, free) or a
    set the user declares public. Real private data must never be passed here.
    """
    if epochs < 0:
        raise ConfigError(f"extractor epochs must be >= 0 (got {epochs})")
    for p in model.parameters():
        p.requires_grad_(True)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    x_all, y_all = images.detach().float(), labels
    n = x_all.shape[0]
    model.train()
    with torch.enable_grad():
        for epoch in range(epochs):
            order = torch.randperm(n, generator=gen).to(x_all.device)
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                x, y = x_all[idx], y_all[idx]
                if augment is not None:
                    x = augment(x, gen)
                x = recipe.perturb(model, x, y, seed=seed * 7919 + epoch * 131 + start)
                model.train()
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


SOFT_LABEL_CONFIDENCE = 0.85
"""Mean top probability that ``temperature=None`` sharpens flat soft labels to: the Fashion-MNIST robust
teacher's own at temperature 1, where its soft labels were measured to add robustness (docs/audits.md)."""


@torch.no_grad()
def soft_labels_from(model: nn.Module, images: Tensor, *, temperature: float | None = None) -> Tensor:
    """Tempered softmax of ``model`` on ``images`` ``[M, C]`` (post-processing of S when the model
    was trained on S or on public data).

    ``temperature=None`` (auto) keeps 1 unless the labels are flatter than
    :data:`SOFT_LABEL_CONFIDENCE` on average, and then sharpens them to it (:func:`sharpening_temperature`):
    a weak teacher's near-uniform labels (mean top probability 0.13-0.21 on digits) give the KD loss
    little signal (a DP digits release: 71.7 % test accuracy on them, 75.5 % sharpened, ~91 % on its hard
    labels; the audit, which trains on a release's soft labels, refuses both: docs/audits.md).
    """
    if temperature is not None and not (math.isfinite(temperature) and temperature > 0):
        raise ConfigError(f"soft-label temperature must be > 0 (got {temperature})")
    model.eval()
    logits = torch.cat([model(x) for x in images.split(256)]) if images.shape[0] else images.new_zeros(0, 1)
    logits = logits.float()
    if temperature is None:
        temperature = sharpening_temperature(logits)
    return F.softmax(logits / temperature, dim=1).cpu()


def sharpening_temperature(logits: Tensor, *, confidence: float = SOFT_LABEL_CONFIDENCE) -> float:
    """The temperature ≤ 1 at which the mean top softmax probability of ``logits`` reaches ``confidence``
    (1 when it already does; bisection in log T, the mean top probability falls as T grows).

    Example:
        >>> sharpening_temperature(torch.tensor([[2.0, 0.0], [0.0, 3.0]]))  # already confident
        1.0
        >>> t = sharpening_temperature(torch.tensor([[0.2, 0.0, 0.0], [0.0, 0.1, 0.0]]))
        >>> round(float(torch.softmax(torch.tensor([[0.2, 0.0, 0.0], [0.0, 0.1, 0.0]]) / t, 1).max(1).values.mean()), 2)
        0.85
    """
    def top(t: float) -> float:
        return float(F.softmax(logits / t, dim=1).max(dim=1).values.mean()) if logits.numel() else 1.0

    if top(1.0) >= confidence:
        return 1.0
    lo, hi = math.log(1e-4), 0.0  # top(e^lo) ≥ confidence unless the logits tie
    if top(math.exp(lo)) < confidence:
        return math.exp(lo)
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if top(math.exp(mid)) >= confidence else (lo, mid)
    return math.exp(lo)


def save_extractor(path: str | os.PathLike[str], model: nn.Module, *, metadata: dict[str, str] | None = None) -> None:
    """Write ``model``'s state dict as safetensors (tensors only; loading runs no code), atomically.

    Args:
        path: the weights file.
        model: the network.
        metadata: string header entries (e.g. what the network was trained on).
    """
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp),
                  metadata=metadata)


def load_extractor(path: str | os.PathLike[str], model: nn.Module) -> nn.Module:
    """Load safetensors weights written by :func:`save_extractor` into ``model`` (strict); frozen, eval.

    Raises:
        DataError: missing/unreadable file or weights that do not fit the architecture.
    """
    try:
        state = load_file(str(path))
    except FileNotFoundError:
        raise DataError(f"--robust-extractor {str(path)!r} not found; give a .safetensors file of weights") from None
    except (SafetensorError, OSError, ValueError) as err:
        raise DataError(f"--robust-extractor {str(path)!r} is not a safetensors weights file: {err}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        # torch lists the mismatches on the lines after its headline: keep the first one, on one line
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0] if lines else type(err).__name__
        raise DataError(f"--robust-extractor {str(path)!r} does not fit the {type(model).__name__} of this run "
                        f"(another --model or dataset?): {detail[:200]}") from None
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
