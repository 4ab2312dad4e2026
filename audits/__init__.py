"""Audits that attack a condensed release before export (importable as ``securedc.audits``)."""

from securedc.audits.base import Audit, AuditResult, create_audit, json_ready, list_audits, register_audit

__all__ = ["Audit", "AuditResult", "create_audit", "list_audits", "register_audit", "json_ready"]
