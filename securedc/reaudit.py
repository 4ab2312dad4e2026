"""Audit a saved release again (``securedc audit FILE``), optionally re-certifying it in place.

Members and non-members: an audited :func:`securedc.release` records its split (data fingerprint,
holdout fraction, seed, members hash) in the owner record ``NAME.owner.json``, and the split is
recreated exactly. Without that record the audit cannot know which examples the condenser used:
it assumes the whole training set (members) and uses half of the test set as non-members and the
other half for accuracy — the *no-recorded-split rule* (docs/audits.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from securedc.audits.certify import Policy
from securedc.audits.pipeline import AuditConfig, AuditOutcome
from securedc.config import CondenseConfig, EvalConfig
from securedc.data import DatasetBundle
from securedc.errors import CertificationError, DataError
from securedc.notices import Notice, Progress, notifier

__all__ = ["FileAudit", "audit_file", "membership_split"]


@dataclass(frozen=True, kw_only=True)
class FileAudit:
    """The outcome of :func:`audit_file`.

    Attributes:
        path: the audited release.
        audit: results and certification.
        report: ``report.html`` of the new (owner-only) report.
        split: the member split used (recreated, or the no-recorded-split rule's).
        split_recreated: the recorded split was found and recreated exactly.
        owner_found: the release's owner record was present.
        recertified: the verdict was written into the file's manifest and owner record.
    """

    path: Path
    audit: AuditOutcome
    report: Path
    split: dict[str, Any]
    split_recreated: bool
    owner_found: bool
    recertified: bool = False

    @property
    def certified(self) -> bool:
        return self.audit.certification.certified

    @property
    def exit_code(self) -> int:
        """The CLI's exit status: 0 certified, 1 not certified (the report is written either way)."""
        return 0 if self.certified else 1

    def check(self) -> "FileAudit":
        """Raise :class:`CertificationError` when the file is not certified; else return ``self``."""
        if not self.certified:
            failed = ", ".join(g.name for g in self.audit.certification.failed)
            raise CertificationError(f"{self.path} is not certified: failed gate(s) {failed}. Report: {self.report}",
                                     report_dir=str(self.report.parent))
        return self


def membership_split(
    bundle: DatasetBundle, recorded: dict[str, Any] | None, *, seed: int, where: Path, say: Progress
) -> tuple[DatasetBundle, tuple[Tensor, Tensor], tuple[Tensor, Tensor], dict[str, Any], bool]:
    """Members and non-members of a saved release: its recorded split, or the no-recorded-split rule.

    Returns:
        ``(bundle for accuracy, members, non-members, split record, recreated)``.

    Raises:
        DataError: the recorded split cannot be recreated (other data or securedc version).
    """
    from securedc.audits.pipeline import split_indices, split_record
    from securedc.data.split import SPLIT_METHOD

    same_data = bool(recorded) and recorded.get("dataset_fingerprint") == bundle.fingerprint
    recorded = recorded or {}
    if same_data and recorded.get("method") != SPLIT_METHOD:
        # securedc < 2026-12-08 split by per-class permutations (not stable under one example more or less)
        say(Notice("warning", "the recorded member split was made by an older securedc and is not recreated"))
    elif same_data:
        m, n = split_indices(bundle.train_images, bundle.train_labels, holdout_fraction=recorded["holdout_fraction"],
                             seed=recorded["seed"])
        check = split_record(m, n, holdout_fraction=recorded["holdout_fraction"], seed=recorded["seed"],
                             fingerprint=bundle.fingerprint)
        if check["members_sha256"] != recorded.get("members_sha256"):
            raise DataError(f"{where}: recreated member split does not match the recorded one "
                            "(different securedc version or data); cannot audit membership reliably")
        members, nonmembers = (bundle.train_images[m], bundle.train_labels[m]), (bundle.train_images[n],
                                                                                bundle.train_labels[n])
        say(Notice("info", f"members/non-members: recreated the recorded split ({recorded['num_members']} / "
                           f"{recorded['num_nonmembers']})"))
        return bundle, members, nonmembers, recorded, True
    if recorded and not same_data:
        say(Notice("warning", "the file's dataset fingerprint differs from this dataset's"))
    # unknown split: every training example may have been used -> members = the whole training set,
    # non-members = half of the test set, accuracy on the other half (documented limitation)
    t_idx, n_idx = split_indices(bundle.test_images, bundle.test_labels, holdout_fraction=0.5, seed=seed)
    accuracy_bundle = dataclasses.replace(bundle, test_images=bundle.test_images[t_idx],
                                          test_labels=bundle.test_labels[t_idx], fingerprint=bundle.fingerprint)
    split = {"holdout_fraction": None, "seed": seed, "dataset_fingerprint": bundle.fingerprint,
             "num_members": int(bundle.train_labels.shape[0]), "num_nonmembers": int(n_idx.numel()),
             "members": "whole training set",
             "nonmembers": "half of the test set (split unknown: file not made by an audited securedc condense)"}
    say(Notice("warning", "members = whole training set, non-members = half the test set", label="no recorded split"))
    members = (bundle.train_images, bundle.train_labels)
    return accuracy_bundle, members, (bundle.test_images[n_idx], bundle.test_labels[n_idx]), split, False


def _recertify(path: Path, manifest: dict[str, Any], owner: dict[str, Any] | None, outcome: AuditOutcome,
               split: dict[str, Any], html: Path) -> None:
    """Owner record first: the release on disk never names a verdict its owner record lacks."""
    from securedc.audit_record import (OWNER_ONLY_MANIFEST_KEYS, legacy_owner_record, owner_audit_section,
                                       release_audit_section)
    from securedc.export import update_manifest
    from securedc.owner import write_owner_record

    record = dict(owner) if owner is not None else legacy_owner_record(manifest)
    record["audit"] = owner_audit_section(outcome, split, html)
    if "utility" in outcome.results:  # the re-audit's models are the new evaluation (as in a release)
        from securedc.audits.utility import evaluation_section

        record["evaluation"] = evaluation_section(outcome.results["utility"])
    write_owner_record(path, record, tensor_sha256=manifest["tensor_sha256"])
    update_manifest(path, {"audit": release_audit_section(outcome.certification)}, drop=OWNER_ONLY_MANIFEST_KEYS)


def audit_file(
    path: str | Path,
    *,
    data: DatasetBundle | str | None = None,
    root: str | Path | None = None,
    audit: AuditConfig = AuditConfig(),
    policy: Policy | str | Path | None = None,
    eval_config: EvalConfig = EvalConfig(),
    report_dir: str | Path | None = None,
    recertify: bool = False,
    progress: Progress | None = None,
) -> FileAudit:
    """Audit the saved release ``path`` and write a new report; re-certify it with ``recertify``.

    Args:
        path: a ``.safetensors`` release.
        data: the real data it was condensed from (default: the manifest's dataset name).
        root: where torchvision datasets live.
        audit, policy, eval_config: audit effort, certification thresholds (a Policy, a TOML file or
            ``None``), evaluation protocol (as :func:`securedc.release`).
        report_dir: report directory (default ``NAME.report`` beside the file).
        recertify: write the new verdict into the file's manifest and the numbers into its owner record.
        progress: receives :class:`~securedc.notices.Notice` s.

    Returns:
        :class:`FileAudit` (:meth:`FileAudit.check` raises when not certified).

    Raises:
        ConfigError: invalid options. DataError: unreadable file, data of another shape, or a
            recorded split that cannot be recreated.
    """
    from securedc.api import as_bundle
    from securedc.audit_record import audit_and_report, report_dir_for
    from securedc.audits.report import epsilon_history_from_privacy
    from securedc.export import check_compatible, dataset_of, load_condensed
    from securedc.io import ensure_writable_dir
    from securedc.owner import owner_path, read_owner_record
    from securedc.release import resolve_policy

    eval_config, policy, audit = eval_config.validate(), resolve_policy(policy), audit.validate()
    say = notifier(progress)
    path = Path(path)
    report_dir = ensure_writable_dir(Path(report_dir) if report_dir is not None else report_dir_for(path))
    cs = load_condensed(path)
    m = cs.manifest
    dataset = dataset_of(cs, data, path)
    owner = read_owner_record(path, tensor_sha256=m["tensor_sha256"], missing_ok=True)
    if owner is None:
        say(Notice("warning", f"({owner_path(path)})", label="owner file not found"))
    bundle = as_bundle(dataset, root=str(root) if root is not None else None)
    check_compatible(cs, bundle, path)
    config = CondenseConfig.from_dict(m["config"]) if "config" in m else CondenseConfig(ipc=int(m.get("ipc", 1)))
    # the owner record holds the split; files written before it existed kept it in the manifest
    recorded = ((owner or {}).get("audit") or {}).get("split") or (m.get("audit") or {}).get("split")
    accuracy, members, nonmembers, split, recreated = membership_split(bundle, recorded, seed=config.seed,
                                                                       where=path, say=say)
    outcome, html = audit_and_report(
        cs.images, cs.labels, manifest=m, bundle=accuracy, members=members, nonmembers=nonmembers, config=config,
        split=split, eval_config=eval_config, audit=audit, policy=policy,
        report_dir=report_dir,
        epsilon_history=epsilon_history_from_privacy(m.get("privacy") or {}),
        owner={**(owner or {}), "audit": {"split": split}}, progress=say, soft_labels=cs.soft_labels,
    )
    if recertify:
        _recertify(path, m, owner, outcome, split, html)
    return FileAudit(path=path, audit=outcome, report=html, split=split, split_recreated=recreated,
                     owner_found=owner is not None, recertified=recertify)
