"""Model registry and factory (opacus' ``accountants/registry.py`` pattern).

A model is one class decorated with ``@register_model("name")``; :func:`create_model` builds
it by name (``-`` and ``_`` are interchangeable), :func:`list_models` lists what exists and
:func:`seeded_model` builds one deterministically without touching the global RNG.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

from securedc.errors import ConfigError
from securedc.models.base import ImageClassifier
from securedc.registry import Registry

__all__ = ["register_model", "create_model", "list_models", "seeded_model"]

_REGISTRY: Registry[ImageClassifier] = Registry("model")

_C = TypeVar("_C", bound=type[ImageClassifier])


def register_model(name: str) -> Callable[[_C], _C]:
    """Class decorator adding an :class:`ImageClassifier` subclass under ``name``.

    Raises:
        ConfigError: the name is already taken (names differing only in ``-``/``_`` or case collide).
    """
    return _REGISTRY.register(Registry.normalize(name))  # type: ignore[return-value]


def list_models() -> list[str]:
    """Sorted names of the registered models.

    Example:
        >>> list_models()
        ['convnet', 'mlp', 'resnet']
    """
    return sorted(_REGISTRY)


def create_model(
    name: str,
    *,
    in_channels: int,
    num_classes: int,
    image_size: Sequence[int],
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    generator: torch.Generator | None = None,
    **kwargs: Any,
) -> ImageClassifier:
    """Build a registered model by name.

    Args:
        name: a name from :func:`list_models` (``-``/``_`` and case ignored).
        in_channels: image channels ``C``.
        num_classes: number of output logits.
        image_size: ``(H, W)``.
        mean: public per-channel normalisation mean (default 0.5).
        std: public per-channel normalisation std (default 0.5).
        generator: if given, the weights are drawn from it (and the global RNG is left
            untouched); if ``None``, PyTorch's default initialisation draws from the global RNG.
        **kwargs: model-specific options (e.g. ``width``, ``depth``, ``norm`` for ``convnet``).

    Returns:
        The model, on CPU, in training mode.

    Raises:
        ConfigError: unknown name or invalid options.

    Example:
        >>> net = create_model("convnet", in_channels=1, num_classes=10, image_size=(8, 8))
        >>> net(torch.rand(2, 1, 8, 8)).shape, net.feature_dim
        (torch.Size([2, 10]), 128)
    """
    cls = _REGISTRY.lookup(name)
    allowed = _options(cls)
    if unknown := sorted(set(kwargs) - set(allowed)):
        raise ConfigError(f"model {cls.name!r} has no option(s) {unknown}; its options are {allowed}")
    build = dict(in_channels=in_channels, num_classes=num_classes, image_size=image_size, mean=mean, std=std)
    if generator is None:
        return cls(**build, **kwargs)
    with torch.random.fork_rng(devices=[]):  # construction's default init must not move the global RNG
        model = cls(**build, **kwargs)
    return model.reset_parameters(generator=generator)


def _options(cls: type[ImageClassifier]) -> list[str]:
    """Model-specific keyword options of ``cls`` (its ``__init__`` minus the common ones)."""
    common = {"self", "in_channels", "num_classes", "image_size", "mean", "std"}
    params = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in params if p.name not in common and p.kind is p.KEYWORD_ONLY]


def seeded_model(name: str, *, seed: int, **kwargs: Any) -> ImageClassifier:
    """:func:`create_model` with weights drawn from ``torch.Generator().manual_seed(seed)``.

    The same seed gives bit-identical weights; the global RNG is untouched.

    Example:
        >>> a = seeded_model("mlp", seed=0, in_channels=1, num_classes=3, image_size=(8, 8))
        >>> b = seeded_model("mlp", seed=0, in_channels=1, num_classes=3, image_size=(8, 8))
        >>> all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
        True
    """
    return create_model(name, generator=torch.Generator().manual_seed(int(seed)), **kwargs)
