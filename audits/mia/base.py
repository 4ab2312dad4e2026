"""Membership-inference attack ABC, registry and the shared attack context.

Threat model (Shokri et al., "Membership Inference Attacks against Machine Learning
Models", IEEE S&P 2017, adapted to condensation): the attacker holds the released
condensed set S and can train any model on it; *members* are real examples the
condenser could access, *non-members* are held-out real examples of the same
distribution (a split of the training data reserved by the audit, never the test
set). Shadow-based attacks (LiRA, RMIA) additionally assume the attacker can run the
same condensation configuration on data from the same distribution.

Each attack is one class with ``@register_attack("name")``; :meth:`MIAttack.scores`
returns one or more named score vectors (higher = more likely a member), e.g. the
neighbour attack returns ``neighbour-pixel`` and ``neighbour-feature``.
"""

from __future__ import annotations

import abc
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from securedc.concurrency import run_concurrently
from securedc.config import EvalConfig
from securedc.errors import ConfigError
from securedc.registry import Registry
from securedc.evaluate import train_model

__all__ = [
    "MIAttack",
    "AttackContext",
    "ShadowStats",
    "register_attack",
    "create_attack",
    "list_attacks",
    "logit_confidence",
    "true_class_probability",
    "model_outputs",
]

logger = logging.getLogger(__name__)

_REGISTRY: Registry["MIAttack"] = Registry("MIA attack")

ShadowFn = Callable[[Tensor, Tensor, int], tuple[Tensor, Tensor]]


def register_attack(name: str) -> Callable[[type], type]:
    """Class decorator registering a :class:`MIAttack` under ``name``."""

    return _REGISTRY.register(name)


def create_attack(name: str) -> "MIAttack":
    """Instantiate a registered attack (``-``/``_`` and case are ignored)."""
    return _REGISTRY.create(name)


def list_attacks() -> list[str]:
    """Registered attack names."""
    return sorted(_REGISTRY)


@torch.no_grad()
def model_outputs(model: nn.Module, images: Tensor, *, batch_size: int = 1000) -> Tensor:
    """Logits of ``model`` on ``images`` (batched, no grad)."""
    device = next(model.parameters()).device
    return torch.cat([model(images[i : i + batch_size].to(device)).cpu() for i in range(0, images.shape[0], batch_size)])


def logit_confidence(logits: Tensor, labels: Tensor) -> Tensor:
    """Numerically stable logit-scaled confidence ``log p_y - log(1 - p_y)`` (Carlini et al. 2022)."""
    log_p = F.log_softmax(logits.double(), dim=1)
    own = log_p.gather(1, labels.view(-1, 1)).squeeze(1)
    others = log_p.clone()
    others.scatter_(1, labels.view(-1, 1), float("-inf"))
    return (own - torch.logsumexp(others, dim=1)).float()


def true_class_probability(logits: Tensor, labels: Tensor) -> Tensor:
    """Softmax probability of the true label."""
    return F.softmax(logits.double(), dim=1).gather(1, labels.view(-1, 1)).squeeze(1).float()


@dataclass
class ShadowStats:
    """Outputs of models trained on shadow condensations.

    Attributes:
        in_mask: ``[K, n_targets]`` — target i was in shadow k's training set.
        target_logits: ``[K, n_targets, C]`` logits of shadow model k on the targets.
        population_logits: ``[K, n_pop, C]`` logits on the population (never in any shadow).
    """

    in_mask: Tensor
    target_logits: Tensor
    population_logits: Tensor

    @property
    def count(self) -> int:
        return int(self.in_mask.shape[0])


@dataclass
class AttackContext:
    """Everything an attack may use; expensive pieces are computed once, lazily.

    Attributes:
        release_images, release_labels: the released condensed set S.
        target_images, target_labels: audit targets (members then non-members).
        is_member: ``[n]`` bool.
        population_images, population_labels: real non-members that are not targets
            (reference population for RMIA; may be empty).
        extra_member_images, extra_member_labels: members not chosen as targets; every
            shadow condensation trains on them (keeps shadow training sets the size of
            the real one).
        num_classes, mean, std: dataset metadata.
        eval_config: protocol for training attack models on S and on shadow sets.
        shadow_fn: runs the release's condensation config on a training set.
        shadows: number of shadow condensations.
        seed: master seed.
    """

    release_images: Tensor
    release_labels: Tensor
    target_images: Tensor
    target_labels: Tensor
    is_member: Tensor
    population_images: Tensor
    population_labels: Tensor
    extra_member_images: Tensor
    extra_member_labels: Tensor
    num_classes: int
    mean: Sequence[float]
    std: Sequence[float]
    eval_config: EvalConfig
    shadow_fn: ShadowFn | None = None
    shadows: int = 0
    seed: int = 0
    _target_models: list[nn.Module] | None = field(default=None, repr=False)
    _target_logits: Tensor | None = field(default=None, repr=False)
    _population_logits: Tensor | None = field(default=None, repr=False)
    _shadow: ShadowStats | None = field(default=None, repr=False)

    @property
    def has_shadows(self) -> bool:
        return self.shadow_fn is not None and self.shadows > 0

    def _train(self, x: Tensor, y: Tensor, seed: int) -> nn.Module:
        with torch.enable_grad():
            return train_model(
                x, y, num_classes=self.num_classes, mean=tuple(self.mean), std=tuple(self.std),
                config=self.eval_config, seed=seed,
            )

    def target_models(self) -> list[nn.Module]:
        """``eval_config.models`` models trained on the release (cached)."""
        if self._target_models is None:
            self._target_models = run_concurrently(self._target_jobs())
        return self._target_models

    def _target_jobs(self) -> list[Callable[[], nn.Module]]:
        return [functools.partial(self._train, self.release_images, self.release_labels, self.seed * 1000 + 17 + k)
                for k in range(self.eval_config.models)]

    def prefetch(self, *, shadows: bool) -> None:
        """Train the target models and, with ``shadows``, run the shadow condensations, all side by
        side on a CPU (:mod:`securedc.concurrency`); the attacks then read the cached results."""
        jobs: list[Callable[[], Any]] = self._target_jobs() if self._target_models is None else []
        n_targets = len(jobs)
        masks = None
        if shadows and self.has_shadows and self._shadow is None:
            masks, shadow_jobs = self._shadow_jobs()
            jobs += shadow_jobs
        outs = run_concurrently(jobs)
        if n_targets:
            self._target_models = outs[:n_targets]
        if masks is not None:
            self._shadow = self._shadow_from(masks, outs[n_targets:])

    def target_logits(self) -> Tensor:
        """``[M, n_targets, C]`` logits of the models trained on S (cached)."""
        if self._target_logits is None:
            self._target_logits = torch.stack([model_outputs(m, self.target_images) for m in self.target_models()])
        return self._target_logits

    def population_logits_on_release(self) -> Tensor:
        """``[M, n_pop, C]`` logits of the models trained on S on the population (cached)."""
        if self._population_logits is None:
            self._population_logits = torch.stack(
                [model_outputs(m, self.population_images) for m in self.target_models()]
            )
        return self._population_logits

    def shadow_stats(self) -> ShadowStats:
        """Run the shadow condensations and train one model per shadow set (cached).

        Shadows come in complementary pairs over a random half-split of the targets,
        so with an even number of shadows every target is IN for exactly half of them
        (Carlini et al. 2022, §IV). Each shadow also trains on the non-target members.
        """
        if self._shadow is not None:
            return self._shadow
        if not self.has_shadows:
            raise ConfigError("this attack needs shadow condensations: give shadow_fn and shadows >= 1")
        masks, jobs = self._shadow_jobs()
        self._shadow = self._shadow_from(masks, run_concurrently(jobs))
        return self._shadow

    def _shadow_jobs(self) -> tuple[list[Tensor], list[Callable[[], tuple[Tensor, Tensor]]]]:
        """The IN masks over the targets and one job per shadow (condense, train, logits)."""
        n = self.target_images.shape[0]
        gen = torch.Generator().manual_seed(self.seed * 7919 + 3)
        masks = []
        for k in range(self.shadows):
            if k % 2 == 0:
                split = torch.zeros(n, dtype=torch.bool)
                split[torch.randperm(n, generator=gen)[: n // 2]] = True
                masks.append(split)
            else:
                masks.append(~masks[-1])
        shadow_fn = self.shadow_fn
        assert shadow_fn is not None

        def shadow(k: int) -> tuple[Tensor, Tensor]:
            x = torch.cat([self.extra_member_images, self.target_images[masks[k]]])
            y = torch.cat([self.extra_member_labels, self.target_labels[masks[k]]])
            shadow_seed = self.seed * 1000 + 101 + k
            syn_x, syn_y = shadow_fn(x, y, shadow_seed)
            model = self._train(syn_x.detach().float(), syn_y.long(), shadow_seed)
            logger.info("MIA shadow %d/%d done (%d training images)", k + 1, self.shadows, x.shape[0])
            return model_outputs(model, self.target_images), model_outputs(model, self.population_images)

        # the shadow condensations are independent (seeded, fresh DP noise each)
        return masks, [functools.partial(shadow, k) for k in range(self.shadows)]

    @staticmethod
    def _shadow_from(masks: list[Tensor], outs: Sequence[tuple[Tensor, Tensor]]) -> ShadowStats:
        return ShadowStats(torch.stack(masks), torch.stack([t for t, _ in outs]), torch.stack([p for _, p in outs]))


class MIAttack(abc.ABC):
    """Base class of membership-inference attacks on a released condensed set.

    Subclasses implement :meth:`scores`; ``needs_shadows`` declares whether the
    attack needs shadow condensations (it is skipped with a note otherwise).
    """

    name: ClassVar[str]
    needs_shadows: ClassVar[bool] = False
    #: paper reference shown in reports
    reference: ClassVar[str] = ""

    @abc.abstractmethod
    def scores(self, ctx: AttackContext) -> dict[str, Tensor]:
        """Named score vectors ``[n_targets]`` (higher = more likely member)."""
