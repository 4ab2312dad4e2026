"""What a condensation run writes about itself: the privacy section and the bank manifest.

The privacy section goes into every release's manifest (:mod:`securedc.export`) and every
saved statistics bank; in DP mode it makes ε recomputable from the recorded accountant
history and δ, and lists what the guarantee does not cover (:data:`NOT_COVERED`).

Example:
    >>> from securedc.privacy import ExactMechanism
    >>> import torch
    >>> m = ExactMechanism(torch.zeros(2, 1, 2, 2), torch.tensor([0, 1]), num_classes=2, batch_per_class=1)
    >>> privacy_section(None, m, None, bank=None, iterations=1, terms=[])["private"]
    False
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from securedc.bank import StatisticsBank
from securedc.errors import ConfigError
from securedc.privacy import GaussianMechanism, Mechanism, PrivacyAccountant, PrivacyPlan
from securedc.privacy.calibration import TOP_UP_SNR
from securedc.terms import Term

__all__ = ["NOT_COVERED", "privacy_section", "from_bank_section", "write_bank"]

#: What the (ε, δ) guarantee does not cover; copied into every private manifest and report.
NOT_COVERED = [
    "the choice of hyper-parameters (epsilon, iterations, releases, learning rates, clip bounds, architecture): "
    "they must not be tuned on the private data; tuning runs are not accounted",
    "class counts when the user declares them public (--counts public); by default they are released "
    "through the accounted Gaussian mechanism",
    "the public normalisation constants and dataset metadata (image shape, class names)",
    "floating-point and pseudo-random-number side channels (Philox/torch generators are not cryptographically secure)",
    "the export decision: certification by the owner's audit (membership inference, canaries, utility and "
    "robustness on the real data) decides whether this file is released, and that decision depends on the "
    "private data outside the accountant, so the manifest's audit verdict (certified yes/no) is NOT covered "
    "by (epsilon, delta); audit results stay with the data owner",
    "the data owner's files beside the release (NAME.owner.json and the NAME.report/ directory): they hold the "
    "dataset fingerprint, the member split, exact example counts and every audit and evaluation number, all "
    "computed from the private data; they are not part of the release and must not be published",
    "data declared public for a --robust-extractor file: the check refuses the same dataset, not a 'public' set "
    "that shares images with the private one",
    "checkpoints (NAME.ckpt.safetensors, written owner-only): they hold the secret noise key and unreleased "
    "state and are as sensitive as the data",
    "the default delta when --delta is not given: a power of ten below 1/N with N the released counts' upper "
    "bound, so near a power of ten a neighbouring dataset may get delta 10 times larger; give --delta to fix it "
    "in advance",
    "repeated runs and group privacy: several releases from the same data compose (add their budgets), and "
    "re-running until a release is certified selects among noise draws",
]


def privacy_section(
    plan: PrivacyPlan | None,
    mechanism: Mechanism,
    accountant: PrivacyAccountant | None,
    *,
    bank: StatisticsBank | None,
    iterations: int,
    terms: Sequence[Term],
) -> dict[str, Any]:
    """The manifest's privacy section: ε recomputable from the recorded history and δ.

    Args:
        plan: the private run's plan, or ``None`` (non-private run).
        mechanism: the real data's mechanism.
        accountant: the run's accountant, or ``None`` (non-private run).
        bank: the releases made (their number is the accountant's steps), or ``None`` for the plan's.
        iterations: the optimisation steps of the run.
        terms: the objective's terms (their clip bounds are recorded).

    Returns:
        ``{"private": False, ...}`` for a non-private run, else the plan, ε, the accountant
        history, the mechanism's description and :data:`NOT_COVERED`.
    """
    if accountant is None or plan is None:
        return {"private": False, "epsilon": "inf", "statement": "NOT differentially private"}
    import opacus  # only a private run's record names it (its import costs seconds: securedc.privacy.rdp)

    assert isinstance(mechanism, GaussianMechanism)
    releases = len(bank) if bank is not None else plan.releases
    recorded = plan.to_dict()
    return {
        "private": True,
        "epsilon": accountant.epsilon(),
        **recorded,
        "steps": releases,
        "optimisation_steps": iterations,
        "clip_bounds": {t.name: t.clip for t in terms},
        "sensitivity": mechanism.sensitivity,
        "accountant_history": accountant.state_dict()["history"],
        "opacus_version": opacus.__version__,
        "mechanism": (
            "per release: Poisson-sampled Gaussian mechanism on per-class sums of clipped per-sample vectors"
            + ("; class counts declared public by the user" if recorded["counts"] == "public"
               else "; class counts released once through a Gaussian mechanism, composed")
            + _prototype_description(recorded)
            + (f"; bank signal-to-noise {recorded.get('bank_snr') or 0:.2f} below {TOP_UP_SNR:g} (released counts): "
               f"a second prototype release (sigma {recorded['top_up_noise_multiplier']:.4g}) combined with the first "
               f"by inverse variance, the statistic releases adding sigma {recorded.get('release_noise_multiplier') or 0:.4g} "
               f"instead; both fit under the planned releases' RDP curve at every order, so the accountant composes "
               f"the planned noise_multiplier" if recorded.get("top_up_noise_multiplier") else "")
        ),
        "noise_seed": (
            "given by the caller (must be kept secret)"
            if mechanism.noise_seed_given
            else "secret: 128-bit key from the OS CSPRNG, not recorded here (checkpoints hold it: keep them private)"
        ),
        "not_covered": list(NOT_COVERED),
    }


def _prototype_description(recorded: Mapping[str, Any]) -> str:
    """The manifest's sentence on the phase-0 prototype releases (empty without prototypes)."""
    if not recorded.get("prototype_noise_multiplier"):
        return ""
    rounds, clusters = int(recorded.get("prototype_rounds") or 1), int(recorded.get("prototype_clusters") or 1)
    if rounds == 1:
        return ("; per-class mean images (prototypes, the initialisation of S) released once through a "
                "full-batch Gaussian mechanism, composed")
    what = (f"per-class mean images (prototypes), then {rounds - 1} DP Lloyd rounds releasing {clusters} sub-class "
            "centres per class (the initialisation of S)" if clusters > 1
            else "per-class mean images (prototypes, the initialisation of S) combined by inverse variance")
    return (f"; {rounds} full-batch Gaussian releases at sigma_p*sqrt({rounds}) each (together one release at "
            f"sigma_p = {float(recorded['prototype_noise_multiplier']):.4g}): {what}, composed")


def from_bank_section(bank_privacy: Mapping[str, Any] | None) -> dict[str, Any]:
    """The privacy section of a re-condensation from a saved bank: the bank's, marked as such."""
    privacy = dict(bank_privacy or {"private": False, "epsilon": "inf"})
    privacy["from_bank"] = "re-condensed from a saved statistics bank: no further access to real data"
    return privacy


def write_bank(
    path: str | Path,
    bank: StatisticsBank | None,
    *,
    dataset: str,
    signature: Mapping[str, Any],
    privacy: Mapping[str, Any],
    terms: Sequence[Mapping[str, Any]],
) -> None:
    """Write ``bank`` with its manifest (signature + privacy section) to ``path``.

    Args:
        path: the bank file (``.safetensors``).
        bank: the run's statistics bank.
        dataset: the dataset's name.
        signature: what the statistics depend on (:func:`~securedc.bank.statistics_signature`).
        privacy: the run's privacy section.
        terms: the terms' descriptions.

    Raises:
        ConfigError: ``bank`` is ``None``.

    Privacy:
        In DP mode the bank is a DP release (its statistics went through the accounted
        mechanism). In non-private mode it holds exact class statistics of the real data:
        as sensitive as the data itself.
    """
    if bank is None:
        raise ConfigError("this result holds no statistics bank")
    import securedc

    bank.save(
        path,
        {
            "dataset": dataset,
            "signature": signature,
            "privacy": privacy,
            "terms": terms,
            "securedc_version": securedc.__version__,
            "statement": (
                "differentially private statistics (see privacy)" if privacy.get("private")
                else "NOT private: exact class statistics of the real data; keep it as private as the data"
            ),
        },
    )
