"""The default dataset: scikit-learn's 8x8 handwritten digits (bundled, no download).

References:
    Alpaydin & Kaynak, "Optical Recognition of Handwritten Digits", UCI Machine Learning Repository 1998.
"""

from __future__ import annotations

import numpy as np

from securedc.data.bundle import DatasetBundle
from securedc.data.convert import images_to_tensor, labels_to_tensor
from securedc.data.registry import SourceRequest, register_source

__all__ = ["DIGITS_MEAN", "DIGITS_STD", "DIGITS_TEST_SIZE", "load_digits_bundle"]

DIGITS_MEAN = (0.5,)
"""Data-free normalisation mean: the midpoint of the pixel range [0, 1] (no statistic of any image)."""
DIGITS_STD = (0.5,)
"""Data-free normalisation std: half the pixel range, so inputs map to [-1, 1].

Constants computed from the 1 797 images would include the training images, which a DP run treats
as private; these are fixed by the pixel range alone, so they are public in every mode.
"""
DIGITS_TEST_SIZE = 450
"""Fixed test size: ``train_test_split(test_size=450, stratify=y, random_state=0)`` -> 1347 / 450."""


@register_source("digits", description="sklearn 8x8 digits, 1797 images, 10 classes, fixed split 1347/450 (default)")
def _load(request: SourceRequest) -> DatasetBundle:
    return load_digits_bundle()


def load_digits_bundle() -> DatasetBundle:
    """Load sklearn's digits as a :class:`DatasetBundle`.

    Pixels ``0..16`` are divided by 16. The split is fixed — stratified, 1347 train / 450 test,
    ``random_state=0`` — and does not depend on ``load_dataset``'s ``seed``, so results on
    ``digits`` are comparable across runs and papers. The fixed split is part of the dataset's
    definition (like Fashion-MNIST's official one): a DP run protects the 1347 training images.
    ``mean``/``std`` are the public constants :data:`DIGITS_MEAN`/:data:`DIGITS_STD`.

    Example:
        >>> b = load_digits_bundle()
        >>> tuple(b.train_images.shape), float(b.train_images.max())
        ((1347, 1, 8, 8), 1.0)
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = images_to_tensor(np.ascontiguousarray(data.images, dtype=np.float32) / np.float32(16.0))
    y = labels_to_tensor(data.target)
    idx = np.arange(len(y))
    train_idx, test_idx = train_test_split(idx, test_size=DIGITS_TEST_SIZE, stratify=data.target, random_state=0)
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    return DatasetBundle(
        name="digits",
        train_images=x[train_idx].contiguous(),
        train_labels=y[train_idx].contiguous(),
        test_images=x[test_idx].contiguous(),
        test_labels=y[test_idx].contiguous(),
        classes=tuple(str(c) for c in data.target_names),
        mean=DIGITS_MEAN,
        std=DIGITS_STD,
        source="sklearn.load_digits",
    )
