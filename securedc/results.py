"""What a condensation run reports: per-step progress events and the final result.

Example:
    >>> ProgressEvent(step=1, total=2, loss=0.5, epsilon_spent=None, seconds=0.1).releases
    0
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from securedc.bank import StatisticsBank

__all__ = ["ProgressEvent", "CondenseResult"]


@dataclass(frozen=True)
class ProgressEvent:
    """Sent to the progress callback after every step.

    Attributes:
        images: the current synthetic images (a detached view of the optimised tensor:
            copy it to keep a snapshot; never modify it), or ``None``.
        releases: releases in the bank so far.
    """

    step: int
    total: int
    loss: float
    epsilon_spent: float | None
    seconds: float
    images: Tensor | None = field(default=None, repr=False)  # the repr stays one line
    releases: int = 0


@dataclass
class CondenseResult:
    """Output of :meth:`~securedc.condenser.Condenser.fit`."""

    images: Tensor
    labels: Tensor
    steps_done: int
    losses: list[float]
    seconds: float
    privacy: dict[str, Any]
    terms: list[dict[str, Any]]
    interrupted: bool = False
    epsilon_history: list[tuple[int, float]] = field(default_factory=list)
    bank: StatisticsBank | None = None
    #: real examples whose per-sample vector was non-finite and zeroed (owner only, never released)
    nonfinite_rows: int = 0
    #: the image learning rate the run used (:meth:`~securedc.condenser.Condenser.run_lr`)
    lr_img: float | None = None
