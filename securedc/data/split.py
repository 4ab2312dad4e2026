"""Seeded stratified train/test split of labelled data."""

from __future__ import annotations

import torch
from torch import Tensor

from securedc.errors import ConfigError

__all__ = ["stratified_split"]


def stratified_split(labels: Tensor, *, test_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Split indices per class: ``round(n_c * test_fraction)`` of each class go to test.

    Each class keeps at least one training index (a class with one sample stays in train).
    Both index tensors are sorted, so the original order is kept. Same seed -> same split.

    Args:
        labels: int64 ``[N]``.
        test_fraction: share of each class in the test set, in ``[0, 1)``.
        seed: seed of the permutation (a private ``torch.Generator``; global RNG untouched).

    Returns:
        ``(train_idx, test_idx)``, int64.

    Raises:
        ConfigError: ``test_fraction`` outside ``[0, 1)``.

    Example:
        >>> import torch
        >>> tr, te = stratified_split(torch.tensor([0, 0, 0, 0, 1, 1]), test_fraction=0.5, seed=0)
        >>> len(tr), len(te)
        (3, 3)
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ConfigError(f"test_fraction must lie in [0, 1); got {test_fraction}")
    gen = torch.Generator().manual_seed(int(seed))
    train, test = [], []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        n_test = min(int(idx.numel() * test_fraction + 0.5), idx.numel() - 1)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    empty = torch.zeros(0, dtype=torch.int64)
    tr = torch.sort(torch.cat(train)).values if train else empty
    te = torch.sort(torch.cat(test)).values if test else empty
    return tr, te
