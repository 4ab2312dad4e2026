"""What an audit of a release is given: the effort (:class:`AuditConfig`) and the release with its data (:class:`AuditContext`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
import math
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from securedc.config import CondenseConfig, EvalConfig
from securedc.errors import ConfigError, Problem

__all__ = ["AuditConfig", "AuditContext", "make_condense_fn"]


@dataclass(frozen=True, kw_only=True)
class AuditConfig:
    """How much auditing to do (defaults = the quick CPU audit run by ``securedc condense``).

    Attributes:
        holdout_fraction: share of each class of the training data reserved as non-members.
        shadows: shadow condensations for LiRA/RMIA (``--audit-shadows``; 0 skips them).
        canaries: canaries of the one-run audit (``--audit-canaries``; 0 skips it).
        audit_iterations: steps of each shadow/canary condensation, capped at the release's T;
            0 = the release's T (thorough).
        architectures: utility architectures (the first is the main evaluation model).
        mia_eval: protocol of the attack models (``None`` = ``DEFAULT_MIA_EVAL`` of the MIA module, 2 models
            × 100 epochs without augmentation, capped at the evaluation protocol's models and epochs).
        max_targets: members and non-members scored by the MIA (each; at most half of the non-members,
            the other half is the reference population of LiRA/RMIA).
        robustness_quick: quick robustness audit (no AutoAttack, fewer test images).
    """

    holdout_fraction: float = 0.2
    shadows: int = 2
    canaries: int = 100
    audit_iterations: int = 100
    architectures: tuple[str, ...] = ("convnet", "mlp")
    mia_eval: EvalConfig | None = None
    max_targets: int = 500
    robustness_quick: bool = True

    def problems(self) -> list[Problem]:
        out: list[Problem] = []
        if not (0 < self.holdout_fraction < 1):
            out.append(Problem("audit.holdout_fraction", f"must be in (0, 1) (got {self.holdout_fraction}); e.g. 0.2"))
        if self.shadows < 0:
            out.append(Problem("audit.shadows", f"must be >= 0 (got {self.shadows})"))
        if self.canaries < 0:
            out.append(Problem("audit.canaries", f"must be >= 0 (got {self.canaries})"))
        if self.audit_iterations < 0:
            out.append(Problem("audit.audit_iterations", f"must be >= 0 (got {self.audit_iterations}); 0 = the release's T"))
        if not self.architectures:
            out.append(Problem("audit.architectures", "must name at least one architecture (the utility audit)"))
        if self.max_targets < 2:
            out.append(Problem("audit.max_targets", f"must be >= 2 (got {self.max_targets})"))
        return out

    def validate(self) -> "AuditConfig":
        problems = self.problems()
        if problems:
            raise ConfigError(problems=problems)
        return self

    def iterations_for(self, config: CondenseConfig) -> int:
        """Steps of a shadow / canary condensation for a release made with ``config``."""
        if self.audit_iterations == 0:
            return config.iterations
        return max(1, min(config.iterations, self.audit_iterations))


@dataclass(frozen=True, kw_only=True)
class AuditContext:
    """A release, the data around it and the audit settings: the one argument of :meth:`Audit.measure`.

    Attributes:
        images, labels: the release S (condensed from ``members`` only).
        members, nonmembers: the membership split (:func:`~securedc.audits.pipeline.split_members`).
        test: real test data (accuracy only; never used as non-members).
        num_classes, mean, std: dataset metadata.
        config: the release's condensation config (shadow and canary runs reuse it).
        eval_config: the evaluation protocol.
        settings: how much to audit (:class:`AuditConfig`).
        prototypes: the release's own DP class prototypes (its bank's), when the audit runs right
            after the condensation; ``None`` on a re-audit of a file.
        privacy: the release's privacy section (noise multipliers of its prototypes), or ``None``.
        soft_labels: the release's per-image soft labels (``--soft-labels``), or ``None``: models
            trained on S by the utility and robustness audits use them (the KD loss), as a user
            training on the file does.
        shared: work the audits of one run share so nothing is computed twice: the trained
            evaluation models (``shared["models"][(set, architecture)]``, set ∈ ``condensed``,
            ``random``, ``dp_baseline``; filled by the utility audit, attacked by the robustness
            audit) and the DP prototype baseline draws (:meth:`dp_baselines`). Never exported.
    """

    images: Tensor
    labels: Tensor
    members: tuple[Tensor, Tensor]
    nonmembers: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    config: CondenseConfig
    eval_config: EvalConfig
    settings: AuditConfig
    prototypes: Tensor | None = field(default=None, compare=False, repr=False)
    privacy: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    soft_labels: Tensor | None = field(default=None, compare=False, repr=False)
    shared: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def meta(self) -> dict[str, Any]:
        """``num_classes``, ``mean`` and ``std`` as keyword arguments."""
        return dict(num_classes=self.num_classes, mean=tuple(self.mean), std=tuple(self.std))

    @property
    def private(self) -> bool:
        """The release claims a finite ε."""
        return math.isfinite(self.config.privacy.epsilon)

    def dp_baselines(self) -> list[tuple[Tensor, Tensor]] | None:
        """Draws of the DP prototype baseline of the release's (ε, δ), one per evaluation model
        (``None`` if not private); made once per audit run.

        When the release's own prototypes carry (almost) the whole budget
        (:func:`~securedc.privacy.baseline.paired_prototype_baseline`: the low-SNR top-up regime),
        they are the one draw every model trains on — a paired comparison, free of the
        draw-to-draw spread. Otherwise the gates compare against the baseline's *expected*
        accuracy: each model trains on its own independent draw (the noise of a single draw moves
        its accuracy by several points on small data;
        :func:`~securedc.privacy.baseline.dp_prototype_baseline`, fresh secret randomness each;
        never released). The utility and robustness audits use the same draws;
        :attr:`dp_baseline_kind` says which.
        """
        if not self.private:
            return None
        if "dp_baselines" not in self.shared:
            import torch

            from securedc.privacy.baseline import baseline_delta, dp_prototype_draws, paired_prototype_baseline

            x, y = self.members
            ipc = int(torch.bincount(self.labels.cpu(), minlength=self.num_classes).max())
            eps, delta = float(self.config.privacy.epsilon), baseline_delta(self.config.privacy.delta, int(y.numel()))
            paired = paired_prototype_baseline(self.prototypes, self.privacy, ipc=ipc, epsilon=eps, delta=delta,
                                               accountant=self.config.privacy.accountant)
            self.shared["dp_baseline_kind"] = "independent" if paired is None else "paired"
            self.shared["dp_baselines"] = [paired] if paired is not None else dp_prototype_draws(
                x, y, ipc=ipc, num_classes=self.num_classes, epsilon=eps, delta=delta, draws=self.eval_config.models)
        return self.shared["dp_baselines"]

    @property
    def dp_baseline_kind(self) -> str | None:
        """``"paired"`` (the release's own prototypes), ``"independent"`` (fresh draws) or ``None``
        (not private or not made yet)."""
        return self.shared.get("dp_baseline_kind")

    def trained_models(self) -> dict[tuple[str, str], tuple[Any, ...]]:
        """The shared store of trained evaluation models, keyed ``(set, architecture)``."""
        return self.shared.setdefault("models", {})

    @property
    def steps(self) -> int:
        """Steps of each shadow / canary condensation."""
        return self.settings.iterations_for(self.config)

    def condense_fn(self, *, delta: float | None = None) -> Callable[[Tensor, Tensor, int], tuple[Tensor, Tensor]]:
        """Re-run the release's configuration on other data (:func:`make_condense_fn`).

        Args:
            delta: calibrate a private re-run to this δ instead of the one its own released counts
                would pick (the canary audit's bound must use the δ its run was calibrated to).
        """
        config = self.config
        if delta is not None and self.private:
            config = dataclasses.replace(config, privacy=dataclasses.replace(config.privacy, delta=float(delta)))
        return make_condense_fn(config, image_shape=tuple(self.images.shape[1:]), iterations=self.steps, **self.meta)


def make_condense_fn(
    config: CondenseConfig,
    *,
    num_classes: int,
    image_shape: tuple[int, int, int],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    iterations: int | None = None,
) -> Callable[[Tensor, Tensor, int], tuple[Tensor, Tensor]]:
    """``(train_x, train_y, seed) -> (syn_x, syn_y)`` re-running ``config`` (shadow / canary runs).

    Args:
        config: the release's configuration (DP runs are re-calibrated to the same (ε, δ)
            for the given data size and steps).
        iterations: steps (default: ``config.iterations``).
    """
    from securedc.condenser import Condenser

    steps = config.iterations if iterations is None else iterations

    def condense_fn(x: Tensor, y: Tensor, seed: int) -> tuple[Tensor, Tensor]:
        cfg = dataclasses.replace(config, seed=int(seed), iterations=steps, checkpoint_every=0)
        condenser = Condenser(cfg, num_classes=num_classes, image_shape=image_shape, mean=mean, std=std)
        result = condenser.fit(condenser.make_mechanism(x, y))
        return result.images, result.labels

    return condense_fn
