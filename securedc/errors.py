"""Exception hierarchy of securedc.

Every error a user can cause is a :class:`SecuredcError`. Input problems are also
``ValueError`` (as in opacus' ``validators/errors.py``) so generic callers can catch them.
The CLI maps :class:`CertificationError` to exit code 1 (report written, nothing exported)
and every other :class:`SecuredcError` to exit code 2 (bad input, nothing written).
"""

from __future__ import annotations

__all__ = [
    "SecuredcError",
    "ConfigError",
    "DataError",
    "PrivacyError",
    "CertificationError",
]


class SecuredcError(Exception):
    """Base class of every error securedc raises on purpose."""


class ConfigError(SecuredcError, ValueError):
    """An option or argument is outside its allowed range or inconsistent with another."""


class DataError(SecuredcError, ValueError):
    """Data is missing, unreadable, corrupt or of the wrong shape/range."""


class PrivacyError(SecuredcError, ValueError):
    """A request would break the differential-privacy rules (see docs/privacy.md)."""


class CertificationError(SecuredcError):
    """The audit refused the release; the report is written, nothing is exported."""

    def __init__(self, message: str, *, report_dir: str | None = None) -> None:
        super().__init__(message)
        self.report_dir = report_dir
