"""Frozen, validated configuration objects.

Every option of the library and the CLI lives in one of these dataclasses
(``CondenseConfig`` holds a ``PrivacyConfig`` and an ``AdversarialConfig``).
``validate()`` collects *all* problems and raises them together as one
:class:`~securedc.errors.ConfigError` (as opacus' ``ModuleValidator`` does), so a
user fixes a command line in one go.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from securedc.devices import device_problem, resolve_device
from securedc.errors import ConfigError, DataError, PrivacyError, Problem
from securedc.jsonsafe import json_ready

DSA_DEFAULT = "color_crop_cutout_flip_scale_rotate"
"""The DSA strategy of condensation and of the evaluation protocol (Zhao & Bilen, ICML 2021)."""

__all__ = [
    "parse_number",
    "default_delta",
    "default_pgd_step",
    "PrivacyConfig",
    "AdversarialConfig",
    "CondenseConfig",
    "EvalConfig",
    "option_field",
    "PRIVACY_OPTIONS",
    "ADVERSARIAL_OPTIONS",
    "REAL_DATA_INITS",
]

_FRACTION = re.compile(r"^\s*([+-]?[0-9.eE+-]+)\s*/\s*([+-]?[0-9.eE+-]+)\s*$")


def parse_number(text: str | float | int, *, name: str) -> float:
    """Parse a float given as a decimal (``0.03``), a fraction (``8/255``) or ``inf``.

    Args:
        text: the value as typed by a user, or a number.
        name: the field it is for, named in the error (``adversarial.eps``; the CLI shows the flag).

    Returns:
        The parsed float (may be ``inf``; NaN is rejected).

    Raises:
        ConfigError: unparsable text, a zero denominator or NaN.

    Example:
        >>> round(parse_number("8/255", name="adversarial.eps"), 6)
        0.031373
        >>> parse_number("inf", name="privacy.epsilon")
        inf
        >>> parse_number("8/0", name="adversarial.eps")
        Traceback (most recent call last):
        ...
        securedc.errors.ConfigError: adversarial.eps '8/0': denominator is zero; use e.g. 8/255
    """
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        match = _FRACTION.match(text)
        try:
            if match:
                num, den = float(match.group(1)), float(match.group(2))
            else:
                num, den = float(text.strip()), 1.0
        except ValueError:
            raise ConfigError(problems=[
                Problem(name, f"{text!r} is not a number; use a decimal (0.03), a fraction (8/255) or inf")
            ]) from None
        if den == 0:
            raise ConfigError(problems=[Problem(name, f"{text!r}: denominator is zero; use e.g. 8/255")])
        value = num / den
        if math.isinf(value) and text.strip().lower().lstrip("+-") not in ("inf", "infinity"):
            # 1e400 overflows to inf, which would silently mean "not private" for an epsilon
            raise ConfigError(problems=[Problem(name, f"{text!r} overflows a float; write inf for infinity")])
    if math.isnan(value):
        raise ConfigError(problems=[Problem(name, "is NaN; give a finite number")])
    return value


def default_delta(num_examples: int) -> float:
    """Default δ: the largest power of ten strictly below ``1 / num_examples``, at most :data:`MAX_DELTA`.

    Example:
        >>> default_delta(60000)
        1e-05
        >>> default_delta(1000)
        0.0001
        >>> default_delta(5)
        0.01
    """
    if num_examples < 1:
        raise ConfigError("cannot choose a default delta for an empty dataset")
    exponent = math.floor(math.log10(1.0 / num_examples))
    delta = 10.0**exponent
    if delta >= 1.0 / num_examples:
        delta /= 10.0
    return min(MAX_DELTA, float(f"{delta:.0e}"))


def default_pgd_step(eps: float) -> float:
    """Default step size of L∞ PGD: ``eps / 4`` (the usual convention of PGD-20 evaluations).

    Used by the adversarial term when ``alpha`` is not given and by the robustness audit.

    Example:
        >>> default_pgd_step(0.1)
        0.025
    """
    return float(eps) / 4


def type_problems(config: Any, *, integers: Sequence[str] = (), reals: Sequence[str] = ()) -> list[Problem]:
    """Fields of ``config`` whose value has the wrong type (``None`` is left to the range checks).

    Example:
        >>> [p.field for p in type_problems(CondenseConfig(ipc=2.5), integers=("ipc", "seed"))]
        ['ipc']
    """
    out = []
    for name in integers:
        value = getattr(config, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
            out.append(Problem(name, f"must be an integer (got {value!r})"))
    for name in reals:
        value = getattr(config, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
            out.append(Problem(name, f"must be a number (got {value!r})"))
    return out


def model_problem(name: str, field_name: str) -> Problem | None:
    """A :class:`Problem` when ``name`` is not a registered architecture (checked before any data is read).

    Example:
        >>> str(model_problem("bogus", "model"))
        "model must be one of ['convnet', 'mlp', 'resnet'] (got 'bogus')"
    """
    from securedc.models.registry import list_models
    from securedc.registry import Registry

    if isinstance(name, str) and Registry.normalize(name) in list_models():
        return None
    return Problem(field_name, f"must be one of {list_models()} (got {name!r})")


def seed_problem(seed: Any, field_name: str) -> Problem | None:
    """A :class:`Problem` when ``seed`` is not an integer in ``[0, MAX_SEED]``.

    Example:
        >>> str(seed_problem(-1, "--seed"))
        '--seed must be an integer in [0, 2147483647] (got -1)'
    """
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool) and 0 <= seed <= MAX_SEED:
        return None
    return Problem(field_name, f"must be an integer in [0, {MAX_SEED}] (got {seed!r})")


def _raise_problems(config: Any) -> Any:
    """``config`` if its ``problems()`` are none, else one :class:`ConfigError` carrying them all."""
    problems = config.problems()
    if problems:
        raise ConfigError(problems=problems)
    return config


#: the largest count option (images, steps, chunk sizes, GiB): larger values overflow torch's int64 sizes
MAX_COUNT = 10**9

#: the largest seed (seeds are combined with step and class indices before seeding 64-bit generators)
MAX_SEED = 2**31 - 1

#: the largest DP clipping bound (squared bounds are summed in float64)
MAX_CLIP = 1e6

#: the smallest Poisson rate a DP run accepts (below it the expected sample of a class underflows)
MIN_SAMPLE_RATE = 1e-6

#: the largest δ a DP run accepts: (ε, δ)-DP with δ ≥ 1/N permits publishing a whole record with probability δ
MAX_DELTA = 0.01

#: initialisations computed from the real images (non-private runs only).
REAL_DATA_INITS = ("real", "mix", "kmeans")


@dataclass(frozen=True, kw_only=True)
class PrivacyConfig:
    """Differential-privacy settings (docs/privacy.md).

    Attributes:
        epsilon: target ε; ``inf`` means non-private (exact means, no clipping).
        delta: target δ; ``None`` chooses :func:`default_delta` of the training-set size.
        accountant: ``"rdp"`` (default) or ``"prv"`` (opacus accountants).
        clip: per-part clipping bound C_k of each term's per-sample vector; the total
            sensitivity is ``sqrt(sum C_k^2)``.
        sample_rate: Poisson rate q of each release; ``None`` = the signal-to-noise rule of
            :mod:`securedc.privacy.calibration` (chosen from ε, δ and R only, never from data).
        counts: ``"released"`` (default: the per-class counts are released through the Gaussian
            mechanism — with the prototypes, or alone with ``count_share`` of the budget when the
            prototype share is 0 — and composed into the same accountant) or ``"public"`` (the user
            declares the class counts public; recorded).
        count_share: share of ε the count release would spend on its own (only when no
            prototypes are released).
        prototype_share: share of ε the phase-0 release of per-class mean images (the
            initialisation of S, released together with the counts) would spend on its own;
            0 = no prototypes (noise initialisation, counts released with ``count_share``).
            The default was chosen on public data (digits and Fashion-MNIST benchmarks,
            docs/benchmarks.md).
        prototype_clusters: ``"auto"`` (default) or K ≥ 1: the prototype share buys three Gaussian
            rounds instead of one — the class means, then DP Lloyd rounds releasing K sub-class
            centres per class that initialise S (:mod:`securedc.privacy.centres`; ``"auto"``: K = ipc
            when the released counts say every class is large enough for a centre not to be mostly
            noise, else the rounds re-release the class means: the same ε and the same noise as one
            release). ``1`` = one class-mean release.
        prototype_top_up: allow the prototype top-up: when the statistics bank's signal-to-noise
            ratio (from the released counts; :func:`~securedc.privacy.calibration.bank_snr`) is
            too low for the bank to help, a second prototype release takes most of the bank's
            privacy curve at no extra ε (:func:`~securedc.privacy.calibration.top_up_split`).
        subspace: k ≥ 0: the distribution term releases each statistic in the k-dimensional
            subspace spanned by the release network's features of the run's DP prototypes
            (:mod:`securedc.subspace`; post-processing of phase 0, no privacy cost): the noise
            energy of a release falls from ``feature_dim·τ²`` to ``k·τ²``. Needs
            ``prototype_share > 0``; k is capped at the number of released images − 1. 0 = full
            features.
    """

    epsilon: float = math.inf
    delta: float | None = None
    accountant: Literal["rdp", "prv"] = "rdp"
    clip: float = 1.0
    sample_rate: float | None = None
    counts: Literal["released", "public"] = "released"
    count_share: float = 0.1
    prototype_share: float = 0.8
    prototype_clusters: int | str = "auto"
    prototype_top_up: bool = True
    subspace: int = 0

    @property
    def private(self) -> bool:
        return math.isfinite(self.epsilon)

    def problems(self) -> list[Problem]:
        out: list[Problem] = []
        if math.isnan(self.epsilon) or self.epsilon <= 0:
            out.append(Problem("privacy.epsilon", f"must be > 0 (got {self.epsilon}); use inf or omit it for a non-private run"))
        if self.delta is not None and not (0 < self.delta <= MAX_DELTA):
            out.append(Problem("privacy.delta", f"must be in (0, {MAX_DELTA:g}] (got {self.delta}): a larger "
                                                "delta allows releasing whole records; typical is < 1/N, e.g. 1e-5"))
        if self.accountant not in ("rdp", "prv"):
            out.append(Problem("privacy.accountant", f"must be 'rdp' or 'prv' (got {self.accountant!r})"))
        if not (math.isfinite(self.clip) and 0 < self.clip <= MAX_CLIP):
            out.append(Problem("privacy.clip", f"must be in (0, {MAX_CLIP:g}] (got {self.clip})"))
        if self.sample_rate is not None and not (MIN_SAMPLE_RATE <= self.sample_rate <= 1):
            out.append(Problem("privacy.sample_rate", f"must be in [{MIN_SAMPLE_RATE:g}, 1] (got {self.sample_rate})"))
        if self.counts not in ("released", "public"):
            out.append(Problem("privacy.counts", f"must be 'released' or 'public' (got {self.counts!r})"))
        if not (0 < self.count_share < 1):
            out.append(Problem("privacy.count_share", f"must be in (0, 1) (got {self.count_share})"))
        if not (0 <= self.prototype_share < 1):
            out.append(Problem("privacy.prototype_share", f"must be in [0, 1) (got {self.prototype_share})"))
        k = self.prototype_clusters
        if k != "auto" and not (isinstance(k, int) and not isinstance(k, bool) and k >= 1):
            out.append(Problem("privacy.prototype_clusters", f"must be 'auto' or an integer >= 1 (got {k!r})"))
        if isinstance(self.subspace, bool) or not isinstance(self.subspace, int) or self.subspace < 0:
            out.append(Problem("privacy.subspace", f"must be an integer >= 0 (got {self.subspace!r})"))
        elif self.subspace and not self.private:
            out.append(Problem("privacy.subspace", "projects DP releases; it needs --epsilon (a private run)"))
        elif self.subspace and self.prototype_share <= 0:
            out.append(Problem("privacy.subspace", "is spanned by the DP prototypes; it needs privacy.prototype_share > 0"))
        return out

    def validate(self) -> "PrivacyConfig":
        """Raise one :class:`ConfigError` naming every invalid field; else return ``self``."""
        return _raise_problems(self)


@dataclass(frozen=True, kw_only=True)
class AdversarialConfig:
    """Adversarial-discrepancy term settings (issue: robustness).

    Attributes:
        eps: L∞ radius in [0, 1] image units; 0 disables the term.
        steps: PGD steps.
        alpha: PGD step size; ``None`` = :func:`default_pgd_step` (eps / 4).
        weight: weight of the adversarial term in the objective.
        perturb_synthetic: also perturb the synthetic images (min-max form).
        attack_network: ``"random"`` (the step's random network) or ``"synthetic"``
            (a network briefly trained on S, post-processing only); ``perturbed`` mode only.
        mode: ``"robust-features"`` (match real features under a robust extractor) or
            ``"perturbed"`` (the earlier variant: PGD-perturbed real data under the step network).
        robust_extractor: path of safetensors weights of a robust extractor trained on data the
            user declares public (``--robust-extractor``); ``None`` = adversarially trained on S only.
        extractor_epochs: adversarial-training epochs of the first extractor round on S.
        retrain_every: releases per extractor round (alternation with condensation).
        soft_labels: export per-image soft labels of S from the robust teacher.
        soft_label_temperature: softmax temperature of the soft labels; ``None`` (default) = 1, or
            lower when the teacher's labels are flatter than
            :data:`~securedc.robust.SOFT_LABEL_CONFIDENCE` on average (:func:`~securedc.robust.soft_labels_from`).
    """

    eps: float = 0.0
    steps: int = 10
    alpha: float | None = None
    weight: float = 1.0
    perturb_synthetic: bool = False
    attack_network: Literal["random", "synthetic"] = "random"
    mode: Literal["robust-features", "perturbed"] = "robust-features"
    robust_extractor: str | None = None
    extractor_epochs: int = 30
    retrain_every: int = 50
    soft_labels: bool = False
    soft_label_temperature: float | None = None

    @property
    def enabled(self) -> bool:
        return self.eps > 0

    @property
    def step_size(self) -> float:
        return self.alpha if self.alpha is not None else default_pgd_step(self.eps)

    def problems(self) -> list[Problem]:
        out: list[Problem] = []
        if not (0 <= self.eps <= 1):
            out.append(Problem("adversarial.eps", f"must be in [0, 1] in image units (got {self.eps}); e.g. 8/255"))
        if self.robust_extractor is not None and not Path(self.robust_extractor).expanduser().is_file():
            out.append(Problem("adversarial.robust_extractor", f"file {self.robust_extractor} not found "
                                                               "(make one with securedc extractor)"))
        if self.steps < 1:
            out.append(Problem("adversarial.steps", f"must be >= 1 (got {self.steps})"))
        if self.alpha is not None and not (0 < self.alpha <= 1):
            out.append(Problem("adversarial.alpha", f"must be in (0, 1] (got {self.alpha})"))
        if not (math.isfinite(self.weight) and self.weight >= 0):
            out.append(Problem("adversarial.weight", f"must be >= 0 (got {self.weight})"))
        if self.attack_network not in ("random", "synthetic"):
            out.append(Problem("adversarial.attack_network", f"must be 'random' or 'synthetic' (got {self.attack_network!r})"))
        if self.mode not in ("robust-features", "perturbed"):
            out.append(Problem("adversarial.mode", f"must be 'robust-features' or 'perturbed' (got {self.mode!r})"))
        if self.extractor_epochs < 0 or self.retrain_every < 1:
            out.append(Problem("adversarial.extractor_epochs", f"must be >= 0 and adversarial.retrain_every >= 1 (got "
                                                                  f"{self.extractor_epochs}, {self.retrain_every})"))
        if self.soft_label_temperature is not None and not (
                math.isfinite(self.soft_label_temperature) and self.soft_label_temperature > 0):
            out.append(Problem("adversarial.soft_label_temperature", f"must be > 0 (got {self.soft_label_temperature})"))
        return out

    def validate(self) -> "AdversarialConfig":
        """Raise one :class:`ConfigError` naming every invalid field; else return ``self``."""
        return _raise_problems(self)


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """Protocol for training fresh models on a condensed set (the reference protocol of docs/benchmarks.md).

    Attributes:
        models: number of fresh models (mean ± std is reported).
        epochs: training epochs (lr × 0.1 at half).
        lr: SGD learning rate; momentum 0.9, weight decay 5e-4.
        batch_size: training batch size.
        dsa: augmentation strategy during training ("none" disables).
        model: architecture name.
    """

    models: int = 3
    epochs: int = 300
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    dsa: str = DSA_DEFAULT
    model: str = "convnet"

    def problems(self) -> list[Problem]:
        out: list[Problem] = []
        if self.models < 1:
            out.append(Problem("eval.models", f"must be >= 1 (got {self.models})"))
        if self.epochs < 1:
            out.append(Problem("eval.epochs", f"must be >= 1 (got {self.epochs})"))
        if not (self.lr > 0 and math.isfinite(self.lr)):
            out.append(Problem("eval.lr", f"must be > 0 (got {self.lr})"))
        if self.batch_size < 1:
            out.append(Problem("eval.batch_size", f"must be >= 1 (got {self.batch_size})"))
        if (problem := model_problem(self.model, "eval.model")) is not None:
            out.append(problem)
        return out

    def validate(self) -> "EvalConfig":
        """Raise one :class:`ConfigError` naming every invalid field; else return ``self``."""
        return _raise_problems(self)


@dataclass(frozen=True, kw_only=True)
class CondenseConfig:
    """Everything that defines one condensation run.

    Attributes:
        ipc: synthetic images per class.
        iterations: optimisation steps T.
        discrepancy: registered discrepancy name (``mean-embedding``, ``mmd``,
            ``characteristic``, ``sliced-wasserstein``).
        discrepancy_kwargs: extra keyword arguments for the discrepancy.
        model: architecture of the random step network.
        init: ``"real"`` (random real images per class; non-private only), ``"mix"`` (each
            image the pixel mean of ``init_mix`` random real images of its class: a prototype
            that copies no single example; non-private only), ``"kmeans"`` (each image the mean
            of one of ``ipc`` k-means clusters of its class, :mod:`securedc.kmeans`; every
            cluster averages at least ``init_mix`` images; non-private only), ``"noise"``,
            ``"prototype"`` (private only: the DP class prototypes of phase 0 plus public noise),
            or ``"auto"`` (non-private: ``kmeans`` when every class has at least
            :data:`~securedc.kmeans.KMEANS_AUTO_MIN_PER_CENTRE` members per synthetic image, else
            ``mix`` — real-image init copies members into the release and fails the
            membership-inference gate, and small clusters expose their members too; from k-means
            centres the DM loop converges higher than from ``mix``: 82.6 % against 79.2 % after
            300 steps on Fashion-MNIST IPC 10, ``benchmarks/results/init_fmnist.md``.
            ``prototype`` when private, ``noise`` when private with ``prototype_share = 0``).
        init_mix: real images averaged per synthetic image with ``init="mix"``, and the fewest
            members a k-means centre averages with ``init="kmeans"`` (fewer when a class is too
            small).
        optimizer: ``"sgd"`` or ``"adam"`` on the synthetic images.
        lr_img: image learning rate in pixel units (images live in ``[0, 1]``), or ``None``
            for the default of :meth:`resolved_lr_img`: SGD from real-image, ``mix`` or ``kmeans`` init uses
            DM's lr 1.0 *in normalised units* (``(x - mean) / std``, Zhao & Bilen's reference),
            i.e. ``mean(std)**2`` in pixel units (0.125 on Fashion-MNIST); SGD from noise or DP
            prototypes uses 1.0 (noise must travel further), scaled down when the DP bank is
            mostly noise (:func:`~securedc.privacy.calibration.noisy_bank_step_scale`); Adam
            0.01. The defaults were chosen on public validation splits (docs/benchmarks.md:
            from ``mix`` init, 0.125 reached 80.0 % validation accuracy at 400 steps where 1.0
            stalls near 78 %).
        momentum: SGD momentum.
        learn_lr: adapt the image learning rate online with hypergradient descent.
        batch_real: real images per class per release (non-private), or the most a private
            release reads per class in expectation under Poisson sampling: the calibration rule's
            q is capped at ``batch_real / max_c N̂_c`` (released or public counts), so a DP run
            costs no more real-side compute than a non-private one with the same releases
            (:func:`~securedc.privacy.calibration.plan_private_run`).
        dsa: DSA strategy; ``"none"`` disables.
        flip: allow the flip op of DSA; ``None`` = automatic (off for 1-channel data).
        real_chunk: images per network pass, on the real side and for the synthetic side's
            forward and backward (0 = automatic from the image size). Results do not depend on it
            beyond float rounding; small chunks keep activations in cache, which on CPUs is ~2x
            faster than one batch of all classes on the real side and ~1.4x on the synthetic side.
        real_precision: ``"fp32"``, ``"bf16"`` (autocast of the distribution term's real-side
            forward; ~1.6x faster on CPUs with AVX512-BF16/AMX, class means agree to ~0.2 %)
            or ``"auto"`` (bf16 where the device supports it natively, else fp32). The
            synthetic side, gradients, clipping and noise always stay fp32.
        grad_weight: weight of the (DP-)gradient-matching term; 0 disables.
        dist_weight: weight of the distribution-discrepancy term.
        seed: master seed; every release derives its own generator from (seed, release).
        reuse: optimisation steps per release of the statistics bank (1 = a fresh network and
            real batch every step, as DM); ``releases`` overrides it.
            The default 4 was chosen by time to accuracy on public data (Fashion-MNIST IPC 10,
            300 s on a 2-core CPU: reuse 1 / 2 / 4 reached 78.8 / 79.9 / 80.3 %;
            ``benchmarks/reuse_fmnist.py``): the real forward pass is most of a CPU step.
        releases: R, the number of releases of the statistics bank (:mod:`securedc.bank`);
            ``None`` = ``ceil(iterations / reuse)``, at most 100 in DP mode (so a private run
            makes no more releases, i.e. real-side passes, than a non-private one with the same
            K). Only releases touch real data; the accountant sees R, never K.
        bank_memory_gb: refuse a statistics bank larger than this (R × C × Σ d_k floats).
        checkpoint_every: save a checkpoint every K steps and at the end (0 = only on Ctrl-C).
        device: ``"auto"`` (CUDA when available, else CPU; see :attr:`resolved_device`),
            ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
    """

    ipc: int = 10
    iterations: int = 300
    discrepancy: str = "mean-embedding"
    discrepancy_kwargs: dict[str, Any] = field(default_factory=dict)
    model: str = "convnet"
    init: Literal["auto", "real", "mix", "kmeans", "noise", "prototype"] = "auto"
    init_mix: int = 4
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr_img: float | None = None
    momentum: float = 0.5
    learn_lr: bool = False
    batch_real: int = 256
    real_chunk: int = 0
    real_precision: Literal["auto", "fp32", "bf16"] = "auto"
    dsa: str = DSA_DEFAULT
    flip: bool | None = None
    grad_weight: float = 0.0
    dist_weight: float = 1.0
    seed: int = 0
    reuse: int = 4
    releases: int | None = None
    bank_memory_gb: float = 4.0
    checkpoint_every: int = 0
    device: str = "auto"
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)

    @property
    def resolved_device(self) -> str:
        """The torch device to run on: ``device`` with ``auto`` resolved (``cuda`` if available, else ``cpu``)."""
        return resolve_device(self.device)

    @property
    def resolved_init(self) -> str:
        """``init`` with ``auto`` resolved (non-private: ``kmeans``, which the run replaces by ``mix``
        when a class is too small: :func:`~securedc.kmeans.auto_real_init`)."""
        if self.init == "auto":
            if self.privacy.private:
                return "prototype" if self.privacy.prototype_share > 0 else "noise"
            return "kmeans"
        return self.init

    @property
    def resolved_releases(self) -> int:
        """R: releases of the statistics bank (see ``releases``)."""
        if self.releases is not None:
            return self.releases
        releases = max(1, math.ceil(self.iterations / self.reuse))
        return min(releases, 100) if self.privacy.private else releases

    def resolved_lr_img(self, std: Sequence[float]) -> float:
        """The image learning rate in pixel units (see ``lr_img``), given the public std."""
        if self.lr_img is not None:
            return float(self.lr_img)
        if self.optimizer == "adam":
            return 0.01
        if self.resolved_init not in REAL_DATA_INITS:
            return 1.0
        s = sum(float(v) for v in std) / max(1, len(std))
        return s * s

    def problems(self) -> list[Problem]:
        typed = type_problems(
            self, integers=("ipc", "iterations", "init_mix", "batch_real", "real_chunk", "checkpoint_every", "seed",
                            "reuse", "releases"),
            reals=("lr_img", "momentum", "grad_weight", "dist_weight", "bank_memory_gb"),
        )
        if typed:  # range checks below would fail on these with a TypeError
            return typed
        out: list[Problem] = []
        for name, value in (("ipc", self.ipc), ("iterations", self.iterations), ("batch_real", self.batch_real),
                            ("real_chunk", self.real_chunk), ("checkpoint_every", self.checkpoint_every),
                            ("reuse", self.reuse), ("releases", self.releases), ("init_mix", self.init_mix)):
            if value is not None and value > MAX_COUNT:
                out.append(Problem(name, f"must be <= {MAX_COUNT:,} (got {value})"))
        out += [p for p in (seed_problem(self.seed, "seed"), model_problem(self.model, "model")) if p is not None]
        if self.ipc < 1:
            out.append(Problem("ipc", f"must be >= 1 (got {self.ipc})"))
        if self.iterations < 0:
            out.append(Problem("iterations", f"must be >= 0 (got {self.iterations})"))
        if self.init not in ("auto", *REAL_DATA_INITS, "noise", "prototype"):
            out.append(Problem("init", f"must be auto, real, mix, kmeans, noise or prototype (got {self.init!r})"))
        if self.init == "prototype" and not (self.privacy.private and self.privacy.prototype_share > 0):
            out.append(Problem("init", "prototype needs a private run with privacy.prototype_share > 0 "
                                       "(the DP class prototypes); use kmeans without --epsilon"))
        if self.init_mix < 1:
            out.append(Problem("init_mix", f"must be >= 1 (got {self.init_mix})"))
        if self.optimizer not in ("sgd", "adam"):
            out.append(Problem("optimizer", f"must be sgd or adam (got {self.optimizer!r})"))
        if self.lr_img is not None and not (math.isfinite(self.lr_img) and self.lr_img > 0):
            out.append(Problem("lr_img", f"must be a finite number > 0 (got {self.lr_img})"))
        if not (0 <= self.momentum < 1):
            out.append(Problem("momentum", f"must be in [0, 1) (got {self.momentum})"))
        if self.batch_real < 1:
            out.append(Problem("batch_real", f"must be >= 1 (got {self.batch_real})"))
        if self.real_chunk < 0:
            out.append(Problem("real_chunk", f"must be >= 0 (got {self.real_chunk})"))
        if self.real_precision not in ("auto", "fp32", "bf16"):
            out.append(Problem("real_precision", f"must be auto, fp32 or bf16 (got {self.real_precision!r})"))
        for name in ("grad_weight", "dist_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                out.append(Problem(name, f"must be >= 0 (got {value})"))
        if self.checkpoint_every < 0:
            out.append(Problem("checkpoint_every", f"must be >= 0 (got {self.checkpoint_every})"))
        if self.reuse < 1:
            out.append(Problem("reuse", f"must be >= 1 (got {self.reuse}); 1 = a fresh release every step"))
        if self.releases is not None and self.releases < 1:
            out.append(Problem("releases", f"must be >= 1 (got {self.releases})"))
        if self.releases is not None and self.iterations >= 1 and self.releases > self.iterations:
            out.append(Problem("releases", f"{self.releases} exceeds iterations {self.iterations}: a release serves >= 1 step"))
        if not (math.isfinite(self.bank_memory_gb) and 0 < self.bank_memory_gb <= MAX_COUNT):
            out.append(Problem("bank_memory_gb", f"must be in (0, {MAX_COUNT:,}] GiB (got {self.bank_memory_gb})"))
        if (problem := device_problem(self.device)) is not None:
            out.append(Problem("device", problem))
        adv = self.adversarial
        if adv.soft_labels and not (adv.enabled and adv.mode == "robust-features"):
            out.append(Problem("adversarial.soft_labels", "needs adversarial.eps > 0 with adversarial.mode "
                                                          "robust-features (the robust teacher)"))
        out += self.privacy.problems()
        out += adv.problems()
        return out

    def validate(self) -> "CondenseConfig":
        """Raise one :class:`ConfigError` listing every problem, or a :class:`PrivacyError`.

        Returns:
            ``self`` so calls can be chained.
        """
        _raise_problems(self)
        if self.privacy.private and self.init in REAL_DATA_INITS:
            raise PrivacyError(
                f"--init {self.init} copies private images into the release and is refused with --epsilon; "
                "use the DP default --init auto (the DP prototypes) or --init noise"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``inf`` becomes the string ``"inf"``; see :func:`~securedc.jsonsafe.json_ready`)."""
        return json_ready(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CondenseConfig":
        """Inverse of :meth:`to_dict`.

        Raises:
            DataError: ``data`` is not a configuration this securedc writes (unknown or mistyped fields).
        """
        try:
            data = dict(data)
            privacy = dict(data.pop("privacy", {}))
            if isinstance(privacy.get("epsilon"), str):
                privacy["epsilon"] = float(privacy["epsilon"])
            adversarial = dict(data.pop("adversarial", {}))
            return cls(privacy=PrivacyConfig(**privacy), adversarial=AdversarialConfig(**adversarial), **data)
        except (TypeError, ValueError) as err:
            raise DataError(f"not a securedc configuration ({err})") from None

    @classmethod
    def from_options(cls, base: "CondenseConfig | None" = None, **options: Any) -> "CondenseConfig":
        """The one constructor from keyword options, used by the CLI, :func:`securedc.condense` and the plugins.

        Options are the fields of :class:`CondenseConfig` plus flat names for the nested ones:
        ``epsilon``, ``delta``, ``accountant``, ``clip``, ``sample_rate``, ``counts``, ``count_share``,
        ``prototype_share``, ``prototype_clusters``, ``subspace``
        (:class:`PrivacyConfig`) and ``adv_eps``, ``adv_steps``, ``adv_alpha``, ``adv_weight``,
        ``adv_network``, ``adv_synthetic``, ``adv_mode``, ``robust_extractor``, ``soft_labels``, ...
        (:data:`ADVERSARIAL_OPTIONS`). A value of ``None`` means *not given* (``base``'s value stays);
        any other value overrides ``base`` — ``epsilon=inf`` makes the run non-private and
        ``adv_eps=0`` switches the adversarial term off. Numbers may be text (``"8/255"``, ``"inf"``).

        Args:
            base: the configuration to start from (default :class:`CondenseConfig`).
            **options: the options to set.

        Returns:
            The validated configuration.

        Raises:
            ConfigError: an unknown option, unparsable number or invalid value (all named at once).
            PrivacyError: an option that would break the DP guarantee.

        Example:
            >>> dp = CondenseConfig.from_options(ipc=1, epsilon="8", adv_eps="8/255")
            >>> dp.privacy.epsilon, round(dp.adversarial.eps, 4)
            (8.0, 0.0314)
            >>> off = CondenseConfig.from_options(dp, epsilon=math.inf, adv_eps=0)
            >>> off.privacy.private, off.adversarial.enabled, off.ipc
            (False, False, 1)
        """
        base = base or cls()
        given = {k: v for k, v in options.items() if v is not None}
        top = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(given) - top - set(PRIVACY_OPTIONS) - set(ADVERSARIAL_OPTIONS))
        if unknown:
            raise ConfigError(f"unknown condense option(s) {unknown}; valid: "
                              f"{sorted(top | set(PRIVACY_OPTIONS) | set(ADVERSARIAL_OPTIONS))}")
        for key in _NUMBER_OPTIONS & given.keys():
            given[key] = parse_number(given[key], name=option_field(key))
        if isinstance(given.get("prototype_clusters"), str) and given["prototype_clusters"].strip().isdigit():
            given["prototype_clusters"] = int(given["prototype_clusters"])
        if "robust_extractor" in given:
            given["robust_extractor"] = str(given["robust_extractor"])
        privacy = dataclasses.replace(given.pop("privacy", base.privacy),
                                      **{PRIVACY_OPTIONS[k]: given.pop(k) for k in list(given) if k in PRIVACY_OPTIONS})
        adversarial = dataclasses.replace(
            given.pop("adversarial", base.adversarial),
            **{ADVERSARIAL_OPTIONS[k]: given.pop(k) for k in list(given) if k in ADVERSARIAL_OPTIONS},
        )
        return dataclasses.replace(base, privacy=privacy, adversarial=adversarial, **given).validate()


#: flat option name → :class:`PrivacyConfig` field (:meth:`CondenseConfig.from_options`)
PRIVACY_OPTIONS = {name: name for name in ("epsilon", "delta", "accountant", "clip", "sample_rate", "counts",
                                           "count_share", "prototype_share", "prototype_clusters", "subspace")}

#: flat option name → :class:`AdversarialConfig` field (:meth:`CondenseConfig.from_options`)
ADVERSARIAL_OPTIONS = {
    "adv_eps": "eps", "adv_steps": "steps", "adv_alpha": "alpha", "adv_weight": "weight",
    "adv_synthetic": "perturb_synthetic", "adv_network": "attack_network", "adv_mode": "mode",
    "robust_extractor": "robust_extractor", "extractor_epochs": "extractor_epochs", "retrain_every": "retrain_every",
    "soft_labels": "soft_labels", "soft_label_temperature": "soft_label_temperature",
}

_NUMBER_OPTIONS = {"epsilon", "delta", "sample_rate", "adv_eps", "adv_alpha"}


def option_field(option: str) -> str:
    """The configuration field a flat option of :meth:`CondenseConfig.from_options` sets.

    Example:
        >>> option_field("adv_eps"), option_field("epsilon"), option_field("ipc")
        ('adversarial.eps', 'privacy.epsilon', 'ipc')
    """
    if option in PRIVACY_OPTIONS:
        return f"privacy.{PRIVACY_OPTIONS[option]}"
    if option in ADVERSARIAL_OPTIONS:
        return f"adversarial.{ADVERSARIAL_OPTIONS[option]}"
    return option
