"""The :class:`DatasetBundle`: one labelled image dataset, split into train and test.

Every source in :mod:`securedc.data` returns one. Images are float32 ``[N, C, H, W]`` in
``[0, 1]``, labels int64 ``[N]`` in ``0..K-1``; normalisation constants are *public*
(fixed per dataset or given by the user, never computed from the private data — docs/privacy.md).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch
from torch import Tensor

from securedc.errors import DataError

__all__ = ["DatasetBundle", "compute_fingerprint"]


def compute_fingerprint(
    train_images: Tensor, train_labels: Tensor, test_images: Tensor, test_labels: Tensor
) -> str:
    """SHA-256 (hex) over shapes, dtypes and raw bytes of the four tensors, in that order.

    The dataset name is not hashed, so the same data reached through two sources (e.g.
    ``fashion-mnist`` and ``idx:/usr/share/datasets/fashion-mnist``) has the same fingerprint.
    """
    h = hashlib.sha256()
    for t in (train_images, train_labels, test_images, test_labels):
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)};".encode())
        h.update(t.view(torch.uint8).numpy().data if t.numel() else b"")
    return h.hexdigest()


@dataclass(frozen=True, eq=False)
class DatasetBundle:
    """A labelled image dataset with a fixed train/test split.

    The constructor validates everything (shapes, dtypes, range, contiguous labels, at least
    one training image per class) and fills ``fingerprint`` when it is left empty.

    Attributes:
        name: dataset name as given to :func:`~securedc.data.load_dataset`.
        train_images: float32 ``[N, C, H, W]`` in ``[0, 1]``.
        train_labels: int64 ``[N]`` in ``0..num_classes-1``.
        test_images: float32 ``[M, C, H, W]`` in ``[0, 1]`` (``M`` may be 0).
        test_labels: int64 ``[M]``.
        classes: class names; ``len(classes) == num_classes``.
        mean: public per-channel normalisation mean.
        std: public per-channel normalisation std (> 0).
        source: where the data came from (a loader name or a path).
        fingerprint: SHA-256 hex of the data (:func:`compute_fingerprint`), computed if empty.

    Privacy:
        ``class_counts`` of the training set are treated as public (see docs/privacy.md).

    Example:
        >>> import torch
        >>> b = DatasetBundle(name="toy", train_images=torch.zeros(2, 1, 2, 2),
        ...     train_labels=torch.tensor([0, 1]), test_images=torch.zeros(0, 1, 2, 2),
        ...     test_labels=torch.zeros(0, dtype=torch.int64), classes=("a", "b"),
        ...     mean=(0.5,), std=(0.5,), source="example")
        >>> b.num_classes, b.image_shape, len(b.fingerprint)
        (2, (1, 2, 2), 64)
    """

    name: str
    train_images: Tensor = field(repr=False)
    train_labels: Tensor = field(repr=False)
    test_images: Tensor = field(repr=False)
    test_labels: Tensor = field(repr=False)
    classes: tuple[str, ...] = field(repr=False)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str
    fingerprint: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        self._validate()
        if not self.fingerprint:
            fp = compute_fingerprint(self.train_images, self.train_labels, self.test_images, self.test_labels)
            object.__setattr__(self, "fingerprint", fp)

    def _validate(self) -> None:
        where = f"dataset {self.name!r} ({self.source})"
        for split, x, y in (("train", self.train_images, self.train_labels), ("test", self.test_images, self.test_labels)):
            if not isinstance(x, Tensor) or x.dtype != torch.float32 or x.dim() != 4:
                raise DataError(f"{where}: {split} images must be a float32 tensor [N, C, H, W]; got "
                                f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}")
            if not isinstance(y, Tensor) or y.dtype != torch.int64 or y.dim() != 1:
                raise DataError(f"{where}: {split} labels must be an int64 tensor [N]; got "
                                f"{getattr(y, 'dtype', type(y).__name__)} {tuple(getattr(y, 'shape', ()))}")
            if x.shape[0] != y.shape[0]:
                raise DataError(f"{where}: {x.shape[0]} {split} images but {y.shape[0]} labels")
            if x.numel():
                if not bool(torch.isfinite(x).all()):
                    raise DataError(f"{where}: {split} images contain NaN or inf")
                lo, hi = float(x.min()), float(x.max())
                if lo < 0.0 or hi > 1.0:
                    raise DataError(f"{where}: {split} images must lie in [0, 1]; got [{lo:g}, {hi:g}]")
        if self.train_labels.numel() == 0:
            raise DataError(f"{where}: the training set is empty")
        if self.test_images.shape[0] and self.test_images.shape[1:] != self.train_images.shape[1:]:
            raise DataError(f"{where}: test images {tuple(self.test_images.shape[1:])} differ from train "
                            f"images {tuple(self.train_images.shape[1:])}")
        k = len(self.classes)
        if k < 1:
            raise DataError(f"{where}: no classes")
        for split, y in (("train", self.train_labels), ("test", self.test_labels)):
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= k):
                raise DataError(f"{where}: {split} labels must lie in 0..{k - 1} ({k} classes); "
                                f"got {int(y.min())}..{int(y.max())}")
        counts = torch.bincount(self.train_labels, minlength=k)
        empty = [self.classes[i] for i in range(k) if counts[i] == 0]
        if empty:
            raise DataError(f"{where}: classes {empty[:10]} have no training image; every class needs at least one")
        c = self.channels
        if len(self.mean) != c or len(self.std) != c:
            raise DataError(f"{where}: mean/std need one value per channel ({c}); got {self.mean} / {self.std}")
        if not all(s > 0 for s in self.std):
            raise DataError(f"{where}: std must be > 0 per channel; got {self.std}")

    @property
    def num_classes(self) -> int:
        """Number of classes ``K``."""
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = self.train_images.shape[1:]
        return int(c), int(h), int(w)

    @property
    def channels(self) -> int:
        """Number of channels ``C``."""
        return int(self.train_images.shape[1])

    def class_counts(self) -> Tensor:
        """Training images per class, int64 ``[num_classes]`` (public only if declared so, docs/privacy.md)."""
        return torch.bincount(self.train_labels, minlength=self.num_classes)

    def __repr__(self) -> str:
        return (f"DatasetBundle(name={self.name!r}, train={tuple(self.train_images.shape)}, "
                f"test={tuple(self.test_images.shape)}, classes={self.num_classes}, source={self.source!r}, "
                f"fingerprint={self.fingerprint[:12]}…)")
