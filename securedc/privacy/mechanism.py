"""Access to the real data: one Gaussian mechanism per step (DESIGN.md §2).

The condenser never holds the real images. It hands a *vector function* to a
mechanism, which samples real examples, turns each into one row per term, and
returns per-class statistics:

* :class:`ExactMechanism` (non-private): a fixed-size per-class sample, exact class
  statistics (``Discrepancy.reduce``), real-image initialisation allowed.
* :class:`GaussianMechanism` (DP): Poisson sampling with rate q, per-part clipping to
  C_k, per-class sums, Gaussian noise N(0, σ²C²) with C = sqrt(Σ C_k²) on every class
  sum, division by the *public* expected count q·N_c. One example touches one class,
  so the release of a step is one sampled Gaussian mechanism with sensitivity C.

Privacy:
    Class counts N_c are treated as public. Everything the mechanism releases is
    covered by the accountant's (ε, δ); nothing else about the real data leaves it.

References:
    Abadi et al., "Deep Learning with Differential Privacy", CCS 2016, arXiv:1607.00133.
    Mironov et al., "Rényi Differential Privacy of the Sampled Gaussian Mechanism", 2019, arXiv:1908.10530.
"""

from __future__ import annotations

import abc
import math
import secrets
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from securedc.errors import DataError, PrivacyError
from securedc.functional import class_means, class_sums, clip_rows

__all__ = [
    "class_generator",
    "VectorFn",
    "Reducer",
    "Mechanism",
    "ExactMechanism",
    "GaussianMechanism",
    "poisson_sample",
    "noisy_class_means",
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


def poisson_sample(num_examples: int, rate: float, *, generator: torch.Generator) -> Tensor:
    """Indices of a Poisson sample: each example independently with probability ``rate``.

    Example:
        >>> idx = poisson_sample(1000, 0.1, generator=torch.Generator().manual_seed(0))
        >>> 60 < idx.numel() < 140
        True
    """
    mask = torch.rand(num_examples, generator=generator) < rate
    return mask.nonzero().flatten()


def noisy_class_means(
    parts: Sequence[Tensor],
    labels: Tensor,
    *,
    clip_bounds: Sequence[float],
    noise_multiplier: float,
    expected_counts: Tensor,
    generator: torch.Generator | None = None,
    class_generators: Sequence[torch.Generator | None] | None = None,
) -> list[Tensor]:
    """Clip each part per sample, sum per class, add Gaussian noise, divide by public counts.

    Args:
        parts: one ``[n, d_k]`` tensor per term (same rows = same examples).
        labels: ``[n]`` class of each row.
        clip_bounds: C_k for each part.
        noise_multiplier: σ; the noise std on each class sum is ``σ · sqrt(Σ C_k²)``.
        expected_counts: ``[C]`` public expected sample size per class, q·N_c.
        generator: source of the noise when ``class_generators`` is not given.
        class_generators: one generator per class (``None`` = that class is not
            released here and its row stays zero).

    Returns:
        One ``[C, d_k]`` noisy mean per part.

    Example:
        >>> parts = [torch.ones(4, 2)]
        >>> out = noisy_class_means(parts, torch.tensor([0, 0, 1, 1]), clip_bounds=[10.0],
        ...     noise_multiplier=0.0, expected_counts=torch.tensor([2.0, 2.0]),
        ...     generator=torch.Generator())
        >>> out[0]
        tensor([[1., 1.],
                [1., 1.]])
    """
    if len(parts) != len(clip_bounds):
        raise ValueError("one clip bound per part is required")
    num_classes = expected_counts.shape[0]
    total_c = math.sqrt(sum(c * c for c in clip_bounds))
    if class_generators is None:
        class_generators = [generator or torch.Generator()] * num_classes
    sums = [class_sums(clip_rows(p.detach().float(), b), labels, num_classes) for p, b in zip(parts, clip_bounds)]
    widths = [s.shape[1] for s in sums]
    noise = torch.zeros(num_classes, sum(widths), dtype=torch.float32)
    for c, gen in enumerate(class_generators):
        if gen is not None:
            noise[c] = torch.randn(sum(widths), generator=gen) * (noise_multiplier * total_c)
    out, start = [], 0
    for s, w in zip(sums, widths):
        out.append((s + noise[:, start : start + w].to(s.device)) / expected_counts.to(s)[:, None])
        start += w
    return out


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
        too_small = [c for c in self.classes if self._by_class[c].numel() < ipc]
        if too_small:
            raise DataError(f"--ipc {ipc} is larger than classes {too_small}; lower --ipc")
        out = []
        for c in self.classes:
            idx = self._by_class[c]
            k = max(1, min(mix, idx.numel() // ipc))  # distinct images per prototype, as many as the class allows
            pick = idx[torch.randperm(idx.numel(), generator=class_generator(seed, c))[: ipc * k]]
            out.append(self._images[pick].reshape(ipc, k, *self.image_shape).mean(dim=1))
        return torch.cat(out)


class GaussianMechanism(Mechanism):
    """DP access: Poisson sampling + per-part clipping + Gaussian noise on class sums.

    Args:
        images, labels: the real training set (held privately here).
        num_classes: C.
        sample_rate: q, the same for every example.
        noise_multiplier: σ.
        clip_bounds: C_k per part (one per active term, in the order ``vector_fn`` returns them).
        noise_seed: SECRET seed of the Poisson sampling and of the noise. ``None`` (default)
            draws it from the operating system's CSPRNG (:mod:`secrets`); it is never put in
            the manifest. Give it explicitly only for reproducible tests or for processes
            that must draw the same noise (class subsets), and never publish it.

    Privacy:
        The step seeds derive from the public master seed, which the manifest records. If
        the sampling and the noise were drawn from those seeds alone, anyone holding the
        manifest could regenerate the noise and re-run the deterministic condensation on
        candidate datasets, which voids the guarantee. Both are therefore keyed by the
        secret ``noise_seed`` as well; checkpoints store it (keep checkpoints private).
    """

    private = True

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        *,
        num_classes: int,
        sample_rate: float,
        noise_multiplier: float,
        clip_bounds: Sequence[float],
        classes: Sequence[int] | None = None,
        noise_seed: int | None = None,
    ) -> None:
        super().__init__(images, labels, num_classes=num_classes, classes=classes)
        self.noise_seed = int(noise_seed) if noise_seed is not None else secrets.randbits(62)
        self.noise_seed_given = noise_seed is not None
        if not (0 < sample_rate <= 1):
            raise PrivacyError(f"sample rate q must be in (0, 1] (got {sample_rate})")
        self.sample_rate = float(sample_rate)
        self.noise_multiplier = float(noise_multiplier)
        self.clip_bounds = [float(c) for c in clip_bounds]
        self.expected_counts = self.class_counts.double() * self.sample_rate
        self.last_batch_size = 0
        order = torch.argsort(labels, stable=True)
        self._by_class = [order[labels[order] == c] for c in range(num_classes)]

    @property
    def sensitivity(self) -> float:
        return math.sqrt(sum(c * c for c in self.clip_bounds))

    def release(self, vector_fn, *, seed, reducers=None, device="cpu"):
        gens: list[torch.Generator | None] = [None] * self.num_classes
        picks = []
        keyed = (seed * 2_862_933_555_777_941_757 + self.noise_seed) % (2**63 - 1)
        for c in self.classes:
            gens[c] = class_generator(keyed, c)
            members = self._by_class[c]
            picks.append(members[poisson_sample(members.numel(), self.sample_rate, generator=gens[c])])
        idx = torch.cat(picks)
        self.last_batch_size = int(idx.numel())
        x, y = self._images[idx].to(device), self._labels[idx].to(device)
        if idx.numel() == 0:
            parts = [p[:0] for p in vector_fn(self._images[:1].to(device), self._labels[:1].to(device))]
        else:
            parts = list(vector_fn(x, y))
        if len(parts) != len(self.clip_bounds):
            raise PrivacyError(f"vector_fn returned {len(parts)} parts for {len(self.clip_bounds)} clip bounds")
        stats = noisy_class_means(
            [p.detach().cpu() for p in parts],
            y.cpu(),
            clip_bounds=self.clip_bounds,
            noise_multiplier=self.noise_multiplier,
            expected_counts=self.expected_counts,
            class_generators=gens,
        )
        return [s.float().to(device) for s in stats]
