"""One condensation run — in this process, from a saved statistics bank, or split across ``torchrun`` ranks.

:func:`run_condensation` is the step of :func:`securedc.release` (and of :func:`securedc.condense`)
that touches the real data: only through the condenser's mechanism, or not at all when
re-condensing from a bank (docs/design.md, "Data flow"). It reports through a ``progress``
callback (:mod:`securedc.notices`) and never prints.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from securedc.condenser import Condenser, CondenseResult, ProgressEvent
from securedc.config import CondenseConfig
from securedc.data import DatasetBundle
from securedc.errors import ConfigError
from securedc.notices import Notice, Progress, notifier
from securedc.public_extractor import FINGERPRINT_KEY

__all__ = ["Condensation", "run_condensation", "step_events"]


#: teacher fields computed from the real data (measured accuracy, timing, the data's fingerprint): the
#: owner record keeps them, the public manifest does not
TEACHER_OWNER_ONLY = ("clean_acc", "pgd20_acc", "test_images", "training_seconds", FINGERPRINT_KEY)


@dataclass
class Condensation:
    """A finished condensation: the synthetic set plus everything needed to export it.

    Attributes:
        images, labels: the synthetic set S ``[M, C, H, W]`` in [0, 1] and ``[M]``.
        config: the configuration it was made with (a bank's settings when re-condensed from one).
        result: the condenser's result (privacy section, losses, timings).
        bundle: the data it was condensed from.
        soft_labels: per-image probabilities of the robust teacher (``soft_labels=True``), or ``None``.
        bank_path: where the statistics bank was saved (``bank_path`` of :func:`run_condensation`), or ``None``.
        write_bank: writes the run's statistics bank to a path (single-process runs that made one), so a
            caller can save it only once the release is decided (:func:`securedc.release`); else ``None``.
        teacher: how the soft labels' teacher was trained when the pipeline trained it on the real
            data (non-private runs), else ``None`` (the term's teacher, described with the term).
    """

    images: Tensor
    labels: Tensor
    config: CondenseConfig
    result: CondenseResult
    bundle: DatasetBundle
    soft_labels: Tensor | None = None
    bank_path: Path | None = None
    teacher: dict[str, Any] | None = None
    write_bank: Callable[[Path], None] | None = field(default=None, repr=False, compare=False)

    def manifest(self, **extra: Any) -> dict[str, Any]:
        """The public manifest of the release (see :func:`securedc.api.build_manifest`)."""
        from securedc.api import build_manifest

        if self.teacher is not None:  # how it was trained; its accuracy on real data stays in the owner record
            public = {k: v for k, v in self.teacher.items() if k not in TEACHER_OWNER_ONLY}
            extra = {"soft_label_teacher": public, **extra}
        return build_manifest(self.bundle, self.config, self.result, **extra)

    def owner_record(self, **extra: Any) -> dict[str, Any]:
        """The data owner's record kept beside the release (see :func:`securedc.api.build_owner_record`)."""
        from securedc.api import build_owner_record

        if self.teacher is not None:
            extra = {"soft_label_teacher": self.teacher, **extra}
        return build_owner_record(self.bundle, self.result, **extra)


def _privacy_notice(condenser: Condenser, mechanism: Any, config: CondenseConfig) -> Notice:
    """What the run promises before it starts: its DP plan, or that it is not private."""
    if not mechanism.private:
        return Notice("warning", "exact statistics of the real data (give a finite epsilon for a DP guarantee)",
                      label="not private")
    plan = condenser.plan
    return Notice("info", f"target ε={config.privacy.epsilon:g}, δ={plan.delta:g}, R={plan.releases} releases at "
                          f"q={plan.sample_rate:g}, σ={plan.noise_multiplier:.4f}, C={mechanism.sensitivity:.3g}, "
                          f"counts {plan.counts}; {config.iterations} optimisation steps"
                          + (f"; bank signal-to-noise {plan.bank_snr:.2f}: prototype top-up σ_B="
                             f"{plan.top_up_noise_multiplier:.4f}, releases add σ'={plan.release_sigma:.4f} "
                             f"(accounted as σ)" if plan.top_up_noise_multiplier is not None else ""), label="DP")


def _steps(say: Progress, description: str, total: int) -> Any:
    """Announce the optimisation loop; returns the per-step callback for :meth:`Condenser.fit`."""
    say(Notice("condense", description, total=total))
    return say


def _check_teacher(config: CondenseConfig, bundle: DatasetBundle) -> None:
    """A DP run's --robust-extractor must not have been trained on the data it condenses."""
    if config.privacy.private and config.adversarial.robust_extractor is not None:
        from securedc.public_extractor import check_declared_public

        check_declared_public(config.adversarial.robust_extractor, bundle)


def _run_local(
    config: CondenseConfig, bundle: DatasetBundle, *, say: Progress, checkpoint: Path | None, resume: Path | None,
    from_bank: Path | None, bank_path: Path | None,
) -> Condensation:
    bank = bank_meta = None
    if from_bank is not None:  # phase 2 only: the bank is the sole input, no real data, no privacy cost
        from securedc.bank import StatisticsBank, config_for_bank

        bank, bank_meta = StatisticsBank.load(from_bank)
        config = config_for_bank(config, bank_meta)
    _check_teacher(config, bundle)  # after the bank's privacy settings are known
    condenser = Condenser(
        config, num_classes=bundle.num_classes, image_shape=bundle.image_shape, mean=bundle.mean, std=bundle.std
    )
    mechanism = None
    if bank is not None:
        condenser.check_bank(bank_meta, source=from_bank)
        say(Notice("info", f"{from_bank}: {len(bank)} releases, no access to real data", label="from bank"))
    else:
        mechanism = condenser.make_mechanism(
            bundle.train_images, bundle.train_labels, resume_from=resume if config.privacy.private else None
        )
        say(_privacy_notice(condenser, mechanism, config))
    try:
        result = condenser.fit(
            mechanism, bank=bank, bank_privacy=(bank_meta or {}).get("privacy"),
            callback=_steps(say, f"condensing {bundle.name}", config.iterations),
            checkpoint_path=checkpoint, resume_from=resume,
        )
    finally:
        say(Notice("condensed"))
    writer = (functools.partial(condenser.save_bank, result=result, dataset=bundle.name)
              if result.bank is not None else None)
    saved = None
    if bank_path is not None and writer is not None:
        writer(bank_path)
        say(Notice("info", str(bank_path), label="statistics bank"))
        saved = bank_path
    soft = teacher_description = None
    if config.adversarial.soft_labels:
        soft, teacher_description = _soft_labels(
            config, bundle, result.images, result.labels, terms=condenser.terms, make_network=condenser.make_network,
            real_data_teacher=mechanism is not None and not mechanism.private, say=say)
    return Condensation(images=result.images, labels=result.labels, config=config, result=result, bundle=bundle,
                        soft_labels=soft, bank_path=saved, teacher=teacher_description, write_bank=writer)


def _soft_labels(
    config: CondenseConfig, bundle: DatasetBundle, images: Tensor, labels: Tensor, *, terms: list[Any],
    make_network: Callable[[int], Any], real_data_teacher: bool, say: Progress,
) -> tuple[Tensor | None, dict[str, Any] | None]:
    """Per-image soft labels of the final S from the robust teacher (post-processing of S: no privacy cost),
    and how that teacher was trained when it was trained on the real data.

    The teacher: the ``--robust-extractor`` file (the term's own copy when the term is on); else,
    when ``real_data_teacher`` (a non-private run that read the real data, not a re-condensation
    from a bank), one adversarially trained on the real training data; else one trained on S only.
    """
    from securedc.terms.adversarial import soft_labels_for

    teacher = description = None
    extractor_path = config.adversarial.robust_extractor
    if extractor_path is None and real_data_teacher:
        teacher, description = _real_data_teacher(config, bundle, say)
    elif extractor_path is None and config.privacy.private:
        say(Notice("warning", "the soft-label teacher is trained on S only (no --robust-extractor): on FMNIST its "
                              "soft labels raised PGD-20 but not AutoAttack accuracy; a teacher trained on data "
                              "you declare public did (docs/audits.md)", label="soft labels"))
    soft = soft_labels_for(terms, images, labels, model_factory=make_network,
                           temperature=config.adversarial.soft_label_temperature, teacher=teacher,
                           extractor_path=extractor_path, eps=config.adversarial.eps,
                           epochs=config.adversarial.extractor_epochs)
    return soft, description


def _real_data_teacher(config: CondenseConfig, bundle: DatasetBundle, say: Progress) -> tuple[Any, dict[str, Any]]:
    """A NON-PRIVATE run's soft-label teacher: adversarially trained on the real training data it condensed.

    The run releases exact statistics of that data anyway, so a teacher trained on it costs no
    privacy the release has not already given up; it is a far better teacher than one trained on
    the tiny S (FMNIST IPC 10: PGD-20 of standard training on S 61 -> 68 %, docs/audits.md).
    DP runs never get here: their teacher is trained on S only or loaded from a declared-public file.
    """
    from securedc.public_extractor import fit_public_extractor, score_text

    say(Notice("info", "adversarially training the soft-label teacher on the real training data (not private)",
               label="teacher"))
    fitted = fit_public_extractor(bundle, eps=config.adversarial.eps, seed=config.seed, model=config.model)
    d = fitted.description
    say(Notice("info", f"teacher: {d['train_images']} real images, {d['training_seconds']:.0f} s, {score_text(d)}",
               label="teacher"))
    described = {k: v for k, v in d.items() if k not in ("declared_public", "source")}
    return fitted.model, {"trained_on": "the real training data (non-private run)", **described}


def _run_distributed(
    config: CondenseConfig, bundle: DatasetBundle, *, say: Progress, checkpoint: Path | None, resume: Path | None,
) -> Condensation | None:
    """Classes split across the ranks; rank 0 gets the whole set and reports, the others get ``None``."""
    from securedc.plugins.distributed import cleanup_rank_checkpoints, describe_split, fit_distributed, world_info

    _check_teacher(config, bundle)  # every rank: a refused run stops before any rank touches the data
    rank, world, _ = world_info()
    if rank != 0:
        fit_distributed(config, bundle, checkpoint_path=checkpoint, resume_from=resume)
        return None
    split = describe_split(bundle.num_classes, world)
    say(Notice("info", f"{world} ranks, classes per rank {split}", label="distributed"))
    try:
        result = fit_distributed(
            config, bundle, callback=_steps(say, f"condensing {bundle.name} (rank 0 share)", config.iterations),
            checkpoint_path=checkpoint, resume_from=resume,
        )
    finally:
        say(Notice("condensed"))
    assert result is not None  # rank 0 always gets the gathered result
    priv = result.privacy
    if priv.get("private"):
        say(Notice("info", f"ε={priv['epsilon']:.4g}, δ={priv['delta']:g}, q={priv['sample_rate']:.5f}, "
                           f"T={priv['steps']}, σ={priv['noise_multiplier']:.4f} (same accountant as one process: "
                           "parallel composition)", label="DP"))
    else:
        say(Notice("warning", "exact statistics of the real data", label="not private"))
    if checkpoint is not None and not config.checkpoint_every:
        cleanup_rank_checkpoints(checkpoint, world)
    soft = teacher_description = None
    if config.adversarial.soft_labels:  # rank 0 holds the gathered S: one teacher labels every class
        whole = Condenser(config, num_classes=bundle.num_classes, image_shape=bundle.image_shape, mean=bundle.mean,
                          std=bundle.std)
        soft, teacher_description = _soft_labels(
            config, bundle, result.images, result.labels, terms=whole.terms, make_network=whole.make_network,
            real_data_teacher=not config.privacy.private, say=say)
    return Condensation(images=result.images, labels=result.labels, config=config, result=result, bundle=bundle,
                        soft_labels=soft, teacher=teacher_description)


def run_condensation(
    config: CondenseConfig,
    bundle: DatasetBundle,
    *,
    progress: Progress | None = None,
    checkpoint: str | Path | None = None,
    resume: str | Path | None = None,
    from_bank: str | Path | None = None,
    bank_path: str | Path | None = None,
    distributed: bool | None = None,
) -> Condensation | None:
    """Condense ``bundle``'s training split with ``config``.

    Args:
        config: a validated configuration.
        bundle: the data (only its training split is condensed).
        progress: receives :class:`~securedc.notices.Notice` s and one
            :class:`~securedc.condenser.ProgressEvent` per step.
        checkpoint: where checkpoints go (every ``config.checkpoint_every`` steps, at the end, on Ctrl-C).
        resume: a checkpoint of an earlier run with the same configuration (DP: its plan and key).
        from_bank: re-condense from this saved statistics bank (no access to the real data).
        bank_path: also save the statistics bank here (single-process runs).
        distributed: split the classes across ``torchrun`` ranks; ``None`` = when launched so.

    Returns:
        The :class:`Condensation`; ``None`` on the ranks other than 0 of a distributed run.

    Example:
        >>> from securedc.data import load_dataset
        >>> out = run_condensation(CondenseConfig(ipc=1, iterations=2, batch_real=8), load_dataset("digits"))
        >>> tuple(out.images.shape)
        (10, 1, 8, 8)
    """
    from securedc.plugins.distributed import launched_distributed

    say = notifier(progress)
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    resume = Path(resume) if resume is not None else None
    if distributed if distributed is not None else launched_distributed():
        check_single_process_bank(from_bank=from_bank is not None, save_bank=bank_path is not None, distributed=True)
        return _run_distributed(config, bundle, say=say, checkpoint=checkpoint, resume=resume)
    return _run_local(config, bundle, say=say, checkpoint=checkpoint, resume=resume,
                      from_bank=Path(from_bank) if from_bank is not None else None,
                      bank_path=Path(bank_path) if bank_path is not None else None)


def check_single_process_bank(*, from_bank: bool, save_bank: bool, distributed: bool | None = None) -> None:
    """Refuse ``--from-bank`` / ``--save-bank`` in a ``torchrun`` launch (``distributed=None``: when launched so).

    A bank holds the releases of every class, and a distributed run must never quietly read the real
    data instead of the bank it was given.

    Raises:
        ConfigError: a bank option in a distributed run.
    """
    from securedc.plugins.distributed import launched_distributed

    if (from_bank or save_bank) and (distributed if distributed is not None else launched_distributed()):
        raise ConfigError("--from-bank and --save-bank run in one process (a bank holds the releases of every "
                          "class); run them without torchrun")


def step_events(callback: Any) -> Progress:
    """A ``progress`` callback forwarding only the per-step :class:`ProgressEvent` s to ``callback``."""

    def forward(event: Any) -> None:
        if isinstance(event, ProgressEvent):
            callback(event)

    return forward
