"""Calibration of a private run: (q, σ, R) from (ε, δ) by a documented, data-free rule.

A private run is a sequence of accounted releases (see :mod:`securedc.privacy.mechanism`):

* phase 0: one full-batch Gaussian release of the per-class **prototypes** (mean images)
  together with the class counts (:meth:`~securedc.privacy.mechanism.GaussianMechanism.release_prototypes`),
  noise multiplier σ_p calibrated so that it alone would spend ``prototype_share · ε``; with
  ``prototype_share = 0`` only the counts are released (σ₀ for ``count_share · ε``), and with
  counts declared public the count part is dropped;
* phase 1: R Poisson-sampled Gaussian releases of per-class sums with (q, σ).

The accountant composes exactly this history, ``[(σ_p or σ₀, 1, 1), (σ, q, R)]``, and σ is
calibrated so that the whole history spends ε.

**Why prototypes.** Per-class mean images are the most informative single statistic a small
budget can buy: on 8×8 digits (≈ 108 members per class) a ConvNet trained on DP class means
released with the whole budget reaches 88 % at ε = 8 and 82 % at ε = 1, while matching
random-network features from noise initialisation reaches 57 % and 12 % (docs/privacy.md). The prototypes initialise S
(plus public noise for diversity) and the feature releases refine it.

**Signal-to-noise rule for q.** Each release's class statistic is ``(sum + N(0, σ²C²)) / (q N_c)``.
Optimising S against R releases averages their independent noise, so the error that reaches S
scales like ``η(q, R) = σ(q, R) / (q √R)`` (times ``C / N_c``). At fixed (ε, δ, R) the RDP
accountant makes η fall with q towards the full-batch floor ``η(1, R)``, while the cost of a
release (real images through the network) grows like ``q N``. The rule takes the *smallest*
q on a fixed grid whose η is within ``tolerance`` (default 15 %) of the floor: almost all the
accuracy of full-batch releases at a fraction of their compute. ``η(q, R) / η(1, R)`` does not
depend on N, so q is chosen without reading the data. On large data that q still reads far more
than a non-private release (Fashion-MNIST, ε = 8, R = 100: q = 0.3, 1 800 real images per class
against ``batch_real`` = 256), so it is **capped** at ``batch_real / max_c N̂_c`` from the public or
released counts (post-processing): a private release then reads no more real images than a
non-private one, and ``batch_real`` trades compute for accuracy as it does there. R is a compute
knob (diversity of random networks and augmentations); at large q it barely changes η.
Defaults: R = min(⌈K / reuse⌉, 100) releases for K optimisation steps (reuse = 4: as many as a
non-private run), tolerance 0.15, count share 0.1 — chosen from the η tables of this module on
public benchmark sizes (Fashion-MNIST 48 000, digits 1 150 members), never on private data.

Example:
    >>> q = choose_sample_rate(epsilon=1.0, delta=1e-5, releases=100)
    >>> 0.01 <= q <= 1.0
    True

References:
    Mironov, "Rényi Differential Privacy", CSF 2017, arXiv:1702.07476 (adaptive composition).
    Mironov, Talwar & Zhang, "Rényi Differential Privacy of the Sampled Gaussian Mechanism", 2019, arXiv:1908.10530.
    Zheng et al., "Dosser: decoupled optimisation and sampling for DP dataset condensation", ICCV 2025, arXiv:2508.01749.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from securedc.errors import PrivacyError
from securedc.privacy.rdp import rdp_curve, rdp_epsilon, rdp_orders

__all__ = [
    "SAMPLE_RATE_GRID",
    "PrivacyPlan",
    "choose_sample_rate",
    "calibrate_noise",
    "epsilon_of",
    "count_noise_multiplier",
    "prototype_noise_multiplier",
    "plan_private_run",
    "release_phase0_prototypes",
    "bank_snr",
    "top_up_split",
    "noisy_bank_step_scale",
    "TOP_UP_SNR",
    "TOP_UP_FRACTION",
]

#: candidate Poisson rates of the signal-to-noise rule (public, fixed)
SAMPLE_RATE_GRID: tuple[float, ...] = (0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
#: provisional δ for choices made before δ is known (the rule's ratio barely depends on it)
PROVISIONAL_DELTA = 1e-5

#: bank signal-to-noise ratio (:func:`bank_snr`) below which the statistics releases hand
#: ``TOP_UP_FRACTION`` of their privacy curve to a second prototype release (:func:`top_up_split`).
#: Chosen on public benchmark data (docs/privacy.md): 8×8 digits at ε = 1 (SNR 1.2–1.8: the bank is
#: mostly noise; the top-up lifts the release from 81 to ≈ 84 %, level with the DP class means),
#: digits at ε = 8 (7–10) and Fashion-MNIST at ε ≥ 1 (≥ 19), where the bank carries the signal.
TOP_UP_SNR = 4.0
#: share of the bank's RDP curve the prototype top-up takes (the bank keeps the rest, noisier)
TOP_UP_FRACTION = 0.75

History = Sequence[tuple[float, float, int]]


def epsilon_of(history: History, *, delta: float, accountant: str = "rdp", quiet: bool = False) -> float:
    """ε of a composition ``[(σ, q, steps), ...]`` at ``delta`` with a fresh opacus accountant.

    ``quiet`` (RDP only) drops opacus' warning that the optimal order is at the edge of its range
    (:func:`~securedc.privacy.rdp.rdp_epsilon`): for the probes of a search, not for a run's ε.

    Example:
        >>> round(epsilon_of([(1.0, 0.01, 1000)], delta=1e-5), 2) > 0
        True
    """
    if not history:
        return 0.0
    if accountant == "rdp":
        eps = rdp_epsilon([(float(s), float(q), int(n)) for s, q, n in history], delta=delta, quiet=quiet)
        return eps if math.isfinite(eps) else math.inf
    from opacus.accountants import create_accountant  # lazy: see securedc.privacy.rdp.rdp_orders

    acc = create_accountant(accountant)
    acc.history = [(float(s), float(q), int(n)) for s, q, n in history]
    eps = float(acc.get_epsilon(delta=delta))
    return eps if math.isfinite(eps) else math.inf


def calibrate_noise(
    *,
    target_epsilon: float,
    target_delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = "rdp",
    prefix: History = (),
) -> float:
    """The smallest σ (within 0.5 % of ε) such that ``prefix`` + ``steps`` releases at (σ, q) spend ≤ ε.

    Args:
        target_epsilon, target_delta: the budget of the whole run.
        sample_rate: q of each release.
        steps: number of releases at (σ, q).
        accountant: ``"rdp"`` or ``"prv"``.
        prefix: releases already fixed (e.g. the count release), composed first.

    Raises:
        PrivacyError: the prefix alone spends the budget, or no σ reaches it.

    Example:
        >>> s = calibrate_noise(target_epsilon=8, target_delta=1e-5, sample_rate=0.01, steps=100)
        >>> 0.3 < s < 1.5
        True
    """
    if steps < 1:
        raise PrivacyError("a private run needs at least one release")
    if not (0 < sample_rate <= 1):
        raise PrivacyError(f"sample rate q must be in (0, 1] (got {sample_rate})")
    return _calibrate(float(target_epsilon), float(target_delta), float(sample_rate), int(steps), accountant,
                      tuple((float(s), float(q), int(n)) for s, q, n in prefix))


@functools.lru_cache(maxsize=512)
def _calibrate(target_epsilon: float, target_delta: float, sample_rate: float, steps: int, accountant: str,
               prefix: tuple[tuple[float, float, int], ...]) -> float:
    """:func:`calibrate_noise` on hashable arguments, memoised: a pure function of public numbers
    whose accountant evaluations dominate the planning time (an audit re-plans the same budget
    for every shadow and canary condensation)."""
    prefix = list(prefix)

    def eps(sigma: float) -> float:
        return epsilon_of(prefix + [(sigma, sample_rate, steps)], delta=target_delta, accountant=accountant)

    tol = min(0.01, 0.005 * target_epsilon)
    # bracket [lo, hi]: eps(lo) > target >= eps(hi), found by doubling / halving from σ = 1
    lo, hi = 0.5, 1.0
    e_hi = eps(hi)
    while e_hi > target_epsilon:
        lo, hi = hi, 2 * hi
        if hi > 1e6:
            raise PrivacyError(
                f"cannot reach epsilon={target_epsilon:g} with delta={target_delta:g}: "
                "raise --epsilon or lower the number of releases"
            )
        e_hi = eps(hi)
    e_lo = eps(lo)
    while e_lo <= target_epsilon and lo > 1e-6:
        hi, e_hi, lo = lo, e_lo, lo / 2
        e_lo = eps(lo)
    if target_epsilon - e_hi < tol:
        return float(hi)
    # Illinois regula falsi on (log σ, log ε) — nearly linear for the Gaussian mechanism, so a few
    # accountant evaluations replace bisection's dozen — with the same stopping rule
    f_lo = math.log(e_lo / target_epsilon) if math.isfinite(e_lo) else math.inf
    f_hi = math.log(e_hi / target_epsilon) if e_hi > 0 else -math.inf
    moved = 0  # which end the last step replaced (-1: lo, +1: hi); Illinois halves the other end's
    # value when the same end is replaced twice running
    while hi - lo > 1e-6 * hi:
        a, b = math.log(lo), math.log(hi)
        if math.isfinite(f_lo) and math.isfinite(f_hi) and f_lo != f_hi:
            x = b - f_hi * (b - a) / (f_hi - f_lo)
            x = min(max(x, a + 0.01 * (b - a)), b - 0.01 * (b - a))
        else:
            x = (a + b) / 2
        mid = math.exp(x)
        e = eps(mid)
        if e > target_epsilon:
            lo, f_lo = mid, math.log(e / target_epsilon) if math.isfinite(e) else math.inf
            if moved == -1 and math.isfinite(f_hi):
                f_hi /= 2
            moved = -1
        else:
            hi = mid
            if target_epsilon - e < tol:
                break
            f_hi = math.log(e / target_epsilon) if e > 0 else -math.inf
            if moved == 1 and math.isfinite(f_lo):
                f_lo /= 2
            moved = 1
    return float(hi)


def choose_sample_rate(
    *,
    epsilon: float,
    delta: float,
    releases: int,
    accountant: str = "rdp",
    tolerance: float = 0.15,
    grid: Sequence[float] = SAMPLE_RATE_GRID,
) -> float:
    """Smallest q of ``grid`` whose averaged noise η(q, R) is within ``tolerance`` of the q = 1 floor.

    Uses only public quantities (ε, δ, R, the grid); see the module docstring.
    """
    return _choose_sample_rate(float(epsilon), float(delta), int(releases), accountant, float(tolerance),
                               tuple(float(q) for q in grid))


@functools.lru_cache(maxsize=128)
def _choose_sample_rate(epsilon: float, delta: float, releases: int, accountant: str, tolerance: float,
                        grid: tuple[float, ...]) -> float:
    """:func:`choose_sample_rate` on hashable arguments, memoised (pure; see :func:`_calibrate`).

    ``η(q) ≤ (1 + tolerance)·η(1)`` holds exactly when the σ that ``q`` needs is at most
    ``σ* = (1 + tolerance)·η(1)·q·√R``, i.e. when R releases at ``(σ*, q)`` spend at most ε (ε
    falls as σ grows). So each candidate q costs one accountant evaluation instead of a full
    calibration (the fractional RDP orders of a sampled Gaussian are a slow series: on a 2-core
    CPU this halved the rule's time, 3.1 → 1.5 s per (ε, δ, R) of the digits cards); only q = 1
    (closed-form curve) is calibrated.
    """
    floor = calibrate_noise(target_epsilon=epsilon, target_delta=delta, sample_rate=1.0, steps=releases,
                            accountant=accountant) / math.sqrt(releases)
    for q in sorted(grid):
        sigma_star = (1 + tolerance) * floor * q * math.sqrt(releases)
        if epsilon_of([(sigma_star, q, releases)], delta=delta, accountant=accountant, quiet=True) <= epsilon:
            return float(q)
    return 1.0


def bank_snr(*, sample_rate: float, noise_multiplier: float, releases: int, min_count: float,
             feature_dim: int) -> float:
    """Signal-to-noise ratio of the statistics bank, from public and released quantities only.

    A class statistic is the mean of per-sample vectors clipped to norm C, so its norm is at most
    (and for random-network features close to) C; the noise of one release's class mean has norm
    ``σ·C·sqrt(d) / (q·N̂_c)`` and averaging R releases divides it by ``sqrt(R)``. The ratio for the
    smallest released class count is ``q·N̂_min·sqrt(R) / (σ·sqrt(d))`` (C cancels).

    Example:
        >>> round(bank_snr(sample_rate=0.05, noise_multiplier=3.69, releases=100, min_count=144, feature_dim=128), 1)
        1.7
    """
    return sample_rate * min_count * math.sqrt(releases) / (noise_multiplier * math.sqrt(feature_dim))


def top_up_split(*, noise_multiplier: float, sample_rate: float, releases: int,
                 fraction: float = TOP_UP_FRACTION) -> tuple[float, float]:
    """Re-split the planned statistics releases into a prototype top-up and noisier releases.

    The planned releases ``(σ, q, R)`` have the RDP curve ρ(α) (Mironov, Talwar & Zhang 2019). The
    releases keep (q, R) with ``σ' = σ / sqrt(1 − fraction)``, and the top-up — one more full-batch
    Gaussian release of the prototype sums — gets the smallest σ_B whose curve ``α / (2σ_B²)`` fits
    under the gap: ``α / (2σ_B²) ≤ ρ(α) − ρ'(α)`` at every order α of the RDP accountant. Together
    they never exceed ρ(α), so a run that decides between the plan and the re-split after seeing
    the released counts (adaptive composition: Mironov 2017, Prop. 1, applied to the pointwise
    maximum of the two options, which is the plan) still spends exactly the planned ε, and the
    accountant keeps composing the planned ``(σ, q, R)``.

    Returns:
        ``(σ', σ_B)``.

    Example:
        >>> s_bank, s_top = top_up_split(noise_multiplier=3.69, sample_rate=0.05, releases=100)
        >>> round(s_bank, 2), s_top > 0
        (7.38, True)
    """
    if not (0 < fraction < 1):
        raise PrivacyError(f"top-up fraction must be in (0, 1) (got {fraction})")
    orders = rdp_orders()
    planned = rdp_curve(sample_rate=sample_rate, noise_multiplier=noise_multiplier) * releases
    sigma_bank = noise_multiplier / math.sqrt(1 - fraction)
    kept = rdp_curve(sample_rate=sample_rate, noise_multiplier=sigma_bank) * releases
    gaps = [float(p) - float(k) for p, k in zip(planned, kept)]
    if min(gaps) <= 0:
        raise PrivacyError("cannot re-split the releases: no privacy left for a top-up")
    sigma_top = math.sqrt(max(a / (2 * g) for a, g in zip(orders, gaps)))
    return sigma_bank, sigma_top


def noisy_bank_step_scale(privacy: Mapping[str, Any] | None) -> float:
    """Factor on the default image step size when the statistics bank is mostly noise.

    Each optimisation step pulls S towards one release's noisy target. The fixed point S drifts
    towards is set by the signal, but how far the releases' noise pushes S around it grows with
    the step size (SGD on noisy gradients: the stationary spread scales with the learning rate;
    Mandt, Hoffman & Blei, JMLR 2017). When the releases the run actually makes have a
    signal-to-noise ratio ``SNR'`` below :data:`TOP_UP_SNR` — the bank's SNR (:func:`bank_snr`,
    from released counts) times ``σ / σ'`` after a prototype top-up — the step shrinks to
    ``SNR' / TOP_UP_SNR`` of the default, keeping S near its DP prototypes where the bank cannot
    tell it better. Measured on public benchmark data (docs/privacy.md): digits at ε = 1 (SNR' ≈ 0.9),
    5 draws at lr 1 ended 5.8 points below to 2.4 above their own prototypes, at lr 0.3 0.8 below
    to 1.6 above. Post-processing: reads only the plan's public and released numbers.

    Args:
        privacy: a plan's :meth:`PrivacyPlan.to_dict` or a manifest's privacy section; ``None``
            or a non-private section gives 1.

    Example:
        >>> noisy_bank_step_scale({"bank_snr": 1.8, "noise_multiplier": 3.7, "release_noise_multiplier": 7.4})
        0.225
        >>> noisy_bank_step_scale({"bank_snr": 7.4, "noise_multiplier": 3.5}), noisy_bank_step_scale(None)
        (1.0, 1.0)
    """
    if not privacy or privacy.get("bank_snr") is None:
        return 1.0
    sigma = float(privacy["noise_multiplier"])
    released = float(privacy.get("release_noise_multiplier") or sigma)
    return min(1.0, float(privacy["bank_snr"]) * sigma / released / TOP_UP_SNR)


def count_noise_multiplier(*, epsilon: float, share: float, delta: float = PROVISIONAL_DELTA) -> float:
    """σ₀ of the class-count release: the classical Gaussian-mechanism noise for ``(share·ε, δ)``.

    ``σ₀ = sqrt(2 ln(1.25/δ)) / (share·ε)`` (Dwork & Roth 2014, Thm. A.1). This only fixes how
    much of the budget the counts may take; the accountant composes the count release with the
    statistic releases exactly (RDP) at the run's real δ, and σ is calibrated to the remainder.

    Example:
        >>> round(count_noise_multiplier(epsilon=1.0, share=0.1), 1)
        48.4
    """
    if not (0 < share < 1):
        raise PrivacyError(f"count budget share must be in (0, 1) (got {share})")
    return math.sqrt(2 * math.log(1.25 / delta)) / (share * epsilon)


def prototype_noise_multiplier(*, epsilon: float, share: float, accountant: str = "rdp",
                               delta: float = PROVISIONAL_DELTA) -> float:
    """σ_p of the class-prototype release: one full-batch Gaussian release spending ``share·ε`` alone.

    Calibrated with the accountant at the provisional δ (the run's δ may depend on the released
    N); the whole history, this release included, is then composed exactly at the run's δ and σ
    of the statistic releases gets the remainder.

    Example:
        >>> 0.5 < prototype_noise_multiplier(epsilon=8.0, share=0.3) < 3
        True
    """
    if not (0 < share < 1):
        raise PrivacyError(f"prototype budget share must be in (0, 1) (got {share})")
    return calibrate_noise(
        target_epsilon=share * epsilon, target_delta=delta, sample_rate=1.0, steps=1, accountant=accountant
    )


@dataclass(frozen=True)
class PrivacyPlan:
    """Everything the accountant and the manifest need about a private run.

    Attributes:
        target_epsilon, delta: the budget.
        delta_source: ``"user"`` or how the default was derived.
        sample_rate: q of each statistic release.
        sample_rate_source: ``"user"`` or ``"signal-to-noise rule"``.
        noise_multiplier: σ of each statistic release *as accounted*: the planned σ. The
            releases add noise ``release_noise_multiplier`` ≥ σ (see ``top_up_noise_multiplier``).
        releases: R.
        counts: ``"public"`` (declared by the user) or ``"released"`` (phase 0, accounted).
        count_noise_multiplier: σ₀ of a separate count release (``None`` with public counts or
            when the counts are released with the prototypes).
        prototype_noise_multiplier: σ_p of the class-prototype release (``None`` without it);
            with released counts the counts are part of this release. It is made of
            ``prototype_rounds`` releases at ``σ_p·sqrt(rounds)`` each (the accountant composes them;
            the same ε as one release at σ_p).
        prototype_rounds: L, the rounds of the prototype release (1, or
            :data:`~securedc.privacy.centres.PROTOTYPE_ROUNDS` when sub-class centres may be released).
        prototype_clusters: K, the sub-class centres per class the rounds after the first released
            (:func:`~securedc.privacy.centres.choose_clusters`); 1 = the rounds re-released the class means.
        accountant: opacus accountant name.
        estimated_counts: the per-class counts used as normaliser (public, or the DP release);
            kept for resuming (checkpoints are private), not put in the release manifest.
        prototypes: ``[C, *image_shape]`` DP class-mean images of the prototype release (the
            initialisation of S; stored in the bank), or ``None``.
        centres: ``[C, K, *image_shape]`` DP sub-class centres (the initialisation of S when K > 1;
            stored in the bank), or ``None``.
        release_noise_multiplier: σ' the statistic releases actually use (``None`` = σ).
        top_up_noise_multiplier: σ_B of the prototype top-up (:func:`top_up_split`), run when
            the bank's signal-to-noise ratio is below :data:`TOP_UP_SNR`; ``None`` = no top-up.
        bank_snr: :func:`bank_snr` of the planned releases (``None`` when not computed).
    """

    target_epsilon: float
    delta: float
    delta_source: str
    sample_rate: float
    sample_rate_source: str
    noise_multiplier: float
    releases: int
    counts: str
    count_noise_multiplier: float | None
    prototype_noise_multiplier: float | None = None
    prototype_rounds: int = 1
    prototype_clusters: int = 1
    accountant: str = "rdp"
    estimated_counts: tuple[float, ...] = field(default_factory=tuple)
    prototypes: Any = None
    centres: Any = None
    release_noise_multiplier: float | None = None
    top_up_noise_multiplier: float | None = None
    bank_snr: float | None = None

    @property
    def release_sigma(self) -> float:
        """σ' of the noise each statistic release adds (≥ the accounted σ)."""
        return self.release_noise_multiplier if self.release_noise_multiplier is not None else self.noise_multiplier

    def noise_std(self, sensitivity: float) -> Any:
        """``[C]`` noise std per coordinate of a release's class statistics, ``σ·Δ / (q·N̂_c)``
        (public and released quantities only), or ``None`` without estimated counts."""
        import torch

        if not self.estimated_counts:
            return None
        counts = torch.tensor(self.estimated_counts, dtype=torch.float32)
        return self.release_sigma * sensitivity / (self.sample_rate * counts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target_epsilon": self.target_epsilon,
            "delta": self.delta,
            "delta_source": self.delta_source,
            "sample_rate": self.sample_rate,
            "sample_rate_source": self.sample_rate_source,
            "noise_multiplier": self.noise_multiplier,
            "releases": self.releases,
            "counts": self.counts,
            "count_noise_multiplier": self.count_noise_multiplier,
            "prototype_noise_multiplier": self.prototype_noise_multiplier,
            "prototype_rounds": self.prototype_rounds,
            "prototype_clusters": self.prototype_clusters,
            "accountant": self.accountant,
            "release_noise_multiplier": self.release_noise_multiplier,
            "top_up_noise_multiplier": self.top_up_noise_multiplier,
            "bank_snr": self.bank_snr,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, estimated_counts: Sequence[float] = ()) -> "PrivacyPlan":
        keys = {f for f in cls.__dataclass_fields__ if f not in ("estimated_counts", "prototypes", "centres")}
        defaults = {"prototype_rounds": 1, "prototype_clusters": 1}  # plans written before the Lloyd rounds
        return cls(**{k: data.get(k, defaults.get(k)) for k in keys},
                   estimated_counts=tuple(float(c) for c in estimated_counts))

    @property
    def prototype_round_sigma(self) -> float | None:
        """σ of each prototype round, ``σ_p·sqrt(L)`` (``None`` without prototypes)."""
        if self.prototype_noise_multiplier is None:
            return None
        return self.prototype_noise_multiplier * math.sqrt(self.prototype_rounds)

    def one_off_releases(self) -> list[tuple[float, float, int]]:
        """The phase-0 history ``(σ, q = 1, steps)``: the count release or the prototype rounds."""
        out = [(self.count_noise_multiplier, 1.0, 1)] if self.count_noise_multiplier is not None else []
        if self.prototype_round_sigma is not None:
            out.append((self.prototype_round_sigma, 1.0, self.prototype_rounds))
        return out


def plan_private_run(
    privacy: Any, mechanism: Any, *, releases: int, feature_dim: int | None = None,
    max_expected_per_class: float | None = None, ipc: int = 1,
) -> PrivacyPlan:
    """Calibrate a private run and configure ``mechanism`` (phase 0 happens here).

    Order: q by the rule (or the user's), the class counts (declared public, or released once
    with σ₀ — an access to real data that the returned plan's history records), the rule's q
    capped so that no class expects more than ``max_expected_per_class`` real images per release
    (``q ≤ b / max_c N̂_c`` from the public or *released* counts: post-processing; a user's q is
    kept as given), δ (the user's,
    or the power of ten below 1/N for the public or released N — an upper confidence bound of
    the released total, so δ < 1/N holds with high probability), then σ such that the whole
    history spends at most ε. Last, with prototypes, the RDP accountant and ``feature_dim``: when
    the planned releases' :func:`bank_snr` (from the *released* counts) is below
    :data:`TOP_UP_SNR`, a prototype top-up takes part of their privacy curve
    (:func:`top_up_split`; the accounted history stays the plan's, which bounds both options).

    Args:
        privacy: the run's :class:`~securedc.config.PrivacyConfig`.
        mechanism: a :class:`~securedc.privacy.mechanism.GaussianMechanism` holding the data.
        releases: R.
        feature_dim: dimension of the distribution term's features (the bank's SNR rule); ``None``
            = no top-up.
        max_expected_per_class: the compute cap b of the rule's q (the run's ``batch_real``: a
            private release reads no more real images per class, in expectation, than a
            non-private one); ``None`` = no cap.
        ipc: images per class of S: the sub-class centres the prototype rounds may release
            (``privacy.prototype_clusters``; :mod:`securedc.privacy.centres`).
    """
    from securedc.config import default_delta  # config imports nothing from privacy

    eps, acc = float(privacy.epsilon), privacy.accountant
    if privacy.sample_rate is not None:
        q, q_source = float(privacy.sample_rate), "user"
    else:
        q = choose_sample_rate(
            epsilon=eps, delta=privacy.delta or PROVISIONAL_DELTA, releases=releases, accountant=acc
        )
        q_source = "signal-to-noise rule (securedc.privacy.calibration)"
    share = float(getattr(privacy, "prototype_share", 0.0))
    sigma0 = sigma_p = centres = None
    rounds = clusters = 1
    if share > 0:
        sigma_p = prototype_noise_multiplier(epsilon=eps, share=share, accountant=acc)
        prototypes, counts, centres, rounds, clusters = release_phase0_prototypes(
            mechanism, noise_multiplier=sigma_p, ipc=ipc, clusters=getattr(privacy, "prototype_clusters", 1),
            with_counts=privacy.counts != "public",
        )
        count_sigma = sigma_p if clusters == 1 else sigma_p * math.sqrt(rounds)  # K > 1: counts of round 1 only
        count_std = count_sigma * mechanism.prototype_count_factor if privacy.counts != "public" else 0.0
    elif privacy.counts == "public":
        prototypes, counts, count_std = None, mechanism.class_counts.double(), 0.0
    else:
        sigma0 = count_noise_multiplier(epsilon=eps, share=privacy.count_share)
        prototypes, counts, count_std = None, mechanism.release_counts(noise_multiplier=sigma0), sigma0
    if q_source != "user" and max_expected_per_class is not None:
        cap = min(1.0, float(max_expected_per_class) / max(1.0, float(counts.max())))
        if cap < q:
            q = cap
            q_source += f", capped at batch_real / max class count = {max_expected_per_class:g} expected per class"
    n_upper = float(counts.sum()) + 3 * count_std * math.sqrt(counts.numel())
    public_counts = privacy.counts == "public"
    if privacy.delta is not None:
        delta, delta_source = float(privacy.delta), "user"
    else:
        delta = default_delta(max(1, math.ceil(n_upper)))
        delta_source = "power of ten below 1/N (N " + ("public" if public_counts else "released, upper bound") + ")"
    prefix = [(s0, 1.0, 1) for s0 in (sigma0,) if s0 is not None]
    if sigma_p is not None:
        prefix.append((sigma_p * math.sqrt(rounds), 1.0, rounds))
    sigma = calibrate_noise(
        target_epsilon=eps, target_delta=delta, sample_rate=q, steps=releases, accountant=acc, prefix=prefix
    )
    sigma_release = sigma_top = snr = None
    if sigma_p is not None and feature_dim and acc == "rdp":
        snr = bank_snr(sample_rate=q, noise_multiplier=sigma, releases=releases, min_count=float(counts.min()),
                       feature_dim=feature_dim)
        if snr < TOP_UP_SNR and getattr(privacy, "prototype_top_up", True):
            sigma_release, sigma_top = top_up_split(noise_multiplier=sigma, sample_rate=q, releases=releases)
            prototypes, released = mechanism.top_up_prototypes(noise_multiplier=sigma_top)
            counts = released if released is not None else counts
    mechanism.configure(sample_rate=q, noise_multiplier=sigma_release or sigma, expected_counts=counts * q,
                        accounted_noise_multiplier=sigma)
    return PrivacyPlan(
        target_epsilon=eps,
        delta=delta,
        delta_source=delta_source,
        sample_rate=q,
        sample_rate_source=q_source,
        noise_multiplier=sigma,
        releases=releases,
        counts="public" if public_counts else "released",
        count_noise_multiplier=sigma0,
        prototype_noise_multiplier=sigma_p,
        prototype_rounds=rounds,
        prototype_clusters=clusters,
        accountant=acc,
        estimated_counts=tuple(float(c) for c in counts),
        prototypes=prototypes,
        centres=centres,
        release_noise_multiplier=sigma_release,
        top_up_noise_multiplier=sigma_top,
        bank_snr=snr,
    )


def release_phase0_prototypes(
    mechanism: Any, *, noise_multiplier: float, ipc: int, clusters: int | str, with_counts: bool
) -> tuple[Any, Any, Any, int, int]:
    """The prototype share's releases: class means, then sub-class centres or re-released class means.

    With ``clusters == 1`` one release at σ_p (the class means). Otherwise
    :data:`~securedc.privacy.centres.PROTOTYPE_ROUNDS` = L rounds at ``σ_p·sqrt(L)``: the class means
    (with the counts unless public), then either ``L − 1`` DP Lloyd rounds releasing K sub-class
    centres per class (``clusters`` given as a number, or ``"auto"`` and
    :func:`~securedc.privacy.centres.choose_clusters` says so from the released counts), or ``L − 1``
    further class-mean releases combined by inverse variance (exactly one release at σ_p).

    Returns:
        ``(class means [C, *shape], counts [C] float64 (released, else public), centres
        [C, K, *shape] or None, L, K)``.
    """
    from securedc.privacy.centres import PROTOTYPE_ROUNDS, choose_clusters, pooled_dim

    rounds = 1 if clusters == 1 else PROTOTYPE_ROUNDS
    sigma = noise_multiplier * math.sqrt(rounds)
    prototypes, released = mechanism.release_prototypes(noise_multiplier=sigma, with_counts=with_counts)
    counts = released if released is not None else mechanism.class_counts.double()
    k = 1
    if rounds > 1:
        k = int(clusters) if clusters != "auto" else choose_clusters(
            ipc, min_count=float(counts.min()), noise_multiplier=sigma, dim=pooled_dim(mechanism.image_shape))
    if k > 1:
        centres = mechanism.release_centres(noise_multiplier=sigma, clusters=k, rounds=rounds - 1)
        return prototypes, counts, centres, rounds, k
    for _ in range(rounds - 1):
        prototypes, released = mechanism.repeat_prototypes(noise_multiplier=sigma)
        counts = released if released is not None else counts
    return prototypes, counts, None, rounds, 1
