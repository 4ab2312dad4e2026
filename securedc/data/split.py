"""Per-record splits of labelled data: each example's side is a function of that example alone.

A split made by permuting the indices of a class (``randperm(n_c)``) moves hundreds of
examples when one example is added or removed: the permutation of its class, and the
generator state every later class draws from, change with ``n_c``. Data condensed from one
side of such a split is then a function of a set that differs between neighbouring datasets by
far more than one example, and a differential-privacy guarantee for the condensed set no longer
holds for the data it was split from (a reviewer measured 212 of 1 000 examples changing side
after one addition).

Here each example draws a uniform from a keyed hash of its own bytes (image and label) and
the public seed (BLAKE2b, Aumasson et al. 2013), and lands on the held side when that uniform is
below the fraction. The k-th copy of a repeated example hashes with k, so copies split like
distinct examples; removing one copy changes the number of copies on each side by at most one.
Adding or removing one example therefore changes neither side by more than that example (as a
multiset), so a DP mechanism run on one side is DP with respect to the whole dataset with the
same (ε, δ) (and sampling only amplifies it). The sides are balanced per class in expectation,
not exactly.

Privacy:
    The seed may be public: stability, not secrecy, is what the guarantee needs. The uniforms
    are a function of the private data, so they stay in memory; only a hash of the chosen
    indices goes to the owner record.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch import Tensor

from securedc.errors import ConfigError, DataError

__all__ = ["SPLIT_METHOD", "record_uniforms", "record_split", "missing_classes", "train_test_split"]

#: recorded with a split so an audit can tell whether it can recreate it (older securedc permuted indices)
SPLIT_METHOD = "record-hash-v1"


def record_uniforms(images: Tensor, labels: Tensor, *, seed: int, domain: str) -> Tensor:
    """One uniform in ``[0, 1)`` per example, from a keyed BLAKE2b hash of its bytes and label.

    Args:
        images: ``[N, ...]`` (hashed as their float32 bytes, so the same pixels give the same uniform
            whatever the storage dtype).
        labels: int ``[N]``.
        seed: public key of the hash (another seed gives independent uniforms).
        domain: separates the uses (e.g. ``"test"``, ``"members"``), at most 16 bytes.

    Returns:
        float64 ``[N]``.

    The k-th copy of an example (same bytes and label, in index order) hashes with k.

    Example:
        >>> x, y = torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 0])
        >>> u = record_uniforms(x, y, seed=0, domain="test")
        >>> bool(((u >= 0) & (u < 1)).all()), torch.equal(u[1:], record_uniforms(x[1:], y[1:], seed=0, domain="test"))
        (True, True)
    """
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    key = int(seed).to_bytes(16, "little", signed=True)
    person = domain.encode()
    if len(person) > 16:
        raise ValueError(f"domain {domain!r} is longer than 16 bytes")
    rows = images.detach().to("cpu", torch.float32).contiguous().reshape(images.shape[0], -1).numpy()
    ys = labels.detach().to("cpu", torch.int64).numpy()
    out = np.empty(len(ys), dtype=np.float64)
    seen: dict[bytes, int] = {}
    for i in range(len(ys)):
        h = hashlib.blake2b(rows[i].tobytes(), digest_size=16, key=key, person=person)
        h.update(ys[i].tobytes())
        record = h.digest()
        copy = seen.get(record, 0)  # the k-th copy of a repeated example draws its own uniform
        seen[record] = copy + 1
        u = hashlib.blake2b(record + copy.to_bytes(8, "little"), digest_size=8, key=key, person=person).digest()
        out[i] = int.from_bytes(u, "little") / 2.0**64
    return torch.from_numpy(out)


def record_split(
    images: Tensor, labels: Tensor, *, fraction: float, seed: int, domain: str
) -> tuple[Tensor, Tensor]:
    """Split indices into ``(kept, held)``: an example is held iff its record uniform is below ``fraction``.

    Args:
        images, labels: the examples (see :func:`record_uniforms`).
        fraction: expected share held, in ``[0, 1)``.
        seed, domain: as for :func:`record_uniforms`.

    Returns:
        ``(kept_idx, held_idx)``, sorted int64 (the original order is kept).

    Raises:
        ConfigError: ``fraction`` outside ``[0, 1)``.

    Example:
        >>> x, y = torch.linspace(0, 1, 800).reshape(200, 1, 2, 2), torch.arange(200) % 2
        >>> kept, held = record_split(x, y, fraction=0.25, seed=0, domain="test")
        >>> len(kept) + len(held), 30 < len(held) < 70
        (200, True)
    """
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"the split fraction must lie in [0, 1); got {fraction}")
    held = record_uniforms(images, labels, seed=seed, domain=domain) < fraction
    idx = torch.arange(labels.shape[0])
    return idx[~held], idx[held]


def missing_classes(labels: Tensor, kept: Tensor) -> list[int]:
    """Classes present in ``labels`` with no example among the indices ``kept``, sorted.

    Example:
        >>> missing_classes(torch.tensor([0, 1, 1, 2]), torch.tensor([1, 2]))
        [0, 2]
    """
    return sorted(set(labels.tolist()) - set(labels[kept].tolist()))


def train_test_split(images: Tensor, labels: Tensor, *, test_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Train/test indices for a source without a test split (:func:`record_split`, domain ``"test"``).

    Raises:
        ConfigError: ``test_fraction`` outside ``[0, 1)``.
        DataError: a class with no training example left (give a test split, or more examples).

    Example:
        >>> x, y = torch.linspace(0, 1, 320).reshape(20, 1, 4, 4), torch.arange(20) % 2
        >>> tr, te = train_test_split(x, y, test_fraction=0.5, seed=0)
        >>> len(tr) + len(te), sorted(set(y[tr].tolist()))
        (20, [0, 1])
    """
    train, test = record_split(images, labels, fraction=test_fraction, seed=seed, domain="test")
    missing = missing_classes(labels, train)
    if missing:
        raise DataError(f"class(es) {missing[:10]} have no training example after the {test_fraction:g} test split "
                        "(each example's side is a function of its own bytes); give a test split or more examples")
    return train, test
