"""Audit ABC, result type and registry (torchattacks-style template method).

An audit attacks a release and returns an :class:`AuditResult`; ``certify`` turns
results into pass/fail gates, ``report`` renders them. A new audit is one file with one
class decorated ``@register_audit("name")`` plus one import line in ``audits/__init__.py``
(the registry line: import order is the order :func:`~securedc.audits.pipeline.run_audits`
runs them in); ``tests/test_audit_registry.py`` runs every registered audit.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from securedc.jsonsafe import json_ready
from securedc.registry import Registry

if TYPE_CHECKING:
    from securedc.audits.context import AuditContext

__all__ = ["AuditResult", "Audit", "register_audit", "create_audit", "list_audits", "registered_audits",
           "json_ready"]

_REGISTRY: Registry["Audit"] = Registry("audit")


@dataclass(frozen=True)
class AuditResult:
    """Outcome of one audit.

    Attributes:
        name: registered audit name.
        metrics: headline numbers (flat, float) — what gates and tables use.
        passed: the audit's own verdict (``None`` = informational; gates live in certify).
        details: JSON-ready extras (curves, per-attack tables, sanity checks).
        seconds: wall time.
        notes: plain-language caveats shown in the report.
    """

    name: str
    metrics: dict[str, float]
    passed: bool | None = None
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return json_ready(asdict(self))


def register_audit(name: str) -> Callable[[type], type]:
    """Class decorator registering an :class:`Audit`."""

    return _REGISTRY.register(name)


def create_audit(name: str, **kwargs: Any) -> "Audit":
    """Instantiate a registered audit by name (ConfigError lists the choices)."""
    return _REGISTRY.create(name, **kwargs)


def list_audits() -> list[str]:
    return sorted(_REGISTRY)


def registered_audits() -> list[str]:
    """The registered audit names in the order the pipeline runs them (registration order)."""
    return list(_REGISTRY)


class Audit(abc.ABC):
    """Base class: subclasses implement :meth:`measure` and declare ``higher_is_better``.

    The pipeline creates each registered audit with the caller's keyword options for it
    (``run_audits(..., options={"utility": {...}})``), skips it when :meth:`applies` is false,
    announces :meth:`describe` and records :meth:`measure`'s result under its name.
    """

    name: ClassVar[str]
    #: whether larger headline metrics mean a better (safer / more useful) release
    higher_is_better: ClassVar[bool] = True

    def __init__(self, **options: Any) -> None:
        """Keep ``options``: keyword arguments the audit passes on to its function unchanged."""
        self.options = options

    def applies(self, ctx: "AuditContext") -> bool:
        """Whether this audit runs on this release (e.g. robustness only for an adversarial release)."""
        return True

    def describe(self, ctx: "AuditContext") -> str:
        """One line saying what is about to run (progress messages)."""
        return self.name

    @abc.abstractmethod
    def measure(self, ctx: "AuditContext") -> AuditResult:
        """Attack / measure the release in ``ctx`` and return an :class:`AuditResult` named :attr:`name`."""
