"""IDX files (the MNIST / Fashion-MNIST format) and the ``idx:DIR`` source.

An IDX file is: two zero bytes, a dtype code, the number of dimensions ``d``, ``d`` big-endian
uint32 sizes, then the data in big-endian order. Files may be gzip-compressed (detected from
the content, not the name).

References:
    LeCun, Bottou, Bengio & Haffner, "Gradient-based learning applied to document recognition",
    Proc. IEEE 1998 (format described at yann.lecun.com/exdb/mnist).
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from securedc.data.bundle import DatasetBundle
from securedc.data.convert import images_to_tensor, labels_to_tensor
from securedc.data.registry import SourceRequest, register_source
from securedc.errors import DataError

__all__ = ["read_idx", "write_idx", "find_idx_files", "load_idx_dir", "IDX_PARTS"]

_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_CODES = {np.dtype(v).newbyteorder("=").str.lstrip("<>|="): k for k, v in _DTYPES.items()}

IDX_PARTS = {
    "train_images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}
"""Accepted base names of the four files (each also with ``.gz``)."""


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) into a numpy array.

    Raises:
        DataError: unreadable, bad magic number, unknown dtype, or size not matching the header.

    Example:
        >>> import numpy as np, tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "a.gz")
        >>> write_idx(p, np.arange(6, dtype=np.uint8).reshape(2, 3))
        >>> read_idx(p).tolist()
        [[0, 1, 2], [3, 4, 5]]
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"cannot read IDX file {path}: {err}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path} is not an IDX file (bad magic number {raw[:4].hex() or 'empty'}); "
                        "expected 0x0000 + dtype + ndim")
    code, ndim = raw[2], raw[3]
    if code not in _DTYPES:
        raise DataError(f"{path}: unknown IDX dtype code 0x{code:02x}; expected one of "
                        f"{[hex(c) for c in _DTYPES]}")
    if not 1 <= ndim <= 4:
        raise DataError(f"{path}: IDX header says {ndim} dimensions; expected 1..4")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated: header needs {header} bytes, file has {len(raw)}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_DTYPES[code])
    expected = math.prod(dims) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"{path}: header shape {dims} needs {expected} data bytes but the file has "
                        f"{len(raw) - header} (truncated or corrupt); re-download it")
    arr = np.frombuffer(bytearray(raw), dtype=dtype, offset=header).reshape(dims)  # writable copy
    return arr.astype(dtype.newbyteorder("="), copy=False)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (gzip-compressed if ``path`` ends in ``.gz``)."""
    arr = np.asarray(array)
    code = _CODES.get(arr.dtype.str.lstrip("<>|="))
    if code is None or not 1 <= arr.ndim <= 4:
        raise DataError(f"cannot write dtype {arr.dtype} with {arr.ndim} dims as IDX")
    data = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data += arr.astype(np.dtype(_DTYPES[code]), copy=False).tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(data, compresslevel=1) if path.suffix == ".gz" else data)


def find_idx_files(directory: str | Path) -> dict[str, Path] | None:
    """Paths of the four IDX files in ``directory`` (plain or ``.gz``), or ``None`` if any is missing."""
    directory = Path(directory)
    found: dict[str, Path] = {}
    for part, bases in IDX_PARTS.items():
        for base in bases:
            hits = [directory / n for n in (base, base + ".gz") if (directory / n).is_file()]
            if hits:
                found[part] = hits[0]
                break
        else:
            return None
    return found


def load_idx_dir(
    directory: str | Path,
    *,
    name: str,
    classes: tuple[str, ...] | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    source: str | None = None,
) -> DatasetBundle:
    """Load the four IDX files of ``directory`` (numpy only; 70k Fashion-MNIST images in ~1 s).

    Labels must already be ``0..K-1`` with every class present in train. ``classes`` defaults
    to ``"0".."K-1"``; ``mean``/``std`` default to 0.5 per channel (public, not from the data).

    Raises:
        DataError: files missing, corrupt, or inconsistent.
    """
    directory = Path(directory)
    files = find_idx_files(directory)
    if files is None:
        wanted = ", ".join(b[0] + "[.gz]" for b in IDX_PARTS.values())
        raise DataError(f"IDX files not found under {directory}; expected {wanted}")
    arrays = {part: read_idx(p) for part, p in files.items()}
    for part in ("train_images", "test_images"):
        if arrays[part].ndim not in (3, 4):
            raise DataError(f"{files[part]}: images need 3 or 4 dims [N, H, W(, C)]; got {arrays[part].shape}")
    for part in ("train_labels", "test_labels"):
        if arrays[part].ndim != 1:
            raise DataError(f"{files[part]}: labels need 1 dim [N]; got {arrays[part].shape}")
    train_y = labels_to_tensor(arrays["train_labels"], what=f"labels in {files['train_labels']}")
    test_y = labels_to_tensor(arrays["test_labels"], what=f"labels in {files['test_labels']}")
    k = int(max(int(train_y.max()) if train_y.numel() else -1, int(test_y.max()) if test_y.numel() else -1)) + 1
    if classes is not None and len(classes) < k:
        raise DataError(f"{directory}: labels go up to {k - 1} but only {len(classes)} class names are known")
    classes = tuple(classes) if classes is not None else tuple(str(i) for i in range(k))
    train_x = images_to_tensor(arrays["train_images"], layout="NHWC", what=f"images in {files['train_images']}")
    test_x = images_to_tensor(arrays["test_images"], layout="NHWC", what=f"images in {files['test_images']}")
    c = train_x.shape[1]
    return DatasetBundle(
        name=name,
        train_images=train_x,
        train_labels=train_y,
        test_images=test_x,
        test_labels=test_y,
        classes=classes,
        mean=mean if mean is not None else (0.5,) * c,
        std=std if std is not None else (0.5,) * c,
        source=source or str(directory),
    )


@register_source("idx", argument="DIR", description="directory with {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]")
def _load(request: SourceRequest) -> DatasetBundle:
    directory = Path(request.argument or "").expanduser()
    if not directory.is_dir():
        raise DataError(f"idx: directory {directory} does not exist; give a directory holding the four IDX files")
    return load_idx_dir(directory, name=request.name, source=str(directory.resolve()))
