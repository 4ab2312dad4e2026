"""Audit ABC, result type and registry (torchattacks-style template method).

An audit attacks a release and returns an :class:`AuditResult`; ``certify`` turns
results into pass/fail gates, ``report`` renders them. A new audit is one class
with ``@register_audit("name")``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from securedc.jsonsafe import json_ready
from securedc.registry import Registry

__all__ = ["AuditResult", "Audit", "register_audit", "create_audit", "list_audits", "json_ready"]

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


class Audit(abc.ABC):
    """Base class: subclasses implement :meth:`run` and declare ``higher_is_better``."""

    name: ClassVar[str]
    #: whether larger headline metrics mean a better (safer / more useful) release
    higher_is_better: ClassVar[bool] = True

    @abc.abstractmethod
    def run(self, *args: Any, **kwargs: Any) -> AuditResult:
        """Attack / measure the release and return an :class:`AuditResult`."""
