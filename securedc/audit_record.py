"""Audit a release, write its report, and say what the release and the owner record keep of it.

Shared by :func:`securedc.release` (a fresh condensation) and :func:`securedc.audit_file` (a
saved one). The release's manifest gets the verdict and the public policy only; gates, reasons,
headline numbers and the member split are computed from the private data and go to the owner
record ``NAME.owner.json`` and the owner-only report (docs/audits.md, docs/privacy.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

from securedc.audits.certify import Certification, Policy
from securedc.audits.pipeline import AuditConfig, AuditOutcome, headline, run_audits
from securedc.config import CondenseConfig, EvalConfig
from securedc.data import DatasetBundle
from securedc.notices import Notice, Progress, notifier

__all__ = ["OWNER_ONLY_MANIFEST_KEYS", "audit_and_report", "legacy_owner_record", "owner_audit_section",
           "release_audit_section", "report_dir_for"]

#: Manifest keys computed from the private data that older releases carried; re-certification moves them out.
OWNER_ONLY_MANIFEST_KEYS = ("audit", "evaluation", "cache", "dataset.fingerprint", "dataset.num_train",
                            "dataset.num_test", "condensation.seconds")


def report_dir_for(target: Path) -> Path:
    """The default report directory of release ``NAME.safetensors``: ``NAME.report`` beside it.

    Example:
        >>> report_dir_for(Path("out/s.safetensors")).as_posix()
        'out/s.report'
    """
    return target.parent / f"{target.name.removesuffix('.safetensors')}.report"


def legacy_owner_record(manifest: dict[str, Any]) -> dict[str, Any]:
    """An owner record for a release written before owner files existed (its private values moved out)."""
    ds = manifest.get("dataset") or {}
    record: dict[str, Any] = {"dataset": {k: ds[k] for k in ("fingerprint", "num_train", "num_test") if k in ds}}
    seconds = (manifest.get("condensation") or {}).get("seconds")
    if seconds is not None:
        record["condensation"] = {"seconds": seconds}
    for key in ("evaluation", "cache"):
        if manifest.get(key):
            record[key] = manifest[key]
    return record


def release_audit_section(certification: Certification, *, forced: bool = False) -> dict[str, Any]:
    """The release's ``audit`` section: the verdict and the (public) policy, no measured number."""
    return {"ran": True, "certified": certification.certified, "forced": forced,
            "policy": certification.to_dict()["policy"]}


def owner_audit_section(outcome: AuditOutcome, split: dict[str, Any], report_html: Path, *,
                        forced: bool = False) -> dict[str, Any]:
    """The owner record's ``audit`` section: gates, reasons and headline numbers, the member split."""
    cert = outcome.certification
    return {
        "ran": True,
        "certified": cert.certified,
        "forced": forced,
        "reasons": cert.reasons,
        "gates": [g.to_dict() for g in cert.gates],
        "policy": cert.to_dict()["policy"],
        "headline": headline(outcome),
        "split": split,
        "report": str(report_html),
    }


def audit_and_report(
    images: Tensor,
    labels: Tensor,
    *,
    manifest: dict[str, Any],
    bundle: DatasetBundle,
    members: tuple[Tensor, Tensor],
    nonmembers: tuple[Tensor, Tensor],
    config: CondenseConfig,
    split: dict[str, Any],
    eval_config: EvalConfig,
    audit: AuditConfig,
    policy: Policy,
    report_dir: Path,
    epsilon_history: Any,
    owner: dict[str, Any],
    progress: Progress | None = None,
    prototypes: Tensor | None = None,
    soft_labels: Tensor | None = None,
) -> tuple[AuditOutcome, Path]:
    """Run every audit (accuracy on ``bundle``'s test set) and write ``report_dir`` (owner-only).

    Args:
        images, labels: the release S.
        manifest: the release's manifest as shown in the report.
        bundle: the data (test split, classes, normalisation).
        members, nonmembers: the membership split (:func:`~securedc.audits.pipeline.split_members`).
        config: the release's configuration (shadow and canary runs reuse it).
        split: the split record kept in the owner record.
        eval_config, audit, policy: evaluation protocol, audit effort, certification thresholds.
        report_dir: where ``report.html`` and ``report.json`` go.
        epsilon_history: (step, ε) pairs for the report's privacy plot.
        owner: the owner record shown in the report.
        progress: receives :class:`~securedc.notices.Notice` s.
        prototypes: the release's own DP class prototypes (right after condensing; ``None`` on a
            re-audit): the paired DP baseline when they carry the whole budget (docs/audits.md).
        soft_labels: the release's soft labels (models trained on S use them), or ``None``.

    Returns:
        ``(AuditOutcome, path of report.html)``.
    """
    from securedc.audits.report import write_report
    from securedc.export import tensor_digest

    say = notifier(progress)
    say(Notice("audit", "auditing the release"))
    try:
        outcome = run_audits(
            images, labels, members=members, nonmembers=nonmembers, test=(bundle.test_images, bundle.test_labels),
            num_classes=bundle.num_classes, mean=bundle.mean, std=bundle.std, config=config, eval_config=eval_config,
            audit=audit, policy=policy, progress=lambda msg: say(Notice("status", f"auditing: {msg}")),
            prototypes=prototypes, privacy=manifest.get("privacy"), soft_labels=soft_labels,
        )
    finally:
        say(Notice("audited"))
    outcome.split = split
    shown = dict(manifest, tensor_sha256=tensor_digest(images, labels), num_images=int(labels.shape[0]))
    html = write_report(report_dir, manifest=shown, results=outcome.results, certification=outcome.certification,
                        images=images, labels=labels, classes=bundle.classes, epsilon_history=epsilon_history,
                        owner=owner)
    return outcome, html
