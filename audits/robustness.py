"""Robustness audit: adversarial accuracy of models trained on a condensed set, with gradient-masking checks.

Fresh models are trained on the condensed set (and on a random real subset of the
same size, the baseline) with :func:`securedc.evaluate.train_model`; each is
attacked on real test images with torchattacks: FGSM, PGD-20, PGD-100 with random
restarts (per-example worst case) and the standard AutoAttack suite built from its
parts (APGD-CE, APGD-T, FAB-T, Square) with the original settings — torchattacks'
own ``AutoAttack(version="standard")`` runs APGD with 10 steps (torchattacks issue
#196). Sanity checks against gradient masking (Athalye et al. 2018; Carlini et al.
2019) are reported pass/fail; ``passed`` is True only when all of them pass.

References:
    Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015.
    Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018.
    Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
    parameter-free attacks", ICML 2020 (AutoAttack).
    Athalye, Carlini & Wagner, "Obfuscated Gradients Give a False Sense of Security", ICML 2018.
    Carlini et al., "On Evaluating Adversarial Robustness", arXiv:1902.06705, 2019.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from securedc.audits import names as N
from securedc.audits.base import Audit, AuditResult, register_audit
from securedc.audits.context import AuditContext
from securedc.concurrency import run_concurrently
from securedc.config import EvalConfig, default_pgd_step
from securedc.errors import ConfigError, DataError
from securedc.evaluate import train_model
from securedc.robust import PGDRecipe

__all__ = ["AttackSettings", "RobustnessAudit", "at_metric", "attack_subsample", "audit_model", "autoattack_accuracy", "run_robustness_audit"]

logger = logging.getLogger(__name__)

AttackFn = Callable[[nn.Module, Tensor, Tensor], Tensor]

#: real test images attacked by the quick audit of a release (one attack batch; the compared
#: numbers are paired: S and the baselines are attacked on the same images).
QUICK_MAX_TEST = 250


@dataclass(frozen=True, kw_only=True)
class AttackSettings:
    """Attack budgets. :meth:`standard` = original AutoAttack settings; :meth:`quick` = reduced (CPU).

    Attributes:
        pgd_restarts: random restarts of PGD-20 (per-example worst case).
        pgd100_restarts: random restarts of PGD-100.
        apgd_steps: APGD-CE and APGD-T iterations.
        target_classes: target classes of APGD-T and FAB-T.
        fab_steps: FAB-T iterations.
        square_queries: Square attack queries.
        tolerance: slack (accuracy points / 100) allowed by the sanity checks.
        large_eps: the radius at which accuracy must be ≈ 0.
    """

    pgd_restarts: int = 5
    pgd100_restarts: int = 5
    apgd_steps: int = 100
    target_classes: int = 9
    fab_steps: int = 100
    square_queries: int = 5000
    tolerance: float = 0.02
    large_eps: float = 0.5

    @classmethod
    def standard(cls) -> "AttackSettings":
        return cls()

    @classmethod
    def quick(cls) -> "AttackSettings":
        return cls(pgd_restarts=2, pgd100_restarts=1, apgd_steps=25, target_classes=3, fab_steps=25,
                   square_queries=500)

    def describe(self) -> str:
        return (
            f"PGD-20 restarts={self.pgd_restarts}, PGD-100 restarts={self.pgd100_restarts}; AutoAttack = APGD-CE({self.apgd_steps} steps, 1 restart) -> "
            f"APGD-T({self.apgd_steps} steps, {self.target_classes} target classes) -> "
            f"FAB-T({self.fab_steps} steps, {self.target_classes} target classes) -> Square({self.square_queries} queries)"
        )


# --------------------------------------------------------------------------- helpers
class _Connected(nn.Module):
    """Adds ``0 * sum(x)`` to the logits so a model whose graph does not reach its input
    (e.g. a hard threshold ``(x > 0.5).float()``) yields zero input gradients instead of an
    autograd error; the logits are unchanged (exactly), so attacks see the same model."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(x)
        return out + 0.0 * x.sum() if x.requires_grad else out


def _device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


@torch.no_grad()
def _correct(model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int) -> Tensor:
    out = []
    for s in range(0, x.shape[0], batch_size):
        out.append(model(x[s : s + batch_size]).argmax(1) == y[s : s + batch_size])
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


def _run(attack_fn: AttackFn, model: nn.Module, x: Tensor, y: Tensor, *, seed: int | None, batch_size: int) -> Tensor:
    """Run an attack in batches. ``seed`` given: each batch runs inside ``fork_rng`` from
    ``manual_seed(seed + 7919 i)`` (AutoAttack's parts reseed / draw from the global RNG);
    ``None``: the attack draws no global randomness (FGSM, keyed PGD), so models can be attacked
    side by side."""
    outs = []
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.enable_grad())
        if seed is not None:
            stack.enter_context(torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []))
        for i, s in enumerate(range(0, x.shape[0], batch_size)):
            if seed is not None:
                torch.manual_seed(seed + 7919 * i)
            outs.append(attack_fn(model, x[s : s + batch_size], y[s : s + batch_size]).detach())
    return torch.cat(outs) if outs else x


def _still_robust(
    model: nn.Module, attack_fn: AttackFn, x: Tensor, y: Tensor, mask: Tensor, *, seed: int | None, batch_size: int
) -> Tensor:
    """Update the per-example robust mask with one attack run on the still-robust examples."""
    mask = mask.clone()
    idx = mask.nonzero().flatten()
    if idx.numel() == 0:
        return mask
    adv = _run(attack_fn, model, x[idx], y[idx], seed=seed, batch_size=batch_size)
    mask[idx] = _correct(model, adv, y[idx], batch_size=batch_size)
    return mask


def _pgd(eps: float, steps: int, seed: int) -> AttackFn:
    """torchattacks PGD (step eps/4) with per-example keyed random starts (:class:`~securedc.keyed_pgd.KeyedPGD`)."""
    from securedc.keyed_pgd import KeyedPGD

    return lambda m, x, y: KeyedPGD(m, eps=eps, alpha=default_pgd_step(eps), steps=steps, seed=seed)(x, y)


def _pgd_restarts(model, x, y, clean, *, eps, steps, restarts, seed, batch_size) -> list[float]:
    """Robust accuracy after each random restart (per-example worst case so far)."""
    mask, out = clean, []
    for r in range(restarts):
        mask = _still_robust(model, _pgd(eps, steps, seed + 1000 * r), x, y, mask, seed=None, batch_size=batch_size)
        out.append(float(mask.float().mean()))
    return out


def _pgd_acc(model, x, y, clean, *, eps, steps, restarts, seed, batch_size) -> float:
    return _pgd_restarts(model, x, y, clean, eps=eps, steps=steps, restarts=restarts, seed=seed,
                         batch_size=batch_size)[-1]


def _autoattack(model, x, y, clean, *, eps, num_classes, settings: AttackSettings, seed, batch_size):
    """Standard AutoAttack order; each attack runs on the examples no earlier attack broke."""
    import torchattacks  # lazy: see securedc.keyed_pgd

    k = min(settings.target_classes, num_classes - 1)

    def apgd(m, a, b):
        return torchattacks.APGD(m, norm="Linf", eps=eps, steps=settings.apgd_steps, n_restarts=1, loss="ce", seed=seed)(a, b)

    def apgdt(m, a, b):
        atk = torchattacks.APGDT(m, norm="Linf", eps=eps, steps=settings.apgd_steps, n_restarts=1, n_classes=num_classes, seed=seed)
        atk.n_target_classes = k
        return atk(a, b)

    def fab(m, a, b):
        atk = torchattacks.FAB(m, norm="Linf", eps=eps, steps=settings.fab_steps, n_restarts=1,
                               multi_targeted=True, n_classes=num_classes, seed=seed)
        atk.n_target_classes = k
        return atk(a, b)

    def square(m, a, b):
        return torchattacks.Square(m, norm="Linf", eps=eps, n_queries=settings.square_queries, n_restarts=1, seed=seed)(a, b)

    mask, broken = clean, {}
    for name, fn in (("apgd-ce", apgd), ("apgd-t", apgdt), ("fab-t", fab), ("square", square)):
        before = int(mask.sum())
        mask = _still_robust(model, fn, x, y, mask, seed=seed, batch_size=batch_size)
        broken[name] = before - int(mask.sum())
    return float(mask.float().mean()), broken


def autoattack_accuracy(
    model: nn.Module,
    test_images: Tensor,
    test_labels: Tensor,
    *,
    eps: float,
    num_classes: int,
    settings: AttackSettings | None = None,
    seed: int = 0,
    batch_size: int = 250,
) -> tuple[float, dict[str, int]]:
    """Robust accuracy of ``model`` under AutoAttack alone (APGD-CE → APGD-T → FAB-T → Square).

    The attack :func:`audit_model` runs with its sanity suite, for callers that want it without
    the suite (e.g. a benchmark attacking many models). Its parts draw from the global RNG inside
    ``fork_rng`` blocks seeded from ``seed``: run one model at a time for reproducible numbers.

    Args:
        model: classifier (logits; inputs in [0, 1]); it is put in eval mode.
        test_images, test_labels: real test data (already subsampled).
        eps: L∞ radius in pixel space.
        num_classes: C.
        settings: attack budgets (default :meth:`AttackSettings.standard`; reduced budgets give
            upper bounds on robust accuracy).
        seed: seeds every attack.
        batch_size: attack batch size.

    Returns:
        ``(accuracy, {attack: examples it broke})``.

    References:
        Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
        parameter-free attacks", ICML 2020, arXiv:2003.01690.
    """
    model.eval()
    net = _Connected(model).eval()
    dev = _device(net)
    x, y = test_images.to(dev).float(), test_labels.to(dev)
    clean = _correct(net, x, y, batch_size=batch_size)
    return _autoattack(net, x, y, clean, eps=eps, num_classes=num_classes, settings=settings or AttackSettings.standard(),
                       seed=seed, batch_size=batch_size)


def _input_gradients(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    with torch.enable_grad():
        xi = x.detach().clone().requires_grad_(True)
        loss = F.cross_entropy(model(xi), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, xi)
    return grad.flatten(1).abs().sum(1)


# --------------------------------------------------------------------------- one model
def audit_model(
    model: nn.Module,
    test_images: Tensor,
    test_labels: Tensor,
    *,
    eps: float,
    num_classes: int,
    seed: int = 0,
    autoattack: bool = True,
    settings: AttackSettings | None = None,
    eps_grid: list[float] | None = None,
    batch_size: int = 250,
    sanity: bool = True,
) -> AuditResult:
    """Attack one trained model and run the gradient-masking sanity checks.

    Args:
        model: classifier (logits; inputs in [0, 1]); it is put in eval mode.
        test_images, test_labels: real test data (already subsampled).
        eps: L∞ radius of the headline numbers.
        num_classes: C.
        seed: seeds every attack (the global RNG is left untouched).
        autoattack: run the AutoAttack suite.
        settings: attack budgets (default :meth:`AttackSettings.standard`).
        eps_grid: radii of the accuracy-vs-eps curve (PGD-20); default ``[0, eps/2, eps, 2 eps, large_eps]``.
        batch_size: attack batch size.
        sanity: run PGD-100, AutoAttack, the accuracy-vs-eps curve and the sanity checks; ``False``
            measures the headline numbers only (clean, FGSM, PGD-20 with restarts, uniform noise) —
            the quick audit runs the full suite on one model per training set and recipe.

    Returns:
        :class:`AuditResult` with metrics ``clean_acc, fgsm_acc, pgd20_acc, noise_acc[, pgd100_acc,
        autoattack_acc]`` and ``details["sanity_checks"]`` (empty without ``sanity``).
    """
    settings = settings or AttackSettings.standard()
    if not (0 < eps <= 1):
        raise ConfigError(f"robustness audit eps must be in (0, 1] (got {eps}); e.g. 8/255")
    t0 = time.perf_counter()
    original = model
    was_training = original.training
    original.eval()
    model = _Connected(original).eval()
    dev = _device(model)
    x, y = test_images.to(dev).float(), test_labels.to(dev)
    bs = batch_size
    tol = settings.tolerance
    clean = _correct(model, x, y, batch_size=bs)
    n = max(1, x.shape[0])
    m: dict[str, float] = {N.CLEAN_ACC: float(clean.float().mean())}

    import torchattacks  # lazy: see securedc.keyed_pgd

    fgsm = lambda mm, a, b: torchattacks.FGSM(mm, eps=eps)(a, b)  # noqa: E731
    # FGSM (deterministic, one gradient per example) on every example, wrong ones included: robust accuracy
    # counts the clean-correct ones; the rest show a masked gradient that *fixes* mistakes (robust_le_clean)
    fgsm_correct = _still_robust(model, fgsm, x, y, torch.ones_like(clean), seed=None, batch_size=bs)
    m[N.FGSM_ACC] = float((fgsm_correct & clean).float().mean())
    fgsm_all = float(fgsm_correct.float().mean())
    pgd20 = _pgd_restarts(model, x, y, clean, eps=eps, steps=20, restarts=max(1, settings.pgd_restarts), seed=seed,
                          batch_size=bs)
    m[N.PGD20_ACC] = pgd20[-1]
    gen = torch.Generator().manual_seed(seed)
    noise = (torch.rand(x.shape, generator=gen).to(dev) * 2 - 1) * eps
    m[N.NOISE_ACC] = float(_correct(model, (x + noise).clamp(0, 1), y, batch_size=bs).float().mean())
    if not sanity:
        return AuditResult(name=N.ROBUSTNESS, metrics=m, passed=None,
                           details={"sanity_checks": [], "autoattack_broken": {}, "num_test": int(x.shape[0]), "eps": eps},
                           seconds=time.perf_counter() - t0, notes=["headline attacks only (no sanity checks)"])
    m[N.PGD100_ACC] = _pgd_acc(model, x, y, clean, eps=eps, steps=100, restarts=settings.pgd100_restarts,
                               seed=seed + 1, batch_size=bs)
    pgd_single = pgd20[0]  # PGD-20 with one restart (the first of the headline run)
    broken: dict[str, int] = {}
    if autoattack:
        m[N.AUTOATTACK_ACC], broken = _autoattack(
            model, x, y, clean, eps=eps, num_classes=num_classes, settings=settings, seed=seed, batch_size=bs
        )

    grid = sorted(set(eps_grid if eps_grid is not None else [0.0, eps / 2, eps, min(1.0, 2 * eps), settings.large_eps]))
    curve = []
    for e in grid:
        if e == 0:
            curve.append(m[N.CLEAN_ACC])
        elif e == eps:
            curve.append(pgd_single)
        else:
            curve.append(_pgd_acc(model, x, y, clean, eps=e, steps=20, restarts=1, seed=seed + 2, batch_size=bs))

    grads = _input_gradients(model, x[:bs], y[:bs])
    frac_nonzero = float((grads > 1e-12).float().mean())
    with torch.no_grad():
        out1, out2 = model(x[:bs]), model(x[:bs])
    deterministic = bool(torch.equal(out1, out2))

    checks = []

    def check(name: str, passed: bool, detail: str) -> None:
        checks.append({"name": name, "passed": bool(passed), "detail": detail})

    check("robust_le_clean", fgsm_all <= m[N.CLEAN_ACC] + tol,
          f"FGSM accuracy on every test image (attacked whether or not clean-correct) {fgsm_all:.4f} vs clean "
          f"{m[N.CLEAN_ACC]:.4f}")
    increases = [(grid[i + 1], curve[i + 1] - curve[i]) for i in range(len(grid) - 1) if curve[i + 1] > curve[i] + tol]
    check("monotone_in_eps", not increases,
          f"PGD-20 accuracy over eps {[round(e, 4) for e in grid]}: {[round(a, 4) for a in curve]}")
    large = curve[grid.index(settings.large_eps)] if settings.large_eps in grid else curve[-1]
    check("zero_at_large_eps", large <= 0.05, f"PGD-20 accuracy {large:.4f} at eps {settings.large_eps} (must be <= 0.05)")
    check("more_steps_not_better", m[N.PGD100_ACC] <= pgd_single + tol,
          f"PGD-100 ({settings.pgd100_restarts} restart(s)) {m[N.PGD100_ACC]:.4f} vs PGD-20 (1 restart) {pgd_single:.4f}")
    if autoattack:
        check("autoattack_le_pgd", m[N.AUTOATTACK_ACC] <= min(m[N.PGD20_ACC], m[N.PGD100_ACC]) + tol,
              f"AutoAttack {m[N.AUTOATTACK_ACC]:.4f} vs PGD {min(m[N.PGD20_ACC], m[N.PGD100_ACC]):.4f}")
        sq = broken.get("square", 0) / n
        check("blackbox_not_better", sq <= tol,
              f"Square broke {broken.get('square', 0)} of {n} examples that the white-box attacks missed")
    drop_pgd, drop_noise = m[N.CLEAN_ACC] - m[N.PGD20_ACC], m[N.CLEAN_ACC] - m[N.NOISE_ACC]
    check("noise_weaker_than_pgd", drop_noise <= drop_pgd and (drop_noise < drop_pgd or drop_pgd <= tol),
          f"accuracy drop: uniform noise {drop_noise:.4f}, PGD-20 {drop_pgd:.4f}")
    check("nonzero_input_gradients", frac_nonzero >= 0.9,
          f"{100 * frac_nonzero:.1f}% of examples have a non-zero input gradient")
    check("eval_and_deterministic", deterministic,
          f"attacked in eval mode (set by the audit; the model arrived with training={was_training}); two forward "
          f"passes equal={deterministic}")
    return AuditResult(
        name=N.ROBUSTNESS,
        metrics=m,
        passed=all(c["passed"] for c in checks),
        details={
            "sanity_checks": checks,
            "acc_vs_eps": {"eps": grid, "accuracy": curve},
            "autoattack_broken": broken,
            "input_gradient_nonzero_fraction": frac_nonzero,
            "num_test": int(x.shape[0]),
            "eps": eps,
        },
        seconds=time.perf_counter() - t0,
        notes=[settings.describe()],
    )


# --------------------------------------------------------------------------- condensed vs baseline
def at_metric(metric: str) -> str:
    """Key of a robustness metric under the adversarial-training protocol (``at_pgd20_acc``).

    Example:
        >>> at_metric("pgd20_acc")
        'at_pgd20_acc'
    """
    return f"at_{metric}"


def attack_subsample(x: Tensor, y: Tensor, max_test: int, seed: int) -> tuple[Tensor, Tensor]:
    """The seeded subsample of ``max_test`` test examples the robustness audit attacks (all if fewer)."""
    if x.shape[0] <= max_test:
        return x, y
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:max_test]
    return x[idx], y[idx]


def _aggregate(results: list[AuditResult]) -> tuple[dict[str, float], list[dict[str, Any]], list[float]]:
    """Mean of each metric over the models that measured it; sanity checks and the accuracy-vs-eps
    curve over the models that ran the full suite (model indices kept in the check details)."""
    keys = dict.fromkeys(k for r in results for k in r.metrics)
    metrics = {k: statistics.fmean(r.metrics[k] for r in results if k in r.metrics) for k in keys}
    full = [(j, r) for j, r in enumerate(results) if r.details["sanity_checks"]]
    checks = []
    for i, c in enumerate(full[0][1].details["sanity_checks"] if full else []):
        per = [(j, r.details["sanity_checks"][i]) for j, r in full]
        failing = [j for j, p in per if not p["passed"]]
        detail = next(p["detail"] for j, p in per if j == failing[0]) if failing else per[0][1]["detail"]
        which = "all models" if len(full) == len(results) else f"model(s) {[j for j, _ in full]}"
        checks.append({"name": c["name"], "passed": not failing,
                       "detail": (f"fails for model(s) {failing}: " if failing else f"{which}; e.g. ") + detail})
    curves = [r.details["acc_vs_eps"]["accuracy"] for _, r in full]
    return metrics, checks, [statistics.fmean(col) for col in zip(*curves)]


def run_robustness_audit(
    images: Tensor,
    labels: Tensor,
    test_images: Tensor,
    test_labels: Tensor,
    *,
    num_classes: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    eps: float,
    eval_config: EvalConfig,
    baseline: tuple[Tensor, Tensor] | None = None,
    dp_baseline: Sequence[tuple[Tensor, Tensor]] | None = None,
    seed: int = 0,
    max_test: int = 1000,
    autoattack: bool = True,
    quick: bool = False,
    device: str | torch.device = "cpu",
    protocols: tuple[str, ...] = ("standard", "adversarial"),
    recipe: PGDRecipe | None = None,
    soft_labels: Tensor | None = None,
    trained: Mapping[str, Sequence[nn.Module]] | None = None,
) -> AuditResult:
    """Robust accuracy of models trained on a condensed set vs. baselines, under two protocols.

    Protocols (each applied to S *and* to every baseline, so users see what each gives):
    ``"standard"`` trains with the evaluation protocol (metrics ``pgd20_acc`` …, baselines
    ``baseline_pgd20_acc`` … for the random real subset and ``dp_baseline_pgd20_acc`` … for the
    DP prototype baseline of a private release); ``"adversarial"`` trains with the
    :class:`~securedc.robust.PGDRecipe` ``recipe`` (default ``PGDRecipe(eps=eps, steps=5)``, in quick
    mode :meth:`~securedc.robust.PGDRecipe.fast`; metrics ``at_pgd20_acc``, ``baseline_at_pgd20_acc`` …).
    Models on S use ``soft_labels`` when given.

    Quick mode sizes the work for a CPU without weakening the attacks on the compared numbers:
    every model gets the headline attacks (FGSM, PGD-20 with restarts); the first model trained
    on S under each protocol also gets PGD-100, the accuracy-vs-eps curve and the sanity checks
    (gradient masking in a baseline model could only overstate the baseline's robustness and
    make the gate stricter, so the checks guard S, whose robustness is claimed); the
    adversarial-training protocol trains one model on S and one on the random real subset (it
    informs; the default gate uses the standard protocol; the DP prototype baseline, which no gate
    reads under that protocol, is trained the standard way only) with fast adversarial training
    (FGSM-RS, one input gradient per batch; on digits its models are as robust as PGD-5 training's,
    docs/audits.md). All of this is stated in ``notes``.

    Args:
        images, labels: the condensed set.
        test_images, test_labels: real test data (up to ``max_test`` are attacked).
        num_classes, mean, std: dataset metadata (public normalisation).
        eps: L∞ radius (e.g. 8/255, 0.1).
        eval_config: training protocol; ``eval_config.models`` fresh models per set.
        baseline: the random real subset; ``None`` draws no baseline.
        dp_baseline: draws of the DP prototype baseline of a private release (the reference of
            its gate); model k trains on draw ``k mod len`` (as in the utility audit).
        seed: seeds training, test subsample and attacks; the global RNG is untouched.
        max_test: number of test images attacked.
        autoattack: run the AutoAttack suite (the final word on robustness).
        quick: reduced attack budgets (:meth:`AttackSettings.quick`) and work as above.
        device: torch device.
        protocols: which training protocols to run (``"standard"``, ``"adversarial"``).
        recipe: adversarial-training recipe of the ``"adversarial"`` protocol.
        soft_labels: per-image soft labels of the condensed set (KD loss), or ``None``.
        trained: models already trained by the evaluation protocol with the same seeds
            (:func:`~securedc.evaluate.evaluate_set`: the utility audit's), by set name
            (``condensed``, ``baseline``, ``dp_baseline``); the standard protocol attacks them
            instead of training new ones.

    Returns:
        ``AuditResult(name="robustness")``; metrics are means over models with ``*_ci95``
        half-widths (normal approximation over models); ``passed`` = every sanity check passes.
    """
    bad = [p for p in protocols if p not in ("standard", "adversarial")]
    if bad or not protocols:
        raise ConfigError(f"robustness protocols must be 'standard' and/or 'adversarial' (got {list(protocols)})")
    fast_at = recipe is None and quick and "adversarial" in protocols
    recipe = recipe or (PGDRecipe.fast(eps) if quick else PGDRecipe(eps=eps, steps=5))
    problems = eval_config.problems()
    if problems:
        raise ConfigError("; ".join(problems))
    if images.shape[0] == 0 or test_images.shape[0] == 0:
        raise DataError("robustness audit needs a non-empty condensed set and test set")
    t0 = time.perf_counter()
    settings = AttackSettings.quick() if quick else AttackSettings.standard()
    tx, ty = attack_subsample(test_images, test_labels, max_test, seed)
    sets = {"condensed": [(images, labels)], "baseline": [baseline] if baseline is not None else None,
            "dp_baseline": list(dp_baseline) if dp_baseline else None}
    sets = {k: v for k, v in sets.items() if v is not None}
    trained = trained or {}
    metrics: dict[str, float] = {}
    checks: list[dict[str, Any]] = []
    curve: dict[str, Any] = {}
    per_model: dict[str, list[dict[str, Any]]] = {}
    reused: list[str] = []
    # the quick audit trains S and the random subset adversarially, not the DP baseline: a policy whose
    # robustness gate compares a private release adversarially with that baseline needs a thorough audit
    work = [(protocol, name) for protocol in protocols for name in sets
            if not (quick and protocol == "adversarial" and name == "dp_baseline")]
    models_of: dict[tuple[str, str], list[nn.Module]] = {}
    jobs: list[Callable[[], nn.Module]] = []
    slots: list[tuple[str, str]] = []
    for protocol, name in work:
        at = protocol == "adversarial"
        n_models = 1 if (quick and at) else eval_config.models
        models_of[(protocol, name)] = list(trained.get(name, ()))[:n_models] if not at else []
        if models_of[(protocol, name)]:
            reused.append(name)
        for k in range(len(models_of[(protocol, name)]), n_models):
            x, y = sets[name][k % len(sets[name])]
            jobs.append(functools.partial(train_model, x, y, num_classes=num_classes, mean=mean, std=std,
                                          config=eval_config, seed=seed * 1000 + k, device=device,
                                          soft_labels=soft_labels if name == "condensed" else None,
                                          adversarial=recipe if at else None))
            slots.append((protocol, name))
    with torch.random.fork_rng():
        # the models train side by side on a CPU (seeded generators each), and so are they attacked
        # unless AutoAttack runs (its parts seed and draw from the global RNG: one model at a time)
        for slot, model in zip(slots, run_concurrently(jobs, device=device)):
            models_of[slot].append(model)
        attacks = [(protocol, name, k) for protocol, name in work for k in range(len(models_of[(protocol, name)]))]
        audited = run_concurrently([
            functools.partial(audit_model, models_of[(protocol, name)][k], tx, ty, eps=eps, num_classes=num_classes,
                              seed=seed + k, autoattack=autoattack, settings=settings, batch_size=250,
                              sanity=not quick or (k == 0 and name == "condensed"))
            for protocol, name, k in attacks], device=device, workers=1 if autoattack else None)
        for (protocol, name, k), result in zip(attacks, audited):
            logger.info("robustness %s/%s model %d: %s", protocol, name, k, result.metrics)
        for protocol, name in work:
            at = protocol == "adversarial"
            results = [r for (p, n, _), r in zip(attacks, audited) if (p, n) == (protocol, name)]
            agg, agg_checks, mean_curve = _aggregate(results)
            prefix = {"condensed": "", "baseline": N.baseline(""), "dp_baseline": N.dp_baseline("")}[name]

            def key_of(metric: str, prefix: str = prefix, at: bool = at) -> str:
                return prefix + (at_metric(metric) if at else metric)

            metrics.update({key_of(key): v for key, v in agg.items()})
            for key in agg:
                vals = [r.metrics[key] for r in results if key in r.metrics]
                sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
                metrics[key_of(key).removesuffix("_acc") + "_ci95"] = 1.96 * sd / math.sqrt(len(vals))
            tag = ("" if name == "condensed" else f"{name}:") + ("at:" if at else "")
            checks += [{**c, "name": f"{tag}{c['name']}"} for c in agg_checks]
            grids = [r.details["acc_vs_eps"]["eps"] for r in results if "acc_vs_eps" in r.details]
            if grids:
                curve["eps"] = grids[0]
                curve[f"{name}_at" if at else name] = mean_curve
            per_model[f"{name}_at" if at else name] = [
                {"metrics": r.metrics, "autoattack_broken": r.details["autoattack_broken"]} for r in results]
    notes = [settings.describe()]
    if quick:
        notes.append("quick mode: reduced attack budgets (fewer PGD restarts) and NO AutoAttack (so no APGD, FAB or "
                     "Square black-box check; a thorough audit, AuditConfig(robustness_quick=False), runs "
                     "them); numbers are upper bounds on robust accuracy; "
                     "PGD-100, the accuracy-vs-eps curve and the sanity checks run on the first model trained on "
                     "S under each protocol; the adversarial-training protocol trains one model on S and one on the random "
                     "real subset (the DP prototype baseline is trained the standard way only)")
        if fast_at:
            notes.append("adversarial training uses fast AT (FGSM from a random start, step 1.25 eps; Wong, Rice & "
                         "Kolter 2020): one input gradient per batch; a thorough audit trains with 5-step PGD")
    if reused:
        notes.append(f"standard protocol: the utility audit's models are attacked ({', '.join(reused)}), "
                     "not trained again")
    notes.append("AutoAttack is assembled from torchattacks APGD/APGDT/FAB/Square because torchattacks' "
                 "AutoAttack(version='standard') uses 10-step APGD (torchattacks issue #196)")
    return AuditResult(
        name=N.ROBUSTNESS,
        metrics=metrics,
        passed=all(c["passed"] for c in checks),
        details={
            "sanity_checks": checks,
            "acc_vs_eps": curve,
            "per_model": per_model,
            "eps": eps,
            "num_test": int(tx.shape[0]),
            "models": eval_config.models,
            "eval_epochs": eval_config.epochs,
            "quick": quick,
            "protocols": {p: ("evaluation protocol" if p == "standard" else recipe.describe()) for p in protocols},
            "baselines": [n for n in sets if n != "condensed"],
            "soft_labels": soft_labels is not None,
        },
        seconds=time.perf_counter() - t0,
        notes=notes,
    )


@register_audit(N.ROBUSTNESS)
class RobustnessAudit(Audit):
    """Registered robustness audit (runs on adversarial releases, ``adversarial.eps > 0``).

    In the pipeline :meth:`measure` takes every setting from the release (its ε, the evaluation
    protocol, the seed, quick mode); :meth:`run` is the standalone door with the options given here.

    Example:
        >>> from securedc.audits import create_audit
        >>> create_audit("robustness", eps=0.1).eps
        0.1
    """

    higher_is_better = True

    def __init__(self, *, eps: float = 8 / 255, eval_config: EvalConfig | None = None, seed: int = 0,
                 max_test: int = 1000, autoattack: bool = True, quick: bool = False) -> None:
        self.eps = eps
        self.eval_config = eval_config or EvalConfig()
        self.seed, self.max_test, self.autoattack, self.quick = seed, max_test, autoattack, quick

    def applies(self, ctx: AuditContext) -> bool:
        return ctx.config.adversarial.enabled

    def describe(self, ctx: AuditContext) -> str:
        return f"robustness: attacks at eps={ctx.config.adversarial.eps:.4g} on models trained on S and on a random subset"

    def measure(self, ctx: AuditContext) -> AuditResult:
        from securedc.evaluate import random_subset

        ipc = int(torch.bincount(ctx.labels.cpu(), minlength=ctx.num_classes).max())
        quick = ctx.settings.robustness_quick
        max_test = QUICK_MAX_TEST if quick else self.max_test
        arch = ctx.eval_config.model  # the utility audit's models of this architecture are reused
        store = ctx.trained_models()
        trained = {name: store[(key, arch)] for name, key in
                   (("condensed", "condensed"), ("baseline", "random"), ("dp_baseline", "dp_baseline"))
                   if (key, arch) in store}
        return run_robustness_audit(
            ctx.images, ctx.labels, ctx.test[0], ctx.test[1], eps=ctx.config.adversarial.eps,
            eval_config=ctx.eval_config, seed=ctx.config.seed, quick=quick, autoattack=not quick, max_test=max_test,
            baseline=random_subset(ctx.members[0], ctx.members[1], ipc, seed=ctx.config.seed + 1),
            dp_baseline=ctx.dp_baselines(), trained=trained, device=ctx.config.device,
            soft_labels=ctx.soft_labels, **ctx.meta,
        )

    def run(self, images: Tensor, labels: Tensor, test_images: Tensor, test_labels: Tensor, *,
            num_classes: int, mean: tuple[float, ...], std: tuple[float, ...],
            baseline: tuple[Tensor, Tensor] | None = None, **kwargs: Any) -> AuditResult:
        """Audit ``images`` with this instance's options (``kwargs`` override them)."""
        opts = dict(eps=self.eps, eval_config=self.eval_config, seed=self.seed, max_test=self.max_test,
                    autoattack=self.autoattack, quick=self.quick)
        opts.update(kwargs)
        return run_robustness_audit(images, labels, test_images, test_labels, num_classes=num_classes,
                                    mean=mean, std=std, baseline=baseline, **opts)
