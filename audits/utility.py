"""Utility audit: does the condensed set train models as well as real data of the same size?

For each architecture (cross-architecture generalisation), ``K = eval_config.models``
fresh models are trained on the condensed set S and K on a random real subset with the
same number of images per class, and both are tested on the real test set. The first
architecture is the *main* one (``condensed_acc`` / ``random_acc``); the gate in
:mod:`securedc.audits.certify` compares those two.

References:
    Zhao, Mopuri & Bilen, "Dataset Condensation with Gradient Matching", ICLR 2021
    (evaluation protocol and the random-subset baseline).
    Zhao & Bilen, "Dataset Condensation with Distribution Matching", WACV 2023
    (cross-architecture evaluation).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from securedc.audits import names as N
from securedc.audits.base import AuditResult
from securedc.config import EvalConfig
from securedc.errors import ConfigError, DataError

__all__ = ["run_utility_audit", "evaluation_section"]


def run_utility_audit(
    images: Tensor,
    labels: Tensor,
    train_images: Tensor,
    train_labels: Tensor,
    test_images: Tensor,
    test_labels: Tensor,
    *,
    num_classes: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    eval_config: EvalConfig,
    seed: int = 0,
    architectures: Sequence[str] = ("convnet", "mlp"),
    device: str | torch.device = "cpu",
    epsilon: float = math.inf,
    delta: float | None = None,
    dp_baseline: Sequence[tuple[Tensor, Tensor]] | None = None,
    dp_baseline_kind: str = "independent",
    models_out: dict[tuple[str, str], tuple[Any, ...]] | None = None,
    soft_labels: Tensor | None = None,
) -> AuditResult:
    """Accuracy of fresh models trained on S vs on a random real subset of the same size.

    Args:
        images, labels: the condensed set S.
        train_images, train_labels: real data the random subset is drawn from (use the
            members, i.e. the data the condenser saw).
        test_images, test_labels: real test data.
        num_classes, mean, std: dataset metadata.
        eval_config: training protocol; its ``model`` is ignored in favour of ``architectures``.
        seed: seeds the models and the subset.
        architectures: model names; the first is the main one.
        device: torch device.
        epsilon, delta: the release's DP budget; with a finite ε the main architecture is also
            trained on the DP prototype baseline of the same budget
            (:func:`~securedc.privacy.baseline.dp_prototype_baseline`), the reference of the
            utility gate for private releases. ``delta=None`` = the default δ for the members.
        dp_baseline: draws of that baseline, when already made (private releases): model k is
            trained on draw ``k mod len`` (its expected accuracy, not one draw's luck); the
            robustness audit uses the same draws. ``None`` makes one draw per model here.
        dp_baseline_kind: ``"independent"`` (fresh draws) or ``"paired"`` (one draw: the release's
            own prototypes, :func:`~securedc.privacy.baseline.paired_prototype_baseline`); stated
            in the notes and ``details["dp_baseline_kind"]``, and in the gate's reason.
        models_out: when given, receives the trained models under ``(set, architecture)`` with
            set ∈ ``condensed``, ``random``, ``dp_baseline`` (the robustness audit attacks them).
        soft_labels: S's per-image soft labels (the file's ``soft_labels``): the models on S train on
            them with the KD loss, as a user of the file does; the baselines keep their hard labels.

    Returns:
        :class:`AuditResult` named ``utility`` with metrics ``condensed_acc``, ``random_acc``,
        ``condensed_std``, ``random_std`` (main architecture) and ``condensed_acc_<arch>``,
        ``random_acc_<arch>``, ``condensed_std_<arch>``, ``random_std_<arch>``; details hold every
        per-model accuracy; with a finite ε also ``dp_baseline_acc`` / ``dp_baseline_std``.
        ``passed`` is None (the gate lives in certify).

    Raises:
        ConfigError: no architecture given.
        DataError: S has more images per class than the real data.
    """
    from securedc.evaluate import EvalRequest, evaluate_requests, random_subset

    if not architectures:
        raise ConfigError("the utility audit needs at least one architecture, e.g. ('convnet', 'mlp')")
    t0 = time.perf_counter()
    counts = torch.bincount(labels.cpu(), minlength=num_classes)
    ipc = int(counts.max())
    if int(counts.min()) != ipc:
        raise DataError(f"the condensed set must have the same number of images per class (got {counts.tolist()})")
    # model k trains on its own random subset: the baseline averages over subset draws, not one lucky or
    # unlucky draw (draw 0 is the robustness audit's baseline subset)
    random_draws = [random_subset(train_images, train_labels, ipc, seed=seed + 1 + k)
                    for k in range(eval_config.models)]
    main = architectures[0]
    private = math.isfinite(epsilon)
    d = None
    if private:
        from securedc.privacy.baseline import baseline_delta, dp_prototype_draws

        d = baseline_delta(delta, int(train_labels.numel()))
        if dp_baseline is None:
            dp_baseline = dp_prototype_draws(train_images, train_labels, ipc=ipc, num_classes=num_classes,
                                             epsilon=float(epsilon), delta=d, draws=eval_config.models)
    # every model of every set is one job (trained side by side on a CPU), the main architecture first
    sets = [(arch, name, draws) for arch in architectures
            for name, draws in (("condensed", [(images, labels)]), ("random", random_draws),
                                ("dp_baseline", dp_baseline if private and arch == main else None)) if draws]
    evals = evaluate_requests([EvalRequest(draws=draws, config=dataclasses.replace(eval_config, model=arch),
                                           soft_labels=soft_labels if name == "condensed" else None)
                               for arch, name, draws in sets], test_images, test_labels, num_classes=num_classes,
                              mean=mean, std=std, seed=seed, device=device, keep_models=models_out is not None)
    results = {(arch, name): r for (arch, name, _), r in zip(sets, evals)}
    if models_out is not None:
        for (arch, name), r in results.items():
            models_out[(name, arch)] = r.models
    metrics: dict[str, float] = {}
    per_arch: dict[str, Any] = {}
    for arch in architectures:
        syn, rnd = results[(arch, "condensed")], results[(arch, "random")]
        metrics[N.per_architecture(N.CONDENSED_ACC, arch)] = syn.mean
        metrics[N.per_architecture(N.RANDOM_ACC, arch)] = rnd.mean
        metrics[N.per_architecture(N.CONDENSED_STD, arch)] = syn.std
        metrics[N.per_architecture(N.RANDOM_STD, arch)] = rnd.std
        per_arch[arch] = {"condensed": syn.to_dict(), "random_subset": rnd.to_dict()}
    for key in (N.CONDENSED_ACC, N.RANDOM_ACC, N.CONDENSED_STD, N.RANDOM_STD):
        metrics[key] = metrics[N.per_architecture(key, main)]
    notes = [f"{eval_config.models} fresh model(s) per architecture and training set; each random-subset model "
             f"trains on its own draw of {ipc} real image(s) per class from the data the condenser saw, so the "
             "baseline averages over draws"]
    if soft_labels is not None:
        notes.append("the models on S train on the release's soft labels (KD loss), as a user of the file does; "
                     "the baselines on hard labels")
    if private:
        assert dp_baseline is not None
        dpb = results[(main, "dp_baseline")]
        metrics[N.DP_BASELINE_ACC], metrics[N.DP_BASELINE_STD] = dpb.mean, dpb.std
        per_arch[main]["dp_baseline"] = dpb.to_dict()
        if dp_baseline_kind == "paired":
            from securedc.privacy.baseline import PAIRED_SIGMA_TOLERANCE

            notes.append(f"DP baseline (paired): the release's own DP class prototypes, whose noise is within "
                         f"{100 * PAIRED_SIGMA_TOLERANCE:g} % of one release of the whole (epsilon={float(epsilon):g}, "
                         f"delta={d:g}), {ipc} copies per class ({main}); every model trains on this draw, the one S "
                         f"started from")
        else:
            notes.append(f"DP baseline: per-class mean images of the members released once at the same "
                         f"(epsilon={float(epsilon):g}, delta={d:g}), {ipc} copies per class ({main}); each model "
                         f"is trained on its own draw ({len(dp_baseline)} draws)")
    return AuditResult(
        name=N.UTILITY,
        metrics=metrics,
        passed=None,
        details={
            "architectures": list(architectures),
            "main_architecture": main,
            "ipc": ipc,
            "protocol": {"models": eval_config.models, "epochs": eval_config.epochs, "lr": eval_config.lr,
                         "batch_size": eval_config.batch_size, "dsa": eval_config.dsa,
                         "soft_labels": soft_labels is not None},
            "per_architecture": per_arch,
            **({"dp_baseline_kind": dp_baseline_kind} if math.isfinite(epsilon) else {}),
        },
        seconds=time.perf_counter() - t0,
        notes=notes,
    )


def evaluation_section(result: AuditResult) -> dict[str, Any]:
    """The owner record's ``evaluation`` section from a utility result (same shape as ``securedc condense``
    writes without the audit), so models are not trained twice."""
    main = result.details["main_architecture"]
    per = result.details["per_architecture"][main]
    proto = dict(result.details["protocol"], model=main)
    return {"protocol": proto, "condensed": per["condensed"], "random_subset": per["random_subset"],
            "cross_architecture": {a: {"condensed": v["condensed"]["mean"], "random_subset": v["random_subset"]["mean"]}
                                   for a, v in result.details["per_architecture"].items()}}
