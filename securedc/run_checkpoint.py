"""A condensation run's checkpoint: what it holds and how a run resumes from it.

The file format (safetensors tensors + one JSON record) is :mod:`securedc.checkpoint`'s. A run's
checkpoint holds the synthetic images (``images``), the optimiser state (``opt.*``), the
learning-rate adapter's state, the releases made so far (``bank.*``) and a record with the step,
the configuration, the losses, the ε history, the accountant, the privacy plan and, in DP mode,
the SECRET stream key and released counts (``secret``): checkpoints stay with the data owner.

A resume refuses another configuration (except the settings in :data:`RESUMABLE_CHANGES`),
a private/non-private mismatch and more releases than the run makes; it never repeats a release.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from securedc.bank import StatisticsBank
from securedc.checkpoint import load_checkpoint, optimizer_from_tensors, optimizer_to_tensors, save_checkpoint
from securedc.config import CondenseConfig
from securedc.errors import ConfigError, DataError, PrivacyError
from securedc.lr_adapter import HypergradientLR
from securedc.privacy import GaussianMechanism, Mechanism, PrivacyAccountant, PrivacyPlan
from securedc.privacy.run import restore_private

__all__ = ["RunState", "RunCheckpoints", "save_run", "resume_run", "check_same_config", "RESUMABLE_CHANGES"]

logger = logging.getLogger(__name__)

#: Configuration fields a resume may change (a private resume also checks the plan).
RESUMABLE_CHANGES = ("iterations", "checkpoint_every", "device", "real_chunk", "real_precision", "releases", "reuse",
                     "bank_memory_gb")


@dataclass
class RunState:
    """The state of a run in progress that a checkpoint saves (the loop updates it in place).

    Attributes:
        images: the synthetic images S being optimised.
        optimizer: S's optimiser.
        lr: the learning-rate adapter, or ``None``.
        bank: the releases made so far.
        accountant: the DP accountant, or ``None``.
        losses: the loss of every step done.
        epsilon_history: ``(step, ε)`` pairs logged so far.
    """

    images: Tensor
    optimizer: torch.optim.Optimizer
    lr: HypergradientLR | None
    bank: StatisticsBank
    accountant: PrivacyAccountant | None
    losses: list[float] = field(default_factory=list)
    epsilon_history: list[tuple[int, float]] = field(default_factory=list)


def save_run(
    path: str | Path,
    step: int,
    state: RunState,
    *,
    config: CondenseConfig,
    plan: PrivacyPlan | None,
    mechanism: Mechanism | None,
) -> None:
    """Write the checkpoint of ``state`` after ``step`` steps to ``path`` (atomically).

    Privacy:
        In DP mode the file holds the mechanism's SECRET stream key and the released counts.
    """
    opt_tensors, opt_record = optimizer_to_tensors(state.optimizer)
    lr_tensors, lr_record = state.lr.state() if state.lr is not None else ({}, None)
    tensors = {"images": state.images, **opt_tensors, **lr_tensors,
               **{f"bank.{k}": v for k, v in state.bank.tensors().items()}}
    secret = None
    if isinstance(mechanism, GaussianMechanism) and plan is not None:
        # SECRET: the stream key and the released counts; checkpoints stay with the data owner
        secret = {**mechanism.streams.state_dict(), "counts": list(plan.estimated_counts)}
    meta = {
        "step": step,
        "config": config.to_dict(),
        "optimizer": opt_record,
        "lr": lr_record,
        "losses": state.losses,
        "epsilon_history": state.epsilon_history,
        "accountant": state.accountant.state_dict() if state.accountant is not None else None,
        "privacy_plan": plan.to_dict() if plan is not None else None,
        "secret": secret,
        # private: the data the run read, so a resume on other data is refused (not a release)
        "data_sha256": mechanism.data_sha256 if mechanism is not None else None,
    }
    save_checkpoint(path, tensors, meta)


@dataclass
class RunCheckpoints:
    """When a run writes its checkpoint: every ``config.checkpoint_every`` steps, at the end, and on Ctrl-C.

    Attributes:
        path: where checkpoints go, or ``None`` (none are written).
        state: the run's state (updated in place by the loop).
        config, plan, mechanism: as for :func:`save_run`.
    """

    path: str | Path | None
    state: RunState
    config: CondenseConfig
    plan: PrivacyPlan | None
    mechanism: Mechanism | None

    def save(self, step: int) -> None:
        """Write the checkpoint after ``step`` steps (:func:`save_run`)."""
        assert self.path
        save_run(self.path, step, self.state, config=self.config, plan=self.plan, mechanism=self.mechanism)

    def after_step(self, step: int) -> None:
        """Write a checkpoint after ``step`` steps if a periodic one is due."""
        every = self.config.checkpoint_every
        if self.path and every and step % every == 0:
            self.save(step)

    def at_end(self, step: int) -> None:
        """Write the final checkpoint after ``step`` steps (when checkpoints are periodic)."""
        if self.path and self.config.checkpoint_every:
            self.save(step)

    def interrupted(self) -> None:
        """Write the steps done so far (on Ctrl-C) and say where."""
        if self.path:
            self.save(len(self.state.losses))
            logger.warning("interrupted at step %d; checkpoint saved to %s (continue with --resume %s)",
                           len(self.state.losses), self.path, self.path)


def check_same_config(meta: dict[str, Any], config: CondenseConfig, path: Any) -> None:
    """Refuse to resume checkpoint ``path`` (its JSON record ``meta``) under another configuration.

    Only the settings in :data:`RESUMABLE_CHANGES` may differ.

    Raises:
        ConfigError: another configuration.
    """
    saved, mine = meta.get("config") or {}, config.to_dict()
    differing = [k for k in mine if k not in RESUMABLE_CHANGES and saved.get(k) != mine[k]]
    if differing:
        raise ConfigError(f"checkpoint {path} was made with a different configuration ({', '.join(differing)})")


def resume_run(
    path: str | Path,
    state: RunState,
    *,
    config: CondenseConfig,
    mechanism: Mechanism | None,
    num_classes: int,
    device: torch.device,
) -> tuple[int, PrivacyPlan | None]:
    """Load the checkpoint at ``path`` into ``state`` (images, optimiser, adapter, bank, history).

    Returns:
        ``(steps done, the checkpoint's privacy plan or None)``.

    Raises:
        ConfigError: another configuration, or more releases than this run makes.
        PrivacyError: a private run from a non-private checkpoint or the reverse, or a
            change of the private mechanism.
        DataError: a checkpoint made on other training data, images of another shape, or not a checkpoint.
    """
    tensors, meta = load_checkpoint(path)
    check_same_config(meta, config, path)
    saved_data = meta.get("data_sha256")
    if saved_data and mechanism is not None and saved_data != mechanism.data_sha256:
        # the same secret streams on other data would release noise that cancels against the first run's
        raise DataError(f"checkpoint {path} was made on other training data; resume with the data it was made on")
    if (meta["accountant"] is None) != (state.accountant is None):
        raise PrivacyError("cannot resume a private run from a non-private checkpoint or the reverse")
    plan = restore_private(config, meta, mechanism, source=path) if isinstance(mechanism, GaussianMechanism) else None
    images = state.images
    if tensors["images"].shape != images.shape:
        raise DataError(
            f"checkpoint images have shape {tuple(tensors['images'].shape)}, expected {tuple(images.shape)}"
        )
    with torch.no_grad():
        images.copy_(tensors["images"].to(images.device))
    optimizer_from_tensors(state.optimizer, tensors, meta["optimizer"], device=device)
    if state.lr is not None and meta.get("lr") is not None:
        state.lr.load(tensors, meta["lr"])
    _restore_bank(state.bank, tensors, path=path, num_classes=num_classes, device=device)
    if state.accountant is not None:
        state.accountant = PrivacyAccountant.from_state_dict(meta["accountant"])
    state.losses = list(meta["losses"])
    state.epsilon_history = [tuple(x) for x in meta["epsilon_history"]]  # type: ignore[misc]
    logger.info("resumed from %s at step %d with %d releases", path, int(meta["step"]), len(state.bank))
    return int(meta["step"]), plan


def _restore_bank(
    bank: StatisticsBank, tensors: dict[str, Tensor], *, path: Any, num_classes: int, device: torch.device
) -> None:
    """Add the checkpoint's releases (``bank.*`` tensors) to the empty ``bank``."""
    saved_bank = {k.removeprefix("bank."): v for k, v in tensors.items() if k.startswith("bank.")}
    made = saved_bank["seeds"].numel()
    if made > bank.capacity:
        raise ConfigError(
            f"checkpoint {path} holds {made} releases but this run makes {bank.capacity}; "
            "resume with the original --iterations/--releases"
        )
    saved = StatisticsBank.from_tensors(saved_bank, capacity=max(1, made), num_classes=num_classes)
    for r in range(made):
        bank.add(saved.seed(r), [s.to(device) for s in saved.statistics(r)])
    bank.prototypes, bank.noise_std, bank.centres = saved.prototypes, saved.noise_std, saved.centres
