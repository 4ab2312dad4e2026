"""Certification gate: audit results + a policy → pass/fail per gate, with reasons.

A release is *certified* when every applicable gate passes. The default
:class:`Policy` encodes the issue's gates:

========================  ==========================================================  =========
gate                      passes when                                                 default
========================  ==========================================================  =========
``utility``               non-private: condensed accuracy ≥ random-real-subset         0.01
                          accuracy − ``utility_margin``; private (finite ε):
                          condensed accuracy ≥ accuracy of the DP prototype baseline   0.02
                          of the same (ε, δ) − ``private_utility_margin``
``mia-tpr``               MIA TPR at 1 % FPR, upper 95 % CI ≤ threshold                0.15
``mia-auc``               MIA ROC AUC (best attack) ≤ threshold                        0.60
``canary``                canary ε lower bound ε̂ ≤ claimed ε                          —
``robustness-sanity``     every attack sanity check passes (only with ``--adv-eps``)   —
``robustness-pgd``        PGD accuracy of S ≥ baseline's − margin (``--adv-eps``;      margin 0
                          both trained by ``robust_protocol``, default standard);
                          the baseline is the random real subset, for a private
                          release the DP prototype baseline of the same (ε, δ)
========================  ==========================================================  =========

Why two utility rules: a random real subset publishes members, so it is no alternative to a DP
release and comparing against it would refuse every private release at small ε for a cost that
is the price of privacy. The fair question is whether condensation beats the simplest release
the same budget buys — the per-class mean images released once at (ε, δ)
(:mod:`securedc.privacy.baseline`; each evaluation model trains on its own draw, so the reference
is the baseline's expected accuracy); the gap to the random real subset is reported beside it.
When the release's own prototypes carry almost the whole budget (noise multiplier within 10 % of
a single full-budget release's) — the low-SNR top-up regime, e.g. digits at ε = 1 — they are the baseline (*paired*: S started from that very draw, so the
draw-to-draw spread of ±2 points that refused one in three equivalent releases leaves the
comparison; :func:`~securedc.privacy.baseline.paired_prototype_baseline`).
``private_utility_baseline = "random"`` applies the non-private rule to private releases too.
The robustness gate of a private release follows the same reasoning
(``private_robust_baseline``): models trained on S and on the DP prototype baseline are
attacked the same way.

A missing audit fails its gate (a gate that cannot be checked is not passed),
except robustness gates when the run is not adversarial and the canary gate when
``require_canary = false``. Overrides come from a TOML file (``--policy FILE``)
whose top-level keys are :class:`Policy` field names; an unknown key is a
:class:`~securedc.errors.ConfigError` so a typo cannot silently weaken the policy.

Example:
    >>> from securedc.audits.base import AuditResult
    >>> r = {"utility": AuditResult("utility", {"condensed_acc": 0.9, "random_acc": 0.8})}
    >>> c = certify(r, Policy(require_mia=False, require_canary=False), claimed_epsilon=float("inf"),
    ...             adversarial=False)
    >>> c.certified, [g.name for g in c.gates]
    (True, ['utility'])
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from securedc.audits import names as N
from securedc.audits.base import AuditResult, json_ready
from securedc.errors import ConfigError

__all__ = ["Policy", "Gate", "Certification", "certify", "load_policy"]


@dataclass(frozen=True, kw_only=True)
class Policy:
    """Thresholds of the certification gates (defaults documented in the module docstring).

    Attributes:
        utility_margin: condensed accuracy may be at most this much below the random real
            subsets' (accuracy in [0, 1]; 0 = must match or beat it). Default 0.01: about two
            standard errors of the 3-model difference on digits, where non-private S and random
            subsets tie (93.7 vs 93.9 %, 2026-12-08): with 0 the same release was certified or
            refused by the evaluation's noise.
        private_utility_baseline: reference of the utility gate for a private release:
            ``"dp-prototypes"`` (the DP prototype baseline of the same budget) or ``"random"``
            (the random real subset, as for non-private releases, with ``utility_margin``).
        private_utility_margin: condensed accuracy of a private release may be at most this much
            below the DP prototype baseline's (default 0.02: about one standard deviation of the
            3-model evaluation).
        utility_all_architectures: require the utility gate on every evaluated architecture
            (cross-architecture), not only the first (the main evaluation model).
        require_utility: fail when the utility audit is missing.
        mia_max_tpr_at_1pct_fpr: bound on the upper 95 % CI of the best attack's TPR at 1 % FPR
            (chance is 0.01). The default 0.15 is sized for the quick audit: with ~135 non-member
            targets (digits) a chance-level attack (measured: a DP ε=1 release, AUC 0.499) had an
            upper CI, maximised over six attack scores, of 0.12, so 0.05 would refuse releases for
            lack of evidence rather than for leakage; a release that copies ~20 % of its members
            scores ≥ 0.19. Tighten it (e.g. 0.05) when auditing with thousands of targets.
        mia_max_auc: bound on the best attack's ROC AUC (chance is 0.5).
        require_mia: fail when the MIA audit is missing.
        require_canary: fail when the canary audit is missing.
        canary_slack: ε̂ may exceed the claimed ε by this much (0 = strict; the bound is already a
            one-sided 95 % lower confidence bound).
        robust_metric: metric of the robustness audit compared with the baseline's
            (``pgd20_acc``, ``pgd100_acc`` or ``autoattack_acc``). The quick audit (the
            ``securedc condense`` default) measures FGSM and PGD-20 on every model; PGD-100 and
            AutoAttack on the baselines need a thorough audit, else the gate has nothing to
            compare with and fails.
        robust_margin: robust accuracy of S may be at most this much below the baseline's.
        robust_protocol: how the compared models are trained — ``"standard"`` (the evaluation
            protocol) or ``"adversarial"`` (the audit's PGD adversarial-training recipe); S and the
            random real subset are always trained the same way.
        private_robust_baseline: reference of the robustness gate for a private release:
            ``"dp-prototypes"`` (models trained on the DP prototype baseline of the same budget)
            or ``"random"`` (the random real subset, as for non-private releases).
        require_sanity_checks: with ``--adv-eps``, every robustness sanity check must pass.
    """

    utility_margin: float = 0.01
    private_utility_baseline: str = "dp-prototypes"
    private_utility_margin: float = 0.02
    utility_all_architectures: bool = False
    require_utility: bool = True
    mia_max_tpr_at_1pct_fpr: float = 0.15
    mia_max_auc: float = 0.60
    require_mia: bool = True
    require_canary: bool = True
    canary_slack: float = 0.0
    robust_metric: str = N.PGD20_ACC
    robust_margin: float = 0.0
    robust_protocol: str = "standard"
    private_robust_baseline: str = "dp-prototypes"
    require_sanity_checks: bool = True

    def problems(self) -> list[str]:
        out = []
        for name in ("utility_margin", "private_utility_margin", "canary_slack", "robust_margin"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 and math.isfinite(v)):
                out.append(f"policy {name} must be a finite number >= 0 (got {v!r})")
            elif name != "canary_slack" and v > 1:  # accuracies are fractions: 2 would switch the gate off
                out.append(f"policy {name} is a fraction of accuracy in [0, 1] (got {v!r}; 2 points is 0.02)")
        for name in ("mia_max_tpr_at_1pct_fpr", "mia_max_auc"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1):
                out.append(f"policy {name} must be in [0, 1] (got {v!r}); 1 disables the gate")
        for name in ("utility_all_architectures", "require_utility", "require_mia", "require_canary",
                     "require_sanity_checks"):
            if not isinstance(getattr(self, name), bool):
                out.append(f"policy {name} must be true or false (got {getattr(self, name)!r})")
        if self.robust_metric not in N.ROBUST_METRICS:
            out.append(f"policy robust_metric must be one of {', '.join(N.ROBUST_METRICS)} "
                       f"(got {self.robust_metric!r})")
        for name in ("private_utility_baseline", "private_robust_baseline"):
            if getattr(self, name) not in ("dp-prototypes", "random"):
                out.append(f"policy {name} must be 'dp-prototypes' or 'random' (got {getattr(self, name)!r})")
        if self.robust_protocol not in ("standard", "adversarial"):
            out.append(f"policy robust_protocol must be 'standard' or 'adversarial' (got {self.robust_protocol!r})")
        return out

    def validate(self) -> "Policy":
        problems = self.problems()
        if problems:
            raise ConfigError("; ".join(problems))
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_policy(path: str | Path | None = None, **overrides: Any) -> Policy:
    """The default :class:`Policy`, updated from a TOML file and then ``overrides``.

    Args:
        path: TOML file with top-level keys named like :class:`Policy` fields
            (a ``[policy]`` table is accepted too), e.g. ``mia_max_auc = 0.55``.
        **overrides: field values applied last.

    Raises:
        ConfigError: unreadable/invalid TOML, an unknown key, or a value out of range.
    """
    values: dict[str, Any] = {}
    if path is not None:
        file = Path(path)
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"--policy {str(file)!r} not found; give a TOML file") from None
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"--policy {str(file)!r} cannot be read: {err}") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"--policy {str(file)!r} is not valid TOML: {err}") from None
        if set(data) == {"policy"} and isinstance(data["policy"], dict):
            data = data["policy"]
        values.update(data)
    values.update(overrides)
    known = {f.name for f in dataclasses.fields(Policy)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown policy key(s) {unknown} in {path or 'overrides'}; valid keys: {sorted(known)}")
    for key, value in list(values.items()):
        if isinstance(value, int) and not isinstance(value, bool) and isinstance(getattr(Policy(), key), float):
            values[key] = float(value)
    return Policy(**values).validate()


@dataclass(frozen=True)
class Gate:
    """One pass/fail check.

    Attributes:
        name: gate id (``utility``, ``mia-tpr``, ``mia-auc``, ``canary``, ``robustness-sanity``,
            ``robustness-pgd``).
        passed: verdict.
        value: the measured number (``nan`` when the audit is missing).
        threshold: the bound it was compared with.
        reason: one plain-language sentence (shown in the report, the manifest and errors).
    """

    name: str
    passed: bool
    value: float
    threshold: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return json_ready(dataclasses.asdict(self))


@dataclass(frozen=True)
class Certification:
    """The verdict: certified iff every gate passed."""

    certified: bool
    gates: list[Gate] = field(default_factory=list)
    policy: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> list[Gate]:
        return [g for g in self.gates if not g.passed]

    @property
    def reasons(self) -> list[str]:
        """Reasons of the failed gates (what the manifest records for a forced export)."""
        return [f"{g.name}: {g.reason}" for g in self.failed]

    def to_dict(self) -> dict[str, Any]:
        return {"certified": self.certified, "gates": [g.to_dict() for g in self.gates], "policy": json_ready(self.policy)}


def _missing(name: str, audit: str) -> Gate:
    return Gate(name, False, math.nan, math.nan, f"the {audit} audit did not run, so this gate cannot be checked")


def _utility_gates(result: AuditResult | None, policy: Policy, claimed_epsilon: float) -> list[Gate]:
    if result is None:
        return [_missing("utility", "utility")] if policy.require_utility else []
    m = result.metrics
    if math.isfinite(claimed_epsilon) and policy.private_utility_baseline == "dp-prototypes":
        return [_private_utility_gate(m, policy, claimed_epsilon, paired=result.details.get("dp_baseline_kind") == "paired")]
    archs = result.details.get("architectures") or []
    pairs = [("", m.get(N.CONDENSED_ACC, math.nan), m.get(N.RANDOM_ACC, math.nan))]
    if policy.utility_all_architectures and archs:
        pairs = [(f"-{a}", m.get(N.per_architecture(N.CONDENSED_ACC, a), math.nan),
                  m.get(N.per_architecture(N.RANDOM_ACC, a), math.nan)) for a in archs]
    gates = []
    for suffix, cond, rnd in pairs:
        bound = rnd - policy.utility_margin
        ok = math.isfinite(cond) and math.isfinite(rnd) and cond >= bound
        arch = suffix[1:] or (archs[0] if archs else "main model")
        reason = (f"condensed set trains {arch} to {100 * cond:.1f} % test accuracy vs {100 * rnd:.1f} % for a "
                  f"random real subset of the same size (needs ≥ {100 * bound:.1f} %)")
        gates.append(Gate(f"utility{suffix}", ok, cond, bound, reason))
    return gates


def _private_utility_gate(m: dict[str, float], policy: Policy, claimed_epsilon: float, *, paired: bool = False) -> Gate:
    cond, base = m.get(N.CONDENSED_ACC, math.nan), m.get(N.DP_BASELINE_ACC, math.nan)
    rnd = m.get(N.RANDOM_ACC, math.nan)
    bound = base - policy.private_utility_margin
    ok = math.isfinite(cond) and math.isfinite(base) and cond >= bound
    from securedc.privacy.baseline import PAIRED_SIGMA_TOLERANCE

    which = (f"; paired: the baseline is the release's own DP prototypes (noise within "
             f"{100 * PAIRED_SIGMA_TOLERANCE:g} % of a single release of the whole budget), so both sides share "
             "one noise draw" if paired else "")
    rule = (f"rule: a private release must reach the DP prototype baseline of the same budget (per-class "
            f"mean images released once at epsilon {claimed_epsilon:g}) - margin {policy.private_utility_margin:g}"
            f"{which}")
    if not math.isfinite(base):
        return Gate("utility", False, cond, math.nan, f"the DP prototype baseline was not measured; {rule}")
    reason = (f"condensed set trains the main model to {100 * cond:.1f} % test accuracy vs {100 * base:.1f} % "
              f"for the DP prototype baseline (needs ≥ {100 * bound:.1f} %; a random real subset, not "
              f"private, reaches {100 * rnd:.1f} %); {rule}")
    return Gate("utility", ok, cond, bound, reason)


def _mia_gates(result: AuditResult | None, policy: Policy) -> list[Gate]:
    if result is None:
        return [_missing("mia-tpr", "membership-inference"), _missing("mia-auc", "membership-inference")] \
            if policy.require_mia else []
    m = result.metrics
    tpr = m.get(N.ci_high(N.TPR_AT_1PCT_FPR), m.get(N.TPR_AT_1PCT_FPR, math.nan))
    auc = m.get(N.AUC, math.nan)
    tpr_ok = math.isfinite(tpr) and tpr <= policy.mia_max_tpr_at_1pct_fpr
    auc_ok = math.isfinite(auc) and auc <= policy.mia_max_auc
    return [
        Gate("mia-tpr", tpr_ok, tpr, policy.mia_max_tpr_at_1pct_fpr,
             f"membership inference: TPR at 1 % FPR is at most {100 * tpr:.1f} % (upper 95 % CI; chance 1 %), "
             f"allowed ≤ {100 * policy.mia_max_tpr_at_1pct_fpr:.1f} %"),
        Gate("mia-auc", auc_ok, auc, policy.mia_max_auc,
             f"membership inference: best attack AUC {auc:.3f} (chance 0.5), allowed ≤ {policy.mia_max_auc:.2f}"),
    ]


def _canary_gates(result: AuditResult | None, policy: Policy, claimed_epsilon: float) -> list[Gate]:
    if result is None:
        return [_missing("canary", "canary")] if policy.require_canary else []
    eps_hat = result.metrics.get(N.EPSILON_LOWER_BOUND, math.nan)
    ceiling = result.metrics.get(N.EPSILON_CEILING, math.nan)
    bound = claimed_epsilon + policy.canary_slack
    ok = math.isfinite(eps_hat) and eps_hat <= bound
    if math.isinf(claimed_epsilon):
        reason = f"not private: canaries show empirical ε ≥ {eps_hat:.2f} (no DP claim to violate)"
    elif ok and math.isfinite(ceiling) and ceiling <= bound:
        reason = (f"empirical ε lower bound {eps_hat:.2f} ≤ claimed ε {claimed_epsilon:.2f}, but INCONCLUSIVE: "
                  f"with {result.metrics.get('guesses', math.nan):.0f} guesses of "
                  f"{result.metrics.get(N.NUM_CANARIES, math.nan):.0f} canaries this audit can show at most "
                  f"ε̂ = {ceiling:.2f}, so this gate cannot fail at ε = {claimed_epsilon:g}. More canaries raise the "
                  "ceiling slowly (--audit-canaries 1000: about 4.2; one-run audits need ~10⁴ canaries to reach 8), "
                  "so treat it as a check of small ε only")
    elif ok:
        reason = f"empirical ε lower bound {eps_hat:.2f} ≤ claimed ε {claimed_epsilon:.2f}"
    else:
        reason = (f"empirical ε lower bound {eps_hat:.2f} EXCEEDS the claimed ε {claimed_epsilon:.2f}: "
                  "the DP guarantee is violated (a privacy bug)")
    return [Gate("canary", ok, eps_hat, bound, reason)]


def _robustness_gates(result: AuditResult | None, policy: Policy, private: bool) -> list[Gate]:
    if result is None:
        return [_missing("robustness-pgd", "robustness")]
    gates = []
    if policy.require_sanity_checks:
        checks = result.details.get("sanity_checks") or []
        failed = [c.get("name", "?") for c in checks if not c.get("passed")]
        ok = bool(checks) and not failed
        reason = (f"all {len(checks)} attack sanity checks pass" if ok else
                  ("no sanity checks were reported" if not checks else
                   f"attack sanity checks failed: {', '.join(map(str, failed))} (robust accuracy may be overstated)"))
        gates.append(Gate("robustness-sanity", ok, float(len(checks) - len(failed)), float(len(checks)), reason))
    metric = policy.robust_metric
    if policy.robust_protocol == "adversarial":
        from securedc.audits.robustness import at_metric

        metric = at_metric(metric)
    dp = private and policy.private_robust_baseline == "dp-prototypes"
    value = result.metrics.get(metric, math.nan)
    base = result.metrics.get(N.dp_baseline(metric) if dp else N.baseline(metric), math.nan)
    bound = base - policy.robust_margin
    ok = math.isfinite(value) and math.isfinite(base) and value >= bound
    label = policy.robust_metric.replace("_acc", "").upper()
    which = "DP prototype baseline of the same budget" if dp else "random real subset"
    rule = (f"rule: {label} accuracy of models trained on S ({policy.robust_protocol} training) >= that of the "
            f"{which} trained the same way - margin {policy.robust_margin:g}")
    if not math.isfinite(base):
        hint = ("; the quick audit does not train the DP prototype baseline adversarially: use a thorough audit "
                "(AuditConfig(robustness_quick=False)), robust_protocol = \"standard\" or private_robust_baseline = "
                "\"random\"" if dp and policy.robust_protocol == "adversarial" else "")
        reason = (f"{label} accuracy of S is {100 * value:.1f} % but no baseline was measured to compare with"
                  f"{hint}; {rule}")
    else:
        rnd = result.metrics.get(N.baseline(metric), math.nan)
        aside = (f"; a random real subset, not private, reaches {100 * rnd:.1f} %"
                 if dp and math.isfinite(rnd) else "")
        reason = (f"{label} accuracy of models trained on S {100 * value:.1f} % vs {which} "
                  f"{100 * base:.1f} % (needs ≥ {100 * bound:.1f} %{aside}); {rule}")
    gates.append(Gate("robustness-pgd", bool(ok), value, bound, reason))
    return gates


def certify(
    results: dict[str, AuditResult],
    policy: Policy | None = None,
    *,
    claimed_epsilon: float,
    adversarial: bool,
) -> Certification:
    """Apply ``policy`` to audit ``results`` (keyed by audit name).

    Args:
        results: ``{"utility": …, "mia": …, "canary": …, "robustness": …}``; missing keys
            mean the audit did not run.
        policy: thresholds (default :class:`Policy`).
        claimed_epsilon: ε of the release (``inf`` when not private).
        adversarial: the release claims robustness (``--adv-eps`` > 0): robustness gates apply.

    Returns:
        :class:`Certification` with one :class:`Gate` per check.
    """
    policy = (policy or Policy()).validate()
    gates = _utility_gates(results.get(N.UTILITY), policy, claimed_epsilon)
    gates += _mia_gates(results.get(N.MIA), policy)
    gates += _canary_gates(results.get(N.CANARY), policy, claimed_epsilon)
    if adversarial:
        gates += _robustness_gates(results.get(N.ROBUSTNESS), policy, math.isfinite(claimed_epsilon))
    return Certification(certified=all(g.passed for g in gates), gates=gates, policy=policy.to_dict())
