"""Audits that attack a condensed release before export (importable as ``securedc.audits``)."""

from securedc.audits.base import Audit, AuditResult, create_audit, json_ready, list_audits, register_audit
from securedc.audits.canary import epsilon_lower_bound, run_canary_audit
from securedc.audits.mia import run_mia

__all__ = ["Audit", "AuditResult", "create_audit", "list_audits", "register_audit", "json_ready",
           "run_mia", "run_canary_audit", "epsilon_lower_bound"]
