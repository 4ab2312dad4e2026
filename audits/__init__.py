"""Audits that attack a condensed release before export (importable as ``securedc.audits``)."""

from securedc.audits.base import (
    Audit,
    AuditResult,
    create_audit,
    json_ready,
    list_audits,
    register_audit,
    registered_audits,
)

# The audit registry: one line per audit, in the order run_audits runs them (each file registers its class).
from securedc.audits import utility_audit  # noqa: E402,F401,I001  (registers "utility")
from securedc.audits.mia import audit as _membership_audit  # noqa: E402,F401  (registers "mia")
from securedc.audits import canary  # noqa: E402,F401  (registers "canary")
from securedc.audits import robustness  # noqa: E402,F401  (registers "robustness")

from securedc.audits.canary import epsilon_lower_bound, run_canary_audit  # noqa: E402
from securedc.audits.context import AuditConfig, AuditContext  # noqa: E402
from securedc.audits.mia import run_mia  # noqa: E402

__all__ = ["Audit", "AuditResult", "AuditConfig", "AuditContext", "create_audit", "list_audits",
           "registered_audits", "register_audit", "json_ready", "run_mia", "run_canary_audit", "epsilon_lower_bound"]
