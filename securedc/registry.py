"""One name → class registry, shared by discrepancies, terms, models, dataset sources, audits and MIA attacks.

opacus' ``accountants/registry.py`` pattern (a dict, a decorator that refuses a taken
name, a factory whose error lists the choices), written once. The registry *is* a
dict (insertion-ordered), so tests can inspect it or ``monkeypatch.setitem`` it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from securedc.errors import ConfigError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(dict[str, type[T]], Generic[T]):
    """Name → class mapping with a registering decorator and a factory.

    Args:
        kind: what is registered, for error messages (e.g. ``"discrepancy"``).

    Example:
        >>> reg: Registry[object] = Registry("widget")
        >>> @reg.register("big-one")
        ... class Big: ...
        >>> type(reg.create("BIG_ONE")).__name__, Big.name
        ('Big', 'big-one')
        >>> reg.create("small")
        Traceback (most recent call last):
        ...
        securedc.errors.ConfigError: unknown widget 'small'; choose one of ['big-one']
    """

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    @staticmethod
    def normalize(name: str) -> str:
        """The lookup key of ``name``: surrounding spaces, case and ``_`` vs ``-`` do not matter."""
        return name.strip().replace("_", "-").lower()

    def add(self, name: str, value: Any) -> Any:
        """Register ``value`` under ``name`` (as given); a taken name is a ConfigError."""
        if name in self:
            raise ConfigError(f"{self.kind} {name!r} is registered twice")
        self[name] = value
        return value

    def register(self, name: str) -> Callable[[type], type]:
        """Class decorator: sets ``cls.name`` and registers it; a taken name is a ConfigError."""

        def decorator(cls: type) -> type:
            self.add(name, cls)
            cls.name = name  # type: ignore[attr-defined]
            return cls

        return decorator

    def copy(self) -> "Registry[T]":
        """A shallow copy that is still a :class:`Registry` (e.g. for ``monkeypatch.setattr``)."""
        out: Registry[T] = Registry(self.kind)
        out.update(self)
        return out

    def lookup(self, name: str) -> type[T]:
        cls = self.get(self.normalize(name))
        if cls is None:
            raise ConfigError(f"unknown {self.kind} {name!r}; choose one of {sorted(self)}")
        return cls

    def create(self, name: str, **kwargs: Any) -> T:
        """Instantiate the class registered under ``name`` (``_``/``-`` and case ignored)."""
        return self.lookup(name)(**kwargs)
