"""What a long library operation tells its caller while it runs (:func:`securedc.release`, :func:`securedc.audit_file`).

The library never prints: it calls the caller's ``progress`` callback with a :class:`Notice`
(a phase starts or ends, a plain-language line) or a
:class:`~securedc.condenser.ProgressEvent` (one optimisation step). The CLI renders them with
rich; a script may log them or ignore them (``progress=None`` logs notices at INFO).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Notice", "NoticeKind", "Progress", "notifier"]

logger = logging.getLogger("securedc")

NoticeKind = Literal["info", "warning", "condense", "condensed", "audit", "status", "audited"]


@dataclass(frozen=True)
class Notice:
    """One message of a running operation.

    Attributes:
        kind: ``info`` / ``warning`` (a line to show), ``condense`` (the optimisation loop starts;
            ``total`` steps follow as ``ProgressEvent``), ``condensed`` (it ended), ``audit`` (the
            audit or evaluation starts), ``status`` (what it does now), ``audited`` (it ended).
        text: plain text (no markup).
        label: a short heading of an ``info`` line (``"DP"``, ``"not private"``, ...), or ``""``.
        total: steps of a ``condense`` phase.

    Example:
        >>> Notice("info", "exact statistics of the real data", label="not private").label
        'not private'
    """

    kind: NoticeKind
    text: str = ""
    label: str = ""
    total: int | None = None


#: The callback type: called with a :class:`Notice` or a ``ProgressEvent``.
Progress = Callable[[Any], None]


def notifier(progress: Progress | None) -> Progress:
    """The function an operation calls to emit notices: ``progress`` itself, or INFO logging without one."""
    if progress is not None:
        return progress

    def log(notice: Any) -> None:  # per-step ProgressEvents are not logged
        if isinstance(notice, Notice) and notice.text:
            logger.info("%s%s", f"{notice.label}: " if notice.label else "", notice.text)

    return log
