"""Access to the real data: one Gaussian mechanism per release (docs/privacy.md).

The condenser never holds the real images. It hands a *vector function* to a
mechanism, which samples real examples, turns each into one row per term, and
returns per-class statistics:

* :class:`ExactMechanism` (non-private): a fixed-size per-class sample, exact class
  statistics (``Discrepancy.reduce``), real-image initialisation allowed.
* :class:`GaussianMechanism` (DP): Poisson sampling with rate q, per-part clipping to
  C_k, per-class sums, Gaussian noise N(0, σ²C²) with C = sqrt(Σ C_k²) on every class
  sum, division by the expected count q·N_c, where N_c is either declared public by the
  user or itself released through the mechanism (:meth:`GaussianMechanism.release_counts`).
  One example touches one class, so a release is one sampled Gaussian mechanism with
  sensitivity C under add/remove-one neighbours.

Privacy:
    Everything the mechanism releases is covered by the accountant's (ε, δ); nothing else
    about the real data leaves it. Its secret randomness comes from
    :class:`~securedc.privacy.streams.SecretStreams` (one stream per release and class).

References:
    Abadi et al., "Deep Learning with Differential Privacy", CCS 2016, arXiv:1607.00133.
    Mironov et al., "Rényi Differential Privacy of the Sampled Gaussian Mechanism", 2019, arXiv:1908.10530.
"""

from __future__ import annotations

import abc
import functools
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from securedc.errors import DataError, PrivacyError
from securedc.functional import class_means, class_sums, clip_rows, zero_nonfinite_rows
from securedc.kmeans import kmeans_centres
from securedc.privacy.centres import (
    centre_pool,
    centres_from_sums,
    cluster_sums,
    pooled,
    pooled_dim,
    round_sensitivity,
    split_centres,
    upsampled,
)
from securedc.privacy.streams import CENTRES_DOMAIN, COUNTS_DOMAIN, PROTOTYPES_DOMAIN, SecretStreams

__all__ = [
    "class_generator",
    "VectorFn",
    "Reducer",
    "Mechanism",
    "ExactMechanism",
    "GaussianMechanism",
    "poisson_sample",
    "noisy_class_means",
    "clipped_class_sums",
    "noisy_means_from_sums",
    "shrink_counts",
]

#: maps a real batch (images in [0,1], labels) to one ``[n, d_k]`` tensor per term
VectorFn = Callable[[Tensor, Tensor], Sequence[Tensor]]
#: exact (non-private) reducer of one part: (vectors, labels, num_classes) -> [C, d_k]
Reducer = Callable[[Tensor, Tensor, int], Tensor]


def class_generator(seed: int, cls: int) -> torch.Generator:
    """Generator of class ``cls`` in the step with seed ``seed``.

    Sampling and noise are drawn per class, so a process that owns a subset of the
    classes (``plugins.distributed``) draws exactly what a single process draws.
    """
    return torch.Generator().manual_seed((seed * 6_364_136_223 + 1_442_695_041 * (cls + 1)) % (2**63 - 1))


def poisson_sample(
    num_examples: int, rate: float, *, generator: torch.Generator | None = None, uniforms: Tensor | None = None
) -> Tensor:
    """Indices of a Poisson sample: each example independently with probability ``rate``.

    The coins are ``uniforms`` (``[num_examples]`` in [0, 1), e.g. from a secret stream) or
    drawn from ``generator``.

    Example:
        >>> idx = poisson_sample(1000, 0.1, generator=torch.Generator().manual_seed(0))
        >>> 60 < idx.numel() < 140
        True
    """
    coins = uniforms if uniforms is not None else torch.rand(num_examples, generator=generator)
    return (coins < rate).nonzero().flatten()


def noisy_class_means(
    parts: Sequence[Tensor],
    labels: Tensor,
    *,
    clip_bounds: Sequence[float],
    noise_multiplier: float,
    expected_counts: Tensor,
    generator: torch.Generator | None = None,
) -> list[Tensor]:
    """Functional core of one release: clip each part per sample, sum per class, add noise, divide.

    Non-finite rows are zeroed before clipping (:func:`~securedc.functional.zero_nonfinite_rows`).

    Args:
        parts: one ``[n, d_k]`` tensor per term (same rows = same examples).
        labels: ``[n]`` class of each row.
        clip_bounds: C_k for each part.
        noise_multiplier: σ; the noise std on each class sum is ``σ · sqrt(Σ C_k²)``.
        expected_counts: ``[C]`` public normaliser per class (q·N_c).
        generator: source of the noise (tests and examples; the mechanism uses secret streams).

    Returns:
        One ``[C, d_k]`` noisy mean per part.

    Example:
        >>> parts = [torch.ones(4, 2)]
        >>> out = noisy_class_means(parts, torch.tensor([0, 0, 1, 1]), clip_bounds=[10.0],
        ...     noise_multiplier=0.0, expected_counts=torch.tensor([2.0, 2.0]))
        >>> out[0]
        tensor([[1., 1.],
                [1., 1.]])
    """
    if len(parts) != len(clip_bounds):
        raise ValueError("one clip bound per part is required")
    num_classes = expected_counts.shape[0]
    sums = clipped_class_sums(parts, labels, clip_bounds=clip_bounds, num_classes=num_classes)[0]
    total_c = math.sqrt(sum(c * c for c in clip_bounds))
    widths = [s.shape[1] for s in sums]
    noise = torch.randn(num_classes, sum(widths), generator=generator or torch.Generator()) * (noise_multiplier * total_c)
    return noisy_means_from_sums(sums, noise, expected_counts)


def noisy_means_from_sums(sums: Sequence[Tensor], noise: Tensor, expected_counts: Tensor) -> list[Tensor]:
    """Add ``noise`` ``[C, Σ d_k]`` to the per-part class sums and divide by the expected counts."""
    widths = [s.shape[1] for s in sums]
    return [(s + n.to(s)) / expected_counts.to(s)[:, None] for s, n in zip(sums, noise.split(widths, dim=1))]


def clipped_class_sums(
    parts: Sequence[Tensor], labels: Tensor, *, clip_bounds: Sequence[float], num_classes: int
) -> tuple[list[Tensor], int]:
    """Per-class sums of per-sample parts, each row zeroed if non-finite, then clipped to C_k.

    Returns:
        (one ``[C, d_k]`` float32 sum per part, number of examples with a non-finite part).
    """
    sums, bad = [], torch.zeros(labels.shape[0], dtype=torch.bool)
    for p, bound in zip(parts, clip_bounds):
        rows, nonfinite = zero_nonfinite_rows(p.detach().float().cpu())
        bad |= nonfinite
        sums.append(class_sums(clip_rows(rows, bound), labels.cpu(), num_classes))
    return sums, int(bad.sum())


def shrink_counts(noisy: Tensor, noise_std: float) -> Tensor:
    """Empirical-Bayes shrinkage of noisy class counts towards their mean (post-processing).

    ``λ = max(0, s² − τ²) / s²`` with ``s²`` the noisy counts' variance and τ the noise std;
    results are clamped to ≥ 1.

    Example:
        >>> shrink_counts(torch.tensor([10.0, 10.0]), 1.0).tolist()
        [10.0, 10.0]
    """
    spread = float(noisy.var()) if noisy.numel() > 1 else 0.0
    lam = max(0.0, spread - noise_std**2) / spread if spread > 0 else 0.0
    return (lam * noisy + (1 - lam) * noisy.mean()).clamp_min(1.0)


class Mechanism(abc.ABC):
    """The only holder of the real training data during condensation."""

    def __init__(
        self, images: Tensor, labels: Tensor, *, num_classes: int, classes: Sequence[int] | None = None
    ) -> None:
        if images.ndim != 4 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise DataError("real data must be images [N, C, H, W] with labels [N]")
        self._images = images
        self._labels = labels
        self.num_classes = num_classes
        self.class_counts = torch.bincount(labels, minlength=num_classes)
        if (self.class_counts == 0).any():
            missing = (self.class_counts == 0).nonzero().flatten().tolist()
            raise DataError(f"classes {missing} have no training images")
        self.classes = sorted(set(classes)) if classes is not None else list(range(num_classes))
        if not self.classes or min(self.classes) < 0 or max(self.classes) >= num_classes:
            raise DataError(f"class subset {classes} is not within 0..{num_classes - 1}")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self._images.shape[1:])  # type: ignore[return-value]

    @property
    def num_examples(self) -> int:
        return int(self._labels.shape[0])

    @functools.cached_property
    def data_sha256(self) -> str:
        """SHA-256 of the real images and labels: binds a private checkpoint to its data.

        Privacy:
            Computed from the private data: for checkpoints and owner files only, never a release.
        """
        from securedc.data.bundle import compute_fingerprint

        empty = self._labels[:0]
        return compute_fingerprint(self._images, self._labels, self._images[:0], empty)

    @property
    @abc.abstractmethod
    def private(self) -> bool: ...

    @abc.abstractmethod
    def release(
        self,
        vector_fn: VectorFn,
        *,
        seed: int,
        reducers: Sequence[Reducer | None] | None = None,
        device: torch.device | str = "cpu",
    ) -> list[Tensor]:
        """Sample real data, map it through ``vector_fn`` and return per-class statistics.

        Args:
            vector_fn: maps a real batch to one ``[n, d_k]`` tensor per term.
            seed: the step's seed; per-class generators derive from it (:func:`class_generator`).
            reducers: exact reducers per part (non-private path only).
            device: where ``vector_fn`` runs.

        Returns:
            One ``[C, d_k]`` tensor per part; rows of classes outside ``self.classes`` are zero.
        """

    def real_init(self, ipc: int, *, seed: int, mix: int = 1) -> Tensor:
        """Random real images per owned class for initialisation (non-private only).

        ``mix > 1`` returns the pixel mean of ``mix`` distinct random real images per synthetic
        image (a class prototype that copies no single example).
        """
        raise PrivacyError("initialising from real images is not allowed in DP mode; use --init noise")

    def kmeans_init(self, ipc: int, *, seed: int, min_members: int = 1) -> Tensor:
        """``ipc`` k-means centres per owned class (:func:`~securedc.kmeans.kmeans_centres`; non-private only),
        each the mean of at least ``min_members`` real images of its class."""
        raise PrivacyError("initialising from real images is not allowed in DP mode; use --init noise")


class ExactMechanism(Mechanism):
    """Non-private access: ``batch_per_class`` random real images per class, exact statistics.

    Args:
        images, labels: the real training set.
        num_classes: C.
        batch_per_class: images per class per step (all of a class if it has fewer).
    """

    private = False

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        *,
        num_classes: int,
        batch_per_class: int,
        classes: Sequence[int] | None = None,
    ) -> None:
        super().__init__(images, labels, num_classes=num_classes, classes=classes)
        self.batch_per_class = batch_per_class
        order = torch.argsort(labels, stable=True)
        self._by_class = [order[labels[order] == c] for c in range(num_classes)]

    def _sample(self, seed: int) -> Tensor:
        picks = []
        for c in self.classes:
            idx = self._by_class[c]
            k = min(self.batch_per_class, idx.numel())
            picks.append(idx[torch.randperm(idx.numel(), generator=class_generator(seed, c))[:k]])
        return torch.cat(picks)

    def release(self, vector_fn, *, seed, reducers=None, device="cpu"):
        idx = self._sample(seed)
        x, y = self._images[idx].to(device), self._labels[idx].to(device)
        with torch.no_grad():
            parts = [p.detach() for p in vector_fn(x, y)]
        reducers = reducers or [None] * len(parts)
        return [
            (red(p, y, self.num_classes) if red is not None else class_means(p, y, self.num_classes))
            for p, red in zip(parts, reducers)
        ]

    def real_init(self, ipc: int, *, seed: int, mix: int = 1) -> Tensor:
        self._check_init_size(ipc)
        out = []
        for c in self.classes:
            idx = self._by_class[c]
            k = max(1, min(mix, idx.numel() // ipc))  # distinct images per prototype, as many as the class allows
            pick = idx[torch.randperm(idx.numel(), generator=class_generator(seed, c))[: ipc * k]]
            out.append(self._images[pick].reshape(ipc, k, *self.image_shape).mean(dim=1))
        return torch.cat(out)

    def kmeans_init(self, ipc: int, *, seed: int, min_members: int = 1) -> Tensor:
        self._check_init_size(ipc)
        return torch.cat([
            kmeans_centres(self._images[self._by_class[c]], ipc, generator=class_generator(seed, c),
                           min_members=min_members)
            for c in self.classes
        ])

    def _check_init_size(self, ipc: int) -> None:
        too_small = [c for c in self.classes if self._by_class[c].numel() < ipc]
        if too_small:
            raise DataError(f"--ipc {ipc} is larger than classes {too_small}; lower --ipc")


class GaussianMechanism(Mechanism):
    """DP access: Poisson sampling + per-part clipping + Gaussian noise on class sums.

    Construction holds the data; :meth:`configure` fixes (q, σ, normaliser) once the run is
    calibrated (:mod:`securedc.privacy.calibration`). Every access to the real data is one of

    * :meth:`release_counts` — per-class counts plus N(0, σ₀²) (sensitivity 1), once, when the
      user does not declare the counts public and no prototypes are released;
    * :meth:`release_prototypes` — per-class mean images (with the counts, unless public) from
      one full-batch Gaussian release, once; :meth:`repeat_prototypes` and :meth:`top_up_prototypes`
      release the same sums again with fresh noise, :meth:`release_centres` runs DP Lloyd rounds
      (sub-class prototypes, :mod:`securedc.privacy.centres`);
    * :meth:`release` — one Poisson-sampled Gaussian release of the per-class sums of every
      term's clipped per-sample vector.

    Each access is appended to :attr:`accesses` (kind, σ, q), so a test or the owner can check
    the accountant's history against what really touched the data.

    Args:
        images, labels: the real training set (held privately here).
        num_classes: C.
        clip_bounds: C_k per part (one per active term, in the order ``vector_fn`` returns them).
        classes: the classes this process releases (all by default).
        streams: the SECRET random streams (:class:`SecretStreams`); ``None`` draws a fresh
            128-bit key from the OS CSPRNG. It is never put in a manifest.
        noise_seed: shorthand for ``streams=SecretStreams(key=noise_seed)`` (tests, class-subset
            processes of one run); never publish it.
        chunk: real examples per call of ``vector_fn`` (bounds memory; results do not depend on it).

    Privacy:
        One example touches one class, so the release of a step is one sampled Gaussian
        mechanism with sensitivity ``C = sqrt(Σ C_k²)`` under add/remove-one neighbours.
        Sampling coins and noise come from per-(release, class) secret streams that never repeat;
        an empty Poisson sample runs ``vector_fn`` on a zero image (same work, no real data);
        non-finite per-sample rows are zeroed before clipping and counted in
        :attr:`nonfinite_rows` (the owner's log, never released).
    """

    private = True

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        *,
        num_classes: int,
        clip_bounds: Sequence[float],
        classes: Sequence[int] | None = None,
        streams: SecretStreams | None = None,
        noise_seed: int | None = None,
        sample_rate: float | None = None,
        noise_multiplier: float | None = None,
        chunk: int = 2048,
    ) -> None:
        super().__init__(images, labels, num_classes=num_classes, classes=classes)
        if streams is not None and noise_seed is not None:
            raise PrivacyError("give either streams or noise_seed, not both")
        self.streams = streams if streams is not None else SecretStreams(key=noise_seed)
        self.clip_bounds = [float(c) for c in clip_bounds]
        if any(not (math.isfinite(c) and c > 0) for c in self.clip_bounds):
            raise PrivacyError(f"clip bounds must be finite and > 0 (got {self.clip_bounds})")
        self.chunk = int(chunk)
        self.sample_rate: float | None = None
        self.noise_multiplier: float | None = None
        self.accounted_noise_multiplier: float | None = None
        self.expected_counts: Tensor | None = None
        self._prototype_release: tuple[Tensor, float, bool] | None = None
        self._prototype_streams = 0  # releases drawn from the prototype noise domain (each its own stream)
        self.accesses: list[tuple[str, float, float]] = []
        self.nonfinite_rows = 0
        self.last_batch_size = 0
        order = torch.argsort(labels, stable=True)
        self._by_class = [order[labels[order] == c] for c in range(num_classes)]
        if sample_rate is not None and noise_multiplier is not None:  # counts treated as public
            self.configure(
                sample_rate=sample_rate,
                noise_multiplier=noise_multiplier,
                expected_counts=self.class_counts.double() * float(sample_rate),
            )

    @property
    def noise_seed_given(self) -> bool:
        return self.streams.given

    @property
    def sensitivity(self) -> float:
        return math.sqrt(sum(c * c for c in self.clip_bounds))

    def configure(self, *, sample_rate: float, noise_multiplier: float, expected_counts: Tensor,
                  accounted_noise_multiplier: float | None = None) -> None:
        """Fix q, σ and the public normaliser (expected sampled count per class).

        ``accounted_noise_multiplier`` (default σ) is the σ the accountant composes for each release:
        smaller than the σ the releases add only after a prototype top-up took part of their privacy
        curve (:func:`~securedc.privacy.calibration.top_up_split`).
        """
        if not (0 < sample_rate <= 1):
            raise PrivacyError(f"sample rate q must be in (0, 1] (got {sample_rate})")
        if not (math.isfinite(noise_multiplier) and noise_multiplier >= 0):
            raise PrivacyError(f"noise multiplier must be finite and >= 0 (got {noise_multiplier})")
        if expected_counts.shape != (self.num_classes,) or bool((expected_counts <= 0).any()):
            raise PrivacyError("expected counts must be one positive number per class")
        self.sample_rate = float(sample_rate)
        self.noise_multiplier = float(noise_multiplier)
        accounted = noise_multiplier if accounted_noise_multiplier is None else accounted_noise_multiplier
        if not (math.isfinite(accounted) and 0 <= accounted <= noise_multiplier):
            raise PrivacyError(f"accounted noise multiplier must be in [0, {noise_multiplier:g}] (got {accounted})")
        self.accounted_noise_multiplier = float(accounted)
        self.expected_counts = expected_counts.double().clone()

    def release_counts(self, *, noise_multiplier: float) -> Tensor:
        """Per-class counts + N(0, σ₀²), shrunk towards their mean (post-processing); all classes.

        Under add/remove-one neighbours the count vector has L2 sensitivity 1, so this is a
        Gaussian mechanism with noise multiplier σ₀ (q = 1). The noisy counts are shrunk towards
        their average by the empirical-Bayes factor ``λ = max(0, s² − σ₀²) / s²`` (s² = the noisy
        counts' variance), which only post-processes the release; results are clamped to ≥ 1.

        Returns:
            ``[C]`` float64 estimated counts.
        """
        if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
            raise PrivacyError(f"count noise multiplier must be > 0 (got {noise_multiplier})")
        noise = torch.stack(
            [self.streams.normal(0, c, 1, domain=COUNTS_DOMAIN)[0] for c in range(self.num_classes)]
        )
        self.accesses.append(("counts", float(noise_multiplier), 1.0))
        return shrink_counts(self.class_counts.double() + noise_multiplier * noise, noise_multiplier)

    #: noise std of the counts of a joint prototype release, in units of σ_p (Δ / w with w = B / 2)
    prototype_count_factor = math.sqrt(5.0)

    def release_prototypes(self, *, noise_multiplier: float, with_counts: bool) -> tuple[Tensor, Tensor | None]:
        """Per-class mean images (and counts) from one Gaussian release over all members (q = 1).

        Each example contributes the vector ``(x − ½, w)``: its pixels centred on the public
        mid-grey (every coordinate in [−½, ½], so ``‖x − ½‖ ≤ B = ½·sqrt(D)`` and nothing is ever
        clipped) and, when ``with_counts``, a constant ``w = B / 2`` whose class sum is the count
        times ``w``. Under add/remove-one neighbours one example moves one class's vector by at most
        ``Δ = sqrt(B² + w²)``, so adding ``N(0, σ₀²Δ²)`` to every coordinate of every class sum is
        one Gaussian mechanism with noise multiplier σ₀. Counts are recovered as ``sum_w / w`` and
        shrunk like :meth:`release_counts`; prototypes are ``½ + sum_x / count`` clamped to [0, 1]
        (post-processing). With public counts the exact counts divide and ``Δ = B``.

        Args:
            noise_multiplier: σ₀.
            with_counts: release the counts jointly (``False`` = counts declared public).

        Returns:
            ``(prototypes [C, *image_shape] in [0, 1], counts [C] float64 or None)``. Like
            :meth:`release_counts` it covers all classes, so class-subset processes of one run
            (same key) release identical prototypes and counts.

        References:
            Dwork & Roth, "The Algorithmic Foundations of Differential Privacy", 2014 (Gaussian
            mechanism); the DP class-mean prototype is the standard baseline of DP data release.
        """
        if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
            raise PrivacyError(f"prototype noise multiplier must be > 0 (got {noise_multiplier})")
        self.accesses.append(("prototypes", float(noise_multiplier), 1.0))
        sums = self._noisy_prototype_sums(noise_multiplier, with_counts=with_counts)
        self._prototype_release = (sums, float(noise_multiplier), with_counts)
        return self._prototypes_from(sums, noise_multiplier, with_counts=with_counts)

    def top_up_prototypes(self, *, noise_multiplier: float) -> tuple[Tensor, Tensor | None]:
        """A later, independent release of the prototype sums, combined with the earlier ones by inverse variance.

        The same vectors and sensitivity as :meth:`release_prototypes` with fresh noise ``σ_B``;
        the noisy sums are averaged with weights ``1/σ_p²`` and ``1/σ_B²`` (post-processing),
        which equals one release with ``σ = (σ_p⁻² + σ_B⁻²)^(-1/2)``. The caller accounts for it
        (:func:`~securedc.privacy.calibration.top_up_split` fits it under the planned releases).

        Returns:
            The combined ``(prototypes, counts or None)`` as :meth:`release_prototypes`.

        Raises:
            PrivacyError: no prototype release to top up, or σ_B not > 0.
        """
        return self._combine_prototypes(noise_multiplier, kind="prototypes-top-up")

    def repeat_prototypes(self, *, noise_multiplier: float) -> tuple[Tensor, Tensor | None]:
        """One more round of the prototype release (kind ``"prototypes"``), combined like :meth:`top_up_prototypes`.

        The rounds of a prototype share that did not split its classes
        (:func:`~securedc.privacy.centres.choose_clusters`): ``L`` rounds at ``σ_p·sqrt(L)`` combine
        to exactly one release at ``σ_p``.
        """
        return self._combine_prototypes(noise_multiplier, kind="prototypes")

    def _combine_prototypes(self, noise_multiplier: float, *, kind: str) -> tuple[Tensor, Tensor | None]:
        if self._prototype_release is None:
            raise PrivacyError("a further prototype release needs a prototype release first")
        if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
            raise PrivacyError(f"prototype noise multiplier must be > 0 (got {noise_multiplier})")
        first, sigma_p, with_counts = self._prototype_release
        self.accesses.append((kind, float(noise_multiplier), 1.0))
        second = self._noisy_prototype_sums(noise_multiplier, with_counts=with_counts)
        w1, w2 = sigma_p ** -2, noise_multiplier ** -2
        sums = (w1 * first + w2 * second) / (w1 + w2)
        sigma = (w1 + w2) ** -0.5
        self._prototype_release = (sums, sigma, with_counts)
        return self._prototypes_from(sums, sigma, with_counts=with_counts)

    def release_centres(self, *, noise_multiplier: float, clusters: int, rounds: int) -> Tensor:
        """``clusters`` DP sub-class prototypes per class from ``rounds`` Lloyd rounds (q = 1 each).

        Starts from the released class means (:meth:`release_prototypes` first) split along secret
        random directions; each round assigns every member to its nearest current centre on
        average-pooled images, releases the per-cluster sums and sizes with Gaussian noise
        ``N(0, σ²Δ²)`` and moves each centre to its noisy mean (:mod:`securedc.privacy.centres`).
        One example moves one row of one class by at most Δ, so each round is one Gaussian
        mechanism with noise multiplier σ; each is appended to :attr:`accesses` as ``"prototypes"``.

        Returns:
            ``[C, clusters, *image_shape]`` centres in [0, 1] (all classes, like the prototypes).

        Raises:
            PrivacyError: no class-mean release before, σ not > 0, or fewer than 2 clusters / 1 round.
        """
        if self._prototype_release is None:
            raise PrivacyError("sub-class prototypes start from the class-mean release: release_prototypes first")
        if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
            raise PrivacyError(f"prototype noise multiplier must be > 0 (got {noise_multiplier})")
        if clusters < 2 or rounds < 1:
            raise PrivacyError(f"sub-class prototypes need >= 2 clusters and >= 1 round (got {clusters}, {rounds})")
        first, sigma, with_counts = self._prototype_release
        means, _ = self._prototypes_from(first, sigma, with_counts=with_counts)
        pool, dim = centre_pool(self.image_shape), pooled_dim(self.image_shape)
        delta, weight = round_sensitivity(dim, with_counts=True)
        points = []
        for c in range(self.num_classes):
            x, bad = zero_nonfinite_rows(pooled(self._images[self._by_class[c]], pool))
            self.nonfinite_rows += int(bad.sum())
            points.append(clip_rows(x, 0.5 * math.sqrt(dim)))  # a no-op on images in [0, 1]
        centres = [
            split_centres(pooled(means[c : c + 1], pool)[0], clusters,
                          self.streams.normal(0, c, clusters * dim, domain=CENTRES_DOMAIN))
            for c in range(self.num_classes)
        ]
        count_std = noise_multiplier * delta / weight
        for _ in range(rounds):
            self.accesses.append(("prototypes", float(noise_multiplier), 1.0))
            stream = self._next_prototype_stream()
            for c in range(self.num_classes):
                noise = self.streams.normal(stream, c, clusters * (dim + 1), domain=PROTOTYPES_DOMAIN)
                noisy = cluster_sums(points[c], centres[c], weight=weight) + noise.view(clusters, dim + 1) * (
                    noise_multiplier * delta)
                centres[c] = centres_from_sums(noisy, centres[c], weight=weight, count_std=count_std)
        return torch.stack([upsampled(c, self.image_shape, pool) for c in centres])

    def _next_prototype_stream(self) -> int:
        """Index of the next prototype-domain noise stream (never the same twice in one mechanism)."""
        self._prototype_streams += 1
        return self._prototype_streams - 1

    def _noisy_prototype_sums(self, noise_multiplier: float, *, with_counts: bool) -> Tensor:
        """The class sums of :meth:`prototype_sums` plus Gaussian noise from the next prototype stream."""
        sums, sensitivity = self.prototype_sums(with_counts=with_counts)
        dim = sums.shape[1] - 1
        release = self._next_prototype_stream()
        for c in range(self.num_classes):
            sums[c] += self.streams.normal(release, c, dim + 1, domain=PROTOTYPES_DOMAIN) * noise_multiplier * sensitivity
        return sums

    def _prototypes_from(self, sums: Tensor, noise_multiplier: float, *, with_counts: bool) -> tuple[Tensor, Tensor | None]:
        """Post-processing of released sums: shrunk counts, prototypes ``½ + sum / count`` in [0, 1]."""
        dim = sums.shape[1] - 1
        if with_counts:
            weight = 0.25 * math.sqrt(dim)
            counts = shrink_counts(sums[:, dim] / weight, noise_multiplier * self.prototype_count_factor)
        else:
            counts = self.class_counts.double()
        protos = torch.full((self.num_classes, dim), 0.5, dtype=torch.float64)
        for c in range(self.num_classes):
            protos[c] = (0.5 + sums[c, :dim] / counts[c]).clamp(0, 1)
        return protos.float().view(self.num_classes, *self.image_shape), (counts if with_counts else None)

    def prototype_sums(self, *, with_counts: bool) -> tuple[Tensor, float]:
        """Noise-free class sums ``[C, D + 1]`` of the prototype release and its L2 sensitivity Δ.

        Row c holds ``Σ (x − ½)`` over the members of class c (``D`` pixels, each row clipped to
        ``B = ½·sqrt(D)``, which no image in [0, 1] exceeds) and, with ``with_counts``, ``w·N_c``
        with ``w = B / 2`` in the last column (zero otherwise); all classes.
        SECRET: exact statistics of the data; only :meth:`release_prototypes` may publish them.
        """
        dim = math.prod(self.image_shape)
        bound = 0.5 * math.sqrt(dim)
        weight = bound / 2 if with_counts else 0.0
        sums = torch.zeros(self.num_classes, dim + 1, dtype=torch.float64)
        for c in range(self.num_classes):
            members = self._by_class[c]
            for start in range(0, members.numel(), self.chunk):
                x = self._images[members[start : start + self.chunk]].double().flatten(1) - 0.5
                x, bad = zero_nonfinite_rows(x)
                self.nonfinite_rows += int(bad.sum())
                sums[c, :dim] += clip_rows(x, bound).sum(0)
            sums[c, dim] = weight * members.numel()
        return sums, math.sqrt(bound**2 + weight**2)

    def _poisson(self, release: int, cls: int) -> Tensor:
        members = self._by_class[cls]
        assert self.sample_rate is not None
        coins = self.streams.uniform(release, cls, members.numel())
        return members[poisson_sample(members.numel(), self.sample_rate, uniforms=coins)]

    def release(self, vector_fn, *, seed, reducers=None, device="cpu"):
        if self.sample_rate is None or self.noise_multiplier is None or self.expected_counts is None:
            raise PrivacyError("the mechanism is not calibrated: call configure() first")
        release = int(seed)
        idx = torch.cat([self._poisson(release, c) for c in self.classes])
        self.last_batch_size = int(idx.numel())
        self.accesses.append(("statistics", self.noise_multiplier, self.sample_rate))
        sums: list[Tensor] | None = None
        if idx.numel() == 0:  # same work on a zero image: the timing does not reveal an empty sample
            zero = torch.zeros(1, *self.image_shape, device=device)
            parts = list(vector_fn(zero, torch.tensor([self.classes[0]], device=device)))
            sums = [torch.zeros(self.num_classes, p.shape[1]) for p in parts]
            self._check_parts(parts)
        for start in range(0, idx.numel(), self.chunk):
            part_idx = idx[start : start + self.chunk]
            x, y = self._images[part_idx].to(device), self._labels[part_idx]
            parts = list(vector_fn(x, y.to(device)))
            self._check_parts(parts)
            chunk_sums, bad = clipped_class_sums(parts, y, clip_bounds=self.clip_bounds, num_classes=self.num_classes)
            self.nonfinite_rows += bad
            sums = chunk_sums if sums is None else [a + b for a, b in zip(sums, chunk_sums)]
        assert sums is not None
        widths = [s.shape[1] for s in sums]
        scale = self.noise_multiplier * self.sensitivity
        noise = torch.zeros(self.num_classes, sum(widths), dtype=torch.float32)
        for c in self.classes:
            noise[c] = self.streams.normal(release, c, sum(widths)).float() * scale
        keep = torch.zeros(self.num_classes, 1)
        keep[self.classes] = 1.0  # rows of classes another process releases stay zero
        return [(m * keep).to(device) for m in noisy_means_from_sums(sums, noise, self.expected_counts.float())]

    def _check_parts(self, parts: Sequence[Tensor]) -> None:
        if len(parts) != len(self.clip_bounds):
            raise PrivacyError(f"vector_fn returned {len(parts)} parts for {len(self.clip_bounds)} clip bounds")
