"""The audited release: condense → evaluate → audit → certify → export or refuse.

:func:`release` is what ``securedc condense`` runs; a script gets the same files by calling it
(docs/audits.md, "Order of an audited run"):

1. with the audit, an expected ``audit.holdout_fraction`` of the training data (each example by a
   keyed hash of its own bytes) is reserved as non-members **before** condensing
   (:func:`~securedc.audits.pipeline.split_members`);
2. the members are condensed (:func:`~securedc.condensation.run_condensation`: in this process,
   from a statistics bank, or across ``torchrun`` ranks);
3. the release is audited and certified, and the owner-only report ``NAME.report/`` written;
4. the release ``NAME.safetensors`` and its owner record ``NAME.owner.json`` are written
   atomically — unless the audit refused it and ``force`` is false: then only the report exists.

Without the audit, fresh models are trained on the result (``evaluate``) and their accuracy goes
to the owner record.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor
from torch.utils.data import Dataset

from securedc.audits.certify import Policy, load_policy
from securedc.audits.pipeline import AuditConfig, AuditOutcome
from securedc.condensation import Condensation, check_single_process_bank, run_condensation
from securedc.config import CondenseConfig, EvalConfig
from securedc.data import DatasetBundle
from securedc.errors import CertificationError, ConfigError
from securedc.notices import Notice, Progress, notifier

__all__ = ["Release", "release", "resolve_policy"]


@dataclass(frozen=True, kw_only=True)
class Release:
    """The outcome of :func:`release`.

    Attributes:
        condensation: the synthetic set, its configuration and the condenser's result.
        path: the release file ``NAME.safetensors`` (written unless :attr:`refused`).
        manifest: its public manifest (verdict and policy only, no measured number).
        owner: the owner record ``NAME.owner.json`` (fingerprint, counts, evaluation, audit numbers).
        audit: the audit's results and certification (``None`` without the audit).
        report: ``NAME.report/report.html`` (owner-only), or ``None`` without the audit.
        written: the release and its owner record were written.
        forced: written although not certified (``force=True``; the manifest says so).

    A refused release (:attr:`refused`) wrote its report and nothing else; :meth:`check` raises
    the :class:`~securedc.errors.CertificationError` the CLI turns into exit code 1.
    """

    condensation: Condensation
    path: Path
    manifest: dict[str, Any]
    owner: dict[str, Any]
    audit: AuditOutcome | None = None
    report: Path | None = None
    written: bool = True
    forced: bool = False

    @property
    def certified(self) -> bool:
        """Every certification gate passed."""
        return self.audit is not None and self.audit.certification.certified

    @property
    def refused(self) -> bool:
        """The audit refused the release and nothing was exported."""
        return not self.written

    @property
    def exit_code(self) -> int:
        """The CLI's exit status: 0 written (certified, unaudited or forced), 1 refused."""
        return 1 if self.refused else 0

    def check(self) -> "Release":
        """Raise :class:`CertificationError` when the release was refused; else return ``self``."""
        if self.refused:
            assert self.audit is not None
            failed = [g.name for g in self.audit.certification.failed]
            utility = self.audit.results.get("utility")
            soft = utility is not None and utility.details.get("protocol", {}).get("soft_labels")
            hint = ("The models on S trained on its soft labels (--soft-labels): try the release without them, or "
                    if soft and any(name.startswith("utility") for name in failed)
                    else "Fix the release (e.g. --epsilon for privacy) or ")
            raise CertificationError(
                f"the audit failed gate(s) {', '.join(failed)}; nothing was exported. Report: {self.report}. "
                + hint + "export anyway with --force (marked uncertified).",
                report_dir=str(self.report.parent) if self.report is not None else None,
            )
        return self


def resolve_policy(policy: Policy | str | Path | None) -> Policy:
    """A :class:`Policy` as given, read from a TOML file, or the default (``None``)."""
    return policy.validate() if isinstance(policy, Policy) else load_policy(policy)


def default_stem(dataset: str, ipc: int) -> str:
    """``DATASET-ipcN`` with every character outside ``[A-Za-z0-9._-]`` replaced, so it names one file in ``--out``.

    Example:
        >>> default_stem("npz:/data/x.npz", 10)
        'npz_data_x.npz-ipc10'
    """
    safe = re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9._-]", "_", dataset)).strip("._") or "data"
    return f"{safe}-ipc{ipc}"


def _member_bundle(
    bundle: DatasetBundle, audit: AuditConfig, *, seed: int
) -> tuple[DatasetBundle, dict[str, Any], tuple[Tensor, Tensor]]:
    """The bundle restricted to the audit's members, the split record for the owner record, and the
    non-members ``(x, y)`` (the split is computed once: it hashes every training example)."""
    from securedc.audits.pipeline import split_indices, split_record

    m, n = split_indices(bundle.train_images, bundle.train_labels, holdout_fraction=audit.holdout_fraction, seed=seed)
    split = split_record(m, n, holdout_fraction=audit.holdout_fraction, seed=seed, fingerprint=bundle.fingerprint)
    members = dataclasses.replace(bundle, train_images=bundle.train_images[m], train_labels=bundle.train_labels[m],
                                  fingerprint=bundle.fingerprint)
    return members, split, (bundle.train_images[n], bundle.train_labels[n])


def _evaluation(cond: Condensation, eval_config: EvalConfig, say: Progress) -> dict[str, Any]:
    """The owner record's ``evaluation``: the utility audit on the evaluation model alone."""
    from securedc.audits.utility import evaluation_section, run_utility_audit

    b = cond.bundle
    say(Notice("audit", f"evaluating: training {eval_config.models} fresh models on the condensed set and on a "
                        "random subset"))
    try:
        result = run_utility_audit(
            images=cond.images, labels=cond.labels, train_images=b.train_images, train_labels=b.train_labels,
            test_images=b.test_images, test_labels=b.test_labels, num_classes=b.num_classes, mean=b.mean, std=b.std,
            eval_config=eval_config, seed=cond.config.seed, architectures=(eval_config.model,),
            device=cond.config.resolved_device, soft_labels=cond.soft_labels,
        )
    finally:
        say(Notice("audited"))
    return evaluation_section(result)


def _audited(cond: Condensation, full: DatasetBundle, split: dict[str, Any], members: tuple[Tensor, Tensor],
             nonmembers: tuple[Tensor, Tensor], *, eval_config: EvalConfig, audit: AuditConfig, policy: Policy,
             target: Path, force: bool, progress: Progress) -> dict[str, Any]:
    """Audit a fresh condensation: the :class:`Release` fields other than condensation and path."""
    from securedc.audit_record import audit_and_report, owner_audit_section, release_audit_section, report_dir_for
    from securedc.audits.utility import evaluation_section

    outcome, html = audit_and_report(
        cond.images, cond.labels, manifest=cond.manifest(), bundle=full, members=members, nonmembers=nonmembers,
        config=cond.config, split=split, eval_config=eval_config, audit=audit, policy=policy,
        report_dir=report_dir_for(target), epsilon_history=cond.result.epsilon_history,
        owner=cond.owner_record(audit={"split": split}), progress=progress,
        prototypes=cond.result.bank.prototypes if cond.result.bank is not None else None,
        soft_labels=cond.soft_labels,
    )
    certified = outcome.certification.certified
    forced = force and not certified
    return dict(
        manifest=cond.manifest(audit=release_audit_section(outcome.certification, forced=forced)),
        owner=cond.owner_record(evaluation=evaluation_section(outcome.results["utility"]),
                                audit=owner_audit_section(outcome, split, html, forced=forced)),
        audit=outcome, report=html, written=certified or force, forced=forced,
    )


def release(
    config: CondenseConfig,
    data: DatasetBundle | Dataset | str = "digits",
    *,
    out: str | Path = "securedc-out",
    name: str | None = None,
    audit: AuditConfig | None = AuditConfig(),
    policy: Policy | str | Path | None = None,
    eval_config: EvalConfig = EvalConfig(),
    evaluate: bool = True,
    force: bool = False,
    root: str | Path | None = None,
    download: bool = False,
    resume: str | Path | None = None,
    from_bank: str | Path | None = None,
    save_bank: bool = False,
    record: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> Release | None:
    """Condense ``data``, audit and certify the result, and export it or refuse it.

    Every option is validated (and the output directory checked) before the data is loaded.

    Args:
        config: the condensation (:meth:`CondenseConfig.from_options` builds one from keywords).
        data: a dataset name, a :class:`~securedc.data.DatasetBundle` or a map-style torch Dataset.
        out: output directory (created).
        name: file stem (default ``DATASET-ipcN``): writes ``NAME.safetensors``, ``NAME.owner.json``,
            ``NAME.report/`` (with the audit) and ``NAME.bank.safetensors`` (``save_bank``).
        audit: how much to audit (:class:`~securedc.audits.pipeline.AuditConfig`); ``None`` = no audit
            (the release is exported, marked not audited).
        policy: certification thresholds: a :class:`~securedc.audits.certify.Policy`, a TOML file, or
            ``None`` for the default.
        eval_config: protocol of the fresh models (utility audit, or the evaluation without audit).
        evaluate: without the audit, train fresh models on the result (the audit always does).
        force: export a release the audit refused (its manifest says ``certified: false, forced: true``).
        root, download: where torchvision datasets live; download them if missing.
        resume: a checkpoint of an interrupted run with the same settings.
        from_bank: re-condense from a saved statistics bank (no access to the real data).
        save_bank: also write the statistics bank ``NAME.bank.safetensors``.
        record: further owner-record sections (e.g. the plugin cache's ``cache`` key).
        progress: receives :class:`~securedc.notices.Notice` s and per-step
            :class:`~securedc.condenser.ProgressEvent` s (``None``: notices are logged).

    Returns:
        The :class:`Release` (``refused`` when the audit failed and ``force`` is false; call
        :meth:`Release.check` to raise instead); ``None`` on the ranks other than 0 of a
        ``torchrun`` launch.

    Raises:
        ConfigError, PrivacyError: invalid options (before any data is read).
        DataError: the data cannot be loaded or is too small to audit.

    Example:
        >>> import tempfile
        >>> cfg = CondenseConfig.from_options(ipc=1, iterations=2, batch_real=8)
        >>> r = release(cfg, "digits", out=tempfile.mkdtemp(), audit=None, evaluate=False)
        >>> r.path.name, r.written, r.certified, r.manifest["audit"]
        ('digits-ipc1.safetensors', True, False, {'certified': False, 'ran': False})
    """
    from securedc.api import as_bundle
    from securedc.export import save_condensed
    from securedc.io import ensure_writable_dir

    config = config.validate()
    if audit is not None or evaluate:
        eval_config = eval_config.validate()
    if name is not None and (not name or name != Path(name).name or name in (".", "..")):
        raise ConfigError(f"--name must be a file stem without a directory (got {name!r}); use --out for the folder")
    check_single_process_bank(from_bank=from_bank is not None, save_bank=save_bank)
    out_dir = ensure_writable_dir(out)
    if audit is not None:  # every audit option is checked before the long computation
        policy, audit = resolve_policy(policy), audit.validate()
    if resume is not None:  # a wrong --resume file fails before the data is loaded
        from securedc.checkpoint import check_checkpoint
        from securedc.run_checkpoint import check_same_config

        check_same_config(check_checkpoint(resume), config, resume)
    say = notifier(progress)
    full = as_bundle(data, root=str(root) if root is not None else None, download=download)
    stem = name or default_stem(full.name, config.ipc)
    target = out_dir / f"{stem}.safetensors"
    checkpoint = out_dir / f"{stem}.ckpt.safetensors"
    bundle, split, nonmembers = (_member_bundle(full, audit, seed=config.seed) if audit is not None
                                 else (full, {}, None))
    # the bank is written only with the release: a refused run leaves no statistics of the data behind
    cond = run_condensation(config, bundle, progress=say, checkpoint=checkpoint, resume=resume, from_bank=from_bank)
    if cond is None:
        return None
    if audit is not None:
        assert isinstance(policy, Policy) and nonmembers is not None
        fields = _audited(cond, full, split, (bundle.train_images, bundle.train_labels), nonmembers,
                          eval_config=eval_config, audit=audit, policy=policy, target=target, force=force,
                          progress=say)
    else:  # numbers measured on real data go to the owner record, never into the release
        evaluation = {"evaluation": _evaluation(cond, eval_config, say)} if evaluate else {}
        fields = dict(manifest=cond.manifest(), owner=cond.owner_record(**evaluation))
    fields["owner"] = {**fields["owner"], **(record or {})}
    done = Release(condensation=cond, path=target, **fields)
    if done.written:
        save_condensed(target, cond.images, cond.labels, done.manifest, owner=done.owner, soft_labels=cond.soft_labels)
        if save_bank and cond.write_bank is not None:
            bank_file = out_dir / f"{stem}.bank.safetensors"
            cond.write_bank(bank_file)
            say(Notice("info", str(bank_file), label="statistics bank"))
        if checkpoint.exists() and not cond.config.checkpoint_every:
            checkpoint.unlink()
    return done
