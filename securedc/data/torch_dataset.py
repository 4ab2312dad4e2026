"""Build a :class:`DatasetBundle` from any map-style torch ``Dataset`` of ``(image, label)``."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from securedc.data.bundle import DatasetBundle
from securedc.data.convert import _channel_axis, images_to_tensor, labels_to_tensor, remap_labels
from securedc.data.split import train_test_split
from securedc.errors import DataError

__all__ = ["bundle_from_torch_dataset", "image_to_chw"]

_RESIZE_HINT = ("all images must have the same size; resize them first, e.g. "
                "ImageFolder(DIR, transform=torchvision.transforms.Resize((32, 32))) then bundle_from_torch_dataset")


def image_to_chw(image: Any, *, what: str = "image") -> Tensor:
    """Convert one image to float32 ``[C, H, W]`` in ``[0, 1]``.

    Accepts a PIL image (grey and RGB kept; ``1``/``LA`` -> grey, other modes -> RGB), a numpy
    array (``HW``, ``HWC``; ``CHW`` if unambiguous) or a tensor (``CHW`` as torchvision's
    ``ToTensor`` gives; ``HW``; ``HWC`` if unambiguous). uint8 is divided by 255; floats must
    be in ``[0, 1]``.

    Raises:
        DataError: unsupported type, rank or values.

    Example:
        >>> import numpy as np
        >>> image_to_chw(np.zeros((4, 5, 3), np.uint8)).shape
        torch.Size([3, 4, 5])
    """
    prefer = "first"
    if hasattr(image, "mode") and hasattr(image, "convert"):  # PIL image
        mode = image.mode
        if mode not in ("L", "RGB"):
            image = image.convert("L" if mode in ("1", "LA") else "RGB")
        image = np.array(image)  # writable copy
        prefer = "last"
    elif isinstance(image, np.ndarray):
        prefer = "last"
    elif not isinstance(image, Tensor):
        raise DataError(f"{what} must be a PIL image, numpy array or tensor; got {type(image).__name__}")
    arr = torch.as_tensor(image if image.flags.writeable else image.copy()) if isinstance(image, np.ndarray) else image
    if arr.dim() == 2:
        return images_to_tensor(arr[None], what=what)[0]
    if arr.dim() != 3:
        raise DataError(f"{what} must have shape HW, HWC or CHW; got {tuple(arr.shape)}")
    axis = _channel_axis(tuple(arr.shape), prefer)  # type: ignore[arg-type]
    return images_to_tensor(arr[None], layout="NCHW" if axis == "first" else "NHWC", what=what)[0]


def _label(value: Any, index: int, what: str) -> int:
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    elif isinstance(value, np.ndarray) and value.size == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise DataError(f"{what}[{index}] has label {value!r}; labels must be integer class indices")
    return int(value)


def _collect(ds: Dataset, what: str) -> tuple[Tensor, Tensor]:
    if isinstance(ds, TensorDataset) and len(ds.tensors) >= 2:  # fast path: whole batch at once
        return images_to_tensor(ds.tensors[0], what=f"{what} images"), labels_to_tensor(ds.tensors[1])
    try:
        n = len(ds)  # type: ignore[arg-type]
    except TypeError:
        raise DataError(f"{what} must be a map-style Dataset with __len__ and __getitem__") from None
    if n == 0:
        raise DataError(f"{what} is empty")
    out: Tensor | None = None
    labels: list[int] = []
    for i in range(n):
        item = ds[i]
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise DataError(f"{what}[{i}] must be an (image, label) pair; got {type(item).__name__}")
        x = image_to_chw(item[0], what=f"{what}[{i}] image")
        if out is None:
            out = torch.empty((n, *x.shape), dtype=torch.float32)
        elif x.shape != out.shape[1:]:
            raise DataError(f"{what}[{i}] has shape {tuple(x.shape)} but {what}[0] has {tuple(out.shape[1:])}; "
                            + _RESIZE_HINT)
        out[i] = x
        labels.append(_label(item[1], i, what))
    assert out is not None
    return out, torch.tensor(labels, dtype=torch.int64)


def bundle_from_torch_dataset(
    train: Dataset,
    test: Dataset | None = None,
    *,
    name: str = "custom",
    classes: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    source: str | None = None,
) -> DatasetBundle:
    """Materialise a map-style torch dataset of ``(image, label)`` as a :class:`DatasetBundle`.

    Images may be PIL images, numpy arrays (HWC/HW uint8 …) or tensors (CHW float in ``[0, 1]``
    …); all must share one shape. Class names come from ``classes``, else from the dataset's
    ``classes`` attribute (torchvision convention; labels are then indices into it), else the
    sorted unique labels are remapped to ``0..K-1`` and named after their values.
    Without ``test``, each example goes to test with probability ``test_fraction``, decided by a
    keyed hash of its own bytes (:func:`securedc.data.split.train_test_split`: one example more or
    less moves no other example, which the DP guarantee for the training side needs).

    Args:
        train: training dataset (or all data when ``test`` is None).
        test: optional test dataset.
        name: bundle name.
        classes: class names.
        mean, std: public per-channel normalisation constants (default 0.5 per channel; never
            computed from the data, see docs/privacy.md).
        test_fraction: expected test share when splitting, in ``[0, 1)``.
        seed: split seed.
        source: description of where the data came from (default: the dataset's type).

    Raises:
        DataError: unreadable items, mixed shapes, bad labels or values.
        ConfigError: ``test_fraction`` outside ``[0, 1)``.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> ds = TensorDataset(torch.linspace(0, 1, 320).reshape(20, 1, 4, 4), torch.arange(20) % 2)
        >>> b = bundle_from_torch_dataset(ds, test_fraction=0.5, seed=0)
        >>> len(b.train_labels) + len(b.test_labels), b.mean
        (20, (0.5,))
    """
    x, y = _collect(train, "train dataset")
    names = classes if classes is not None else getattr(train, "classes", None)
    if test is not None:
        xt, yt = _collect(test, "test dataset")
        if names is None:
            (y, yt), original = remap_labels(y, yt)
            names = [str(v) for v in original]
    else:
        if names is None:
            (y,), original = remap_labels(y)
            names = [str(v) for v in original]
        train_idx, test_idx = train_test_split(x, y, test_fraction=test_fraction, seed=seed)
        x, xt, yt, y = x[train_idx].contiguous(), x[test_idx].contiguous(), y[test_idx], y[train_idx]
    c = x.shape[1]
    return DatasetBundle(
        name=name,
        train_images=x,
        train_labels=y,
        test_images=xt,
        test_labels=yt,
        classes=tuple(str(n) for n in names),
        mean=tuple(mean) if mean is not None else (0.5,) * c,
        std=tuple(std) if std is not None else (0.5,) * c,
        source=source or f"torch dataset {type(train).__name__}",
    )
