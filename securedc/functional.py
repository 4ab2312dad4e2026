"""Small pure tensor functions shared by discrepancies, terms and the mechanism."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["class_sums", "class_means", "clip_rows", "zero_nonfinite_rows", "noise_images"]


def class_sums(vectors: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Per-class sums of row vectors.

    Args:
        vectors: ``[n, d]``.
        labels: ``[n]`` int64 in ``[0, num_classes)``.
        num_classes: number of classes C.

    Returns:
        ``[C, d]``; a class without rows gets a zero row.

    Example:
        >>> class_sums(torch.ones(3, 2), torch.tensor([0, 1, 1]), 3)
        tensor([[1., 1.],
                [2., 2.],
                [0., 0.]])
    """
    out = vectors.new_zeros(num_classes, vectors.shape[1])
    return out.index_add(0, labels, vectors)


def class_means(vectors: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Exact per-class means (zero for an empty class).

    Example:
        >>> class_means(torch.tensor([[1.0], [3.0], [5.0]]), torch.tensor([0, 0, 1]), 2)
        tensor([[2.],
                [5.]])
    """
    counts = torch.bincount(labels, minlength=num_classes).clamp_min(1).to(vectors.dtype)
    return class_sums(vectors, labels, num_classes) / counts[:, None]


def clip_rows(vectors: Tensor, bound: float) -> Tensor:
    """Scale each row to L2 norm at most ``bound`` (per-sample clipping, Abadi et al. CCS 2016).

    Example:
        >>> clip_rows(torch.tensor([[3.0, 4.0], [0.3, 0.4]]), 1.0)
        tensor([[0.6000, 0.8000],
                [0.3000, 0.4000]])
    """
    norms = vectors.norm(dim=1, keepdim=True)
    factor = (bound / (norms + 1e-12)).clamp(max=1.0)
    return vectors * factor


def zero_nonfinite_rows(vectors: Tensor) -> tuple[Tensor, Tensor]:
    """Replace every row holding a NaN or ±inf by zeros; returns (rows, mask of the zeroed rows).

    A non-finite row would turn its class sum into NaN after clipping and so reveal that the
    example was sampled; a zero row adds nothing and is within any clipping bound.

    Example:
        >>> rows, bad = zero_nonfinite_rows(torch.tensor([[1.0, float("nan")], [2.0, 3.0]]))
        >>> rows, bad
        (tensor([[0., 0.],
                [2., 3.]]), tensor([ True, False]))
    """
    bad = ~torch.isfinite(vectors).all(dim=1)
    if bool(bad.any()):
        vectors = torch.where(bad[:, None], torch.zeros((), dtype=vectors.dtype, device=vectors.device), vectors)
    return vectors, bad


def noise_images(shape: tuple[int, ...], *, generator: torch.Generator) -> Tensor:
    """Public noise images ``0.5 + 0.2·N(0, 1)`` clipped to [0, 1] (DP initialisation, reference batches).

    Example:
        >>> x = noise_images((2, 1, 4, 4), generator=torch.Generator().manual_seed(0))
        >>> x.shape, bool(x.min() >= 0), bool(x.max() <= 1)
        (torch.Size([2, 1, 4, 4]), True, True)
    """
    return (0.5 + 0.2 * torch.randn(shape, generator=generator)).clamp(0, 1)
