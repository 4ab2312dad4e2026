"""Registry of dataset sources: ``load_dataset(name)`` looks the name up here.

A source is one loader function registered with :func:`register_source`. Plain sources are
called by name (``"digits"``, ``"cifar10"``); sources with an ``argument`` are called as
``PREFIX:ARG`` (``"npz:data.npz"``, ``"idx:DIR"``, ``"folder:DIR"``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from securedc.data.bundle import DatasetBundle
from securedc.errors import ConfigError
from securedc.registry import Registry

__all__ = ["DEFAULT_ROOT", "SourceRequest", "Source", "register_source", "load_dataset", "list_datasets"]

DEFAULT_ROOT = Path("~/.cache/securedc/data")
"""Where torchvision datasets are looked for / downloaded when no ``root`` is given."""


@dataclass(frozen=True)
class SourceRequest:
    """What a loader receives.

    Attributes:
        name: the full name as given (``"npz:x.npz"``), normalised to lower-case prefix.
        argument: the part after ``PREFIX:`` (``None`` for plain sources).
        root: user data root, expanded (``None`` if not given).
        download: whether downloading is allowed.
        seed: seed for any split the source has to make.
    """

    name: str
    argument: str | None
    root: Path | None
    download: bool
    seed: int


Loader = Callable[[SourceRequest], DatasetBundle]


@dataclass(frozen=True)
class Source:
    """A registered source: its name, loader, one-line description and argument placeholder."""

    name: str
    loader: Loader
    description: str
    argument: str | None = None

    @property
    def display(self) -> str:
        return f"{self.name}:{self.argument}" if self.argument else self.name


_SOURCES: Registry[Any] = Registry("dataset source")  # values are Source records, not classes


def register_source(name: str, *, description: str, argument: str | None = None) -> Callable[[Loader], Loader]:
    """Decorator registering ``loader`` under ``name`` (refuses a taken name).

    Args:
        name: source name (lower-case, ``-`` separated).
        description: one line shown by ``securedc datasets``.
        argument: placeholder of the argument (``"DIR"``) for ``name:ARG`` sources.

    Raises:
        ConfigError: ``name`` is already registered.
    """
    key = Registry.normalize(name)

    def decorator(loader: Loader) -> Loader:
        _SOURCES.add(key, Source(key, loader, description, argument))
        return loader

    return decorator


def _choices() -> str:
    return ", ".join(name for name, _ in list_datasets())


def load_dataset(
    name: str = "digits",
    *,
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
    seed: int = 0,
) -> DatasetBundle:
    """Load a dataset by name.

    Args:
        name: a registered source (see :func:`list_datasets`): ``"digits"``, ``"mnist"``,
            ``"fashion-mnist"``, ``"cifar10"``, ``"cifar100"``, ``"svhn"``, or ``"idx:DIR"``,
            ``"npz:FILE"``, ``"folder:DIR"``. Case and ``_``/``-`` are ignored in the name part.
        root: data root for torchvision datasets (default ``~/.cache/securedc/data``).
        download: allow torchvision to download missing files.
        seed: seed of the per-example train/test split for sources without a test split (npz, folder).

    Returns:
        A validated :class:`DatasetBundle`.

    Raises:
        ConfigError: unknown name (the message lists the choices) or missing argument.
        DataError: files missing, corrupt or invalid.

    Example:
        >>> b = load_dataset("digits")
        >>> b.image_shape, b.num_classes, len(b.train_labels), len(b.test_labels)
        ((1, 8, 8), 10, 1347, 450)
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"dataset name must be a non-empty string; choose one of {_choices()}")
    prefix, sep, arg = name.strip().partition(":")
    key = Registry.normalize(prefix)
    source = _SOURCES.get(key)
    if source is None:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {_choices()}")
    if source.argument and not (sep and arg):
        raise ConfigError(f"dataset {name!r} needs an argument: use {source.display}")
    if not source.argument and sep:
        raise ConfigError(f"dataset {key!r} takes no argument (got {name!r}); choose one of {_choices()}")
    request = SourceRequest(
        name=f"{key}:{arg}" if source.argument else key,
        argument=arg if source.argument else None,
        root=Path(root).expanduser() if root is not None else None,
        download=bool(download),
        seed=int(seed),
    )
    return source.loader(request)


def list_datasets() -> list[tuple[str, str]]:
    """``(name or PREFIX:ARG, one-line description)`` of every registered source.

    Example:
        >>> ("digits" in [n for n, _ in list_datasets()])
        True
    """
    ordered = sorted(_SOURCES.values(), key=lambda s: s.argument is not None)  # stable: plain names first
    return [(s.display, s.description) for s in ordered]
