"""Objective terms: ABC, per-step context and registry.

Each term of the multi-term objective (distribution discrepancy, DP gradient
matching, adversarial discrepancy) maps every sampled real example to ONE
per-sample vector (:meth:`Term.real_vectors`); the mechanism concatenates the
terms' vectors, clips each part to the term's own bound ``clip`` and releases
per-class statistics, which :meth:`Term.loss` compares with the synthetic set.
A new term is one file with ``@register_term`` and a ``from_config`` classmethod.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from securedc.batching import chunked
from securedc.errors import ConfigError
from securedc.registry import Registry

if TYPE_CHECKING:
    from securedc.config import CondenseConfig

__all__ = ["StepContext", "Term", "register_term", "create_term", "list_terms", "build_terms"]

_REGISTRY: Registry["Term"] = Registry("term")


@dataclass
class StepContext:
    """Everything a term may use in one step (no real data here).

    Attributes:
        step: iteration index t.
        network: the step's network (random, or trained on S only), eval mode,
            parameters frozen; ``embed`` gives features, ``forward`` logits.
        generator: the step's generator (all randomness of the step comes from it).
        num_classes: C.
        private: whether the run is differentially private.
        synthetic_images: current synthetic images (detached), for terms that
            post-process S (e.g. training an attack network on S).
        synthetic_labels: their labels.
        model_factory: builds a fresh seeded network like ``network`` (``seed -> module``).
        real_precision: ``"fp32"`` or ``"bf16"``: precision a term may use for its real-side
            *network forward* (see :mod:`securedc.batching`); terms that need input or
            per-sample weight gradients (PGD, Opacus) ignore it and stay fp32.
        release: index of the statistics-bank release whose statistic this step uses (its
            network, generator and DSA parameters are that release's); with one release per
            step it equals ``step``. ``prepare`` must be a deterministic function of the
            context (plus term state keyed by ``release``), since phase 2 re-creates old releases.
        noise_std: DP only: ``[C]`` noise std of one coordinate of the release's class statistics
            (σ·C / (q·N̂_c), from public or released quantities); ``None`` for exact statistics.
        chunk: images per network pass on the synthetic side (:func:`~securedc.batching.chunked`;
            the run's ``real_chunk``): only float rounding depends on it.
        subspace_images: DP only: ``[n, *image_shape]`` images already released by the run (its DP
            sub-class centres or class prototypes, :meth:`~securedc.bank.StatisticsBank.released_images`)
            whose features span a release's subspace (:mod:`securedc.subspace`); ``None`` otherwise.
    """

    step: int
    network: nn.Module
    generator: torch.Generator
    num_classes: int
    private: bool
    synthetic_images: Tensor
    synthetic_labels: Tensor
    model_factory: Callable[[int], nn.Module]
    real_precision: str = "fp32"
    release: int = 0
    noise_std: Tensor | None = None
    chunk: int = 0
    subspace_images: Tensor | None = None

    def embed(self, network: nn.Module, x: Tensor) -> Tensor:
        """``network.embed(x)`` in chunks of :attr:`chunk` (differentiable in ``x``)."""
        return chunked(network.embed, x, self.chunk)


def register_term(name: str) -> Callable[[type], type]:
    """Class decorator registering a :class:`Term` (order of registration = order in the vector)."""

    return _REGISTRY.register(name)


def create_term(name: str, **kwargs: Any) -> "Term":
    """Instantiate a registered term by name.

    Raises:
        ConfigError: unknown name.
    """
    return _REGISTRY.create(name, **kwargs)


def list_terms() -> list[str]:
    return list(_REGISTRY)


def build_terms(config: "CondenseConfig") -> list["Term"]:
    """The active terms of a configuration, in registration order."""
    terms = []
    for cls in _REGISTRY.values():
        term = cls.from_config(config)
        if term is not None:
            terms.append(term)
    if not terms:
        raise ConfigError("no active objective term: give --dist-weight, --grad-weight or --adv-eps a positive value")
    return terms


class Term(abc.ABC):
    """One term of the condensation objective.

    Args:
        weight: multiplier of the term's loss.
        clip: per-sample L2 bound C_k of this term's real vector in DP mode.
    """

    name: ClassVar[str]
    private_ok: ClassVar[bool] = True

    def __init__(self, *, weight: float = 1.0, clip: float = 1.0) -> None:
        if weight < 0 or clip <= 0:
            raise ConfigError(f"term weight must be >= 0 and clip > 0 (got {weight}, {clip})")
        self.weight = float(weight)
        self.clip = float(clip)

    @classmethod
    @abc.abstractmethod
    def from_config(cls, config: "CondenseConfig") -> "Term | None":
        """The term for ``config``, or ``None`` when the config disables it."""

    def prepare(self, ctx: StepContext) -> None:
        """Draw the step's randomness (called once per step, before any vectors)."""

    @abc.abstractmethod
    def real_vectors(self, ctx: StepContext, x: Tensor, y: Tensor) -> Tensor:
        """One row per real example ``[n, d]`` (detached); ``x`` is already augmented."""

    def reducer(self) -> Callable[[Tensor, Tensor, int], Tensor] | None:
        """Exact (non-private) reduction of the rows; ``None`` = class mean."""
        return None

    @abc.abstractmethod
    def loss(self, ctx: StepContext, real_stat: Tensor, syn_x: Tensor, syn_y: Tensor) -> Tensor:
        """Unweighted loss, differentiable in ``syn_x`` (already augmented)."""

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for the manifest."""
        return {"name": self.name, "weight": self.weight, "clip": self.clip}
