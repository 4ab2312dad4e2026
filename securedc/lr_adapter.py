"""Online adaptation of the image learning rate (hypergradient descent).

Example:
    >>> img = torch.zeros(3, requires_grad=True)
    >>> opt = torch.optim.SGD([img], lr=1.0)
    >>> lr = HypergradientLR(opt, base_lr=1.0)
    >>> for g in (torch.ones(3), torch.ones(3)):
    ...     img.grad = g
    ...     lr.update(img)
    >>> lr.lr > 1.0
    True
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["HypergradientLR"]


class HypergradientLR:
    """Multiplicative hypergradient descent on the learning rate of one tensor's optimiser.

    After each backward pass, the learning rate grows by ``1 + rate·cos(g_t, g_{t-1})`` (and
    shrinks when successive gradients disagree), kept within ``[base/100, base·100]``.

    Args:
        optimizer: the optimiser whose param groups get the learning rate.
        base_lr: the starting learning rate.
        rate: multiplicative step of the adaptation.

    References:
        Baydin et al., "Online Learning Rate Adaptation with Hypergradient Descent", ICLR 2018, arXiv:1703.04782.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, base_lr: float, rate: float = 0.02) -> None:
        self.optimizer = optimizer
        self.base_lr = float(base_lr)
        self.rate = float(rate)
        self.lr = float(base_lr)
        self.prev_grad: Tensor | None = None

    def update(self, images: Tensor) -> None:
        """Adapt the learning rate from ``images.grad`` (call between backward and step)."""
        assert images.grad is not None
        grad = images.grad.detach().flatten().clone()
        if self.prev_grad is not None:
            cos = torch.dot(grad, self.prev_grad) / (grad.norm() * self.prev_grad.norm() + 1e-12)
            self.lr = float(min(max(self.lr * (1 + self.rate * float(cos)), self.base_lr / 100), self.base_lr * 100))
        self.prev_grad = grad
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr

    def state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """(tensors, JSON record) for a checkpoint."""
        tensors = {"lr.prev_grad": self.prev_grad} if self.prev_grad is not None else {}
        return tensors, {"lr": self.lr}

    def load(self, tensors: dict[str, Tensor], record: dict[str, Any]) -> None:
        self.lr = float(record["lr"])
        prev = tensors.get("lr.prev_grad")
        self.prev_grad = prev.clone() if prev is not None else None
