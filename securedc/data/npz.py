"""The ``npz:FILE`` source: a numpy ``.npz`` archive of images and labels.

Keys: ``x`` and ``y`` (required); ``x_test``/``y_test`` (optional — without them the data is
split with ``seed``, each example going to test with probability 0.2 by a keyed hash of its own
bytes, :func:`securedc.data.split.train_test_split`); ``classes`` (optional string array, one name per
sorted unique label); ``mean``/``std`` (optional public per-channel constants, default 0.5).
Images: uint8 ``[N, H, W]``/``[N, H, W, C]``, or float in ``[0, 1]`` NCHW/NHWC. Labels: any
integers; their sorted unique values are remapped to ``0..K-1``. Loaded with
``allow_pickle=False`` — object arrays are refused.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from securedc.data.bundle import DatasetBundle
from securedc.data.convert import images_to_tensor, labels_to_tensor, remap_labels
from securedc.data.registry import SourceRequest, register_source
from securedc.data.split import train_test_split
from securedc.errors import DataError

__all__ = ["load_npz", "NPZ_TEST_FRACTION"]

NPZ_TEST_FRACTION = 0.2
"""Expected share held out as test (per example) when the archive has no ``x_test``/``y_test``."""


def _floats(arr: np.ndarray | None, path: Path, key: str) -> tuple[float, ...] | None:
    if arr is None:
        return None
    try:
        return tuple(float(v) for v in np.asarray(arr, dtype=np.float64).reshape(-1))
    except (TypeError, ValueError):
        raise DataError(f"{path}: {key!r} must be numbers (one per channel)") from None


def load_npz(path: str | Path, *, seed: int = 0, name: str | None = None) -> DatasetBundle:
    """Load a ``.npz`` archive as a :class:`DatasetBundle` (see module docstring for the keys).

    Raises:
        DataError: file missing/unreadable, keys missing, pickled arrays, bad shapes or values.

    Example:
        >>> import numpy as np, tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "d.npz")
        >>> np.savez(p, x=np.zeros((10, 4, 4), np.uint8), y=np.array([5, 9] * 5))
        >>> b = load_npz(p)
        >>> b.classes, b.image_shape, len(b.train_labels) + len(b.test_labels)
        (('5', '9'), (1, 4, 4), 10)
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"npz file {path} does not exist")
    if not zipfile.is_zipfile(path):  # np.load would read a .npy array, or call other bytes pickled data
        raise DataError(f"{path} is not an .npz archive; save one with numpy.savez(path, x=images, y=labels)")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except ValueError as err:
        raise DataError(f"{path}: cannot load without pickle ({err}); save plain numeric arrays") from None
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"{path} is not a readable .npz file: {err}") from None
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise DataError(f"{path} lacks arrays {missing}; expected keys x, y (and optionally x_test, y_test); "
                        f"found {sorted(arrays)}")
    has_test = ("x_test" in arrays, "y_test" in arrays)
    if any(has_test) and not all(has_test):
        raise DataError(f"{path}: give both x_test and y_test, or neither")
    x = images_to_tensor(arrays["x"], what=f"x in {path}")
    y = labels_to_tensor(arrays["y"], what=f"y in {path}")
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{path}: x has {x.shape[0]} images but y has {y.shape[0]} labels")
    if all(has_test):
        xt = images_to_tensor(arrays["x_test"], what=f"x_test in {path}")
        yt = labels_to_tensor(arrays["y_test"], what=f"y_test in {path}")
        if xt.shape[0] != yt.shape[0]:
            raise DataError(f"{path}: x_test has {xt.shape[0]} images but y_test has {yt.shape[0]} labels")
        (y, yt), original = remap_labels(y, yt)
    else:
        (y,), original = remap_labels(y)
        train_idx, test_idx = train_test_split(x, y, test_fraction=NPZ_TEST_FRACTION, seed=seed)
        x, xt, yt, y = x[train_idx].contiguous(), x[test_idx].contiguous(), y[test_idx], y[train_idx]
    if "classes" in arrays:
        classes = tuple(str(c) for c in np.asarray(arrays["classes"]).reshape(-1))
        if len(classes) != len(original):
            raise DataError(f"{path}: 'classes' has {len(classes)} names but the labels have {len(original)} "
                            f"distinct values {list(original)[:20]}")
    else:
        classes = tuple(str(v) for v in original)
    c = x.shape[1]
    mean = _floats(arrays.get("mean"), path, "mean") or (0.5,) * c
    std = _floats(arrays.get("std"), path, "std") or (0.5,) * c
    return DatasetBundle(
        name=name or f"npz:{path}",
        train_images=x,
        train_labels=y,
        test_images=xt,
        test_labels=yt,
        classes=classes,
        mean=mean,
        std=std,
        source=str(path.resolve()),
    )


@register_source("npz", argument="FILE", description="numpy .npz with x, y [x_test, y_test, classes, mean, std]")
def _load(request: SourceRequest) -> DatasetBundle:
    return load_npz(request.argument or "", seed=request.seed, name=request.name)
