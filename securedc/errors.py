"""Exception hierarchy of securedc.

Every error a user can cause is a :class:`SecuredcError`. Input problems are also
``ValueError`` (as in opacus' ``validators/errors.py``) so generic callers can catch them.
The CLI maps :class:`CertificationError` to exit code 1 (report written, nothing exported)
and every other :class:`SecuredcError` to exit code 2 (bad input, nothing written).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "Problem",
    "SecuredcError",
    "ConfigError",
    "DataError",
    "PrivacyError",
    "CertificationError",
]


class SecuredcError(Exception):
    """Base class of every error securedc raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One invalid option, named by its configuration field (``ipc``, ``privacy.epsilon``, ``eval.models``).

    The library says ``ipc must be >= 1 (got 0)``; the CLI shows the same ``text`` after the
    option's flag (``--ipc must be >= 1 (got 0)``).

    Example:
        >>> str(Problem("privacy.epsilon", "must be > 0 (got -1)"))
        'privacy.epsilon must be > 0 (got -1)'
    """

    field: str
    text: str

    def __str__(self) -> str:
        return f"{self.field} {self.text}"


class ConfigError(SecuredcError, ValueError):
    """An option or argument is outside its allowed range or inconsistent with another.

    Args:
        message: the whole message; default: the ``problems`` joined with ``"; "``.
        problems: the invalid fields, each a :class:`Problem` (or a plain sentence).

    Attributes:
        problems: as given (empty when raised with a message only).
    """

    def __init__(self, message: str = "", *, problems: Sequence[Problem | str] = ()) -> None:
        self.problems = tuple(problems)
        super().__init__(message or "; ".join(str(p) for p in self.problems))


class DataError(SecuredcError, ValueError):
    """Data is missing, unreadable, corrupt or of the wrong shape/range."""


class PrivacyError(SecuredcError, ValueError):
    """A request would break the differential-privacy rules (see docs/privacy.md)."""


class CertificationError(SecuredcError):
    """The audit refused the release; the report is written, nothing is exported."""

    def __init__(self, message: str, *, report_dir: str | None = None) -> None:
        super().__init__(message)
        self.report_dir = report_dir
