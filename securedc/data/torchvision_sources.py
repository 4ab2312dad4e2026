"""torchvision datasets: ``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar100``, ``svhn``.

Files are looked for under ``root`` (default ``~/.cache/securedc/data``, torchvision's layout).
MNIST-style sets are read with securedc's own IDX reader from ``ROOT/<Name>/raw`` or, failing
that, from Debian's ``/usr/share/datasets/<name>`` (package ``dataset-fashion-mnist``). Missing files
are downloaded by torchvision only with ``download=True``; network failures become a one-line
:class:`~securedc.errors.DataError`.

Normalisation constants are the usual published per-channel values (public; docs/privacy.md).

References:
    LeCun et al., "Gradient-based learning applied to document recognition", Proc. IEEE 1998 (MNIST).
    Xiao, Rasul & Vollgraf, "Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning
    Algorithms", arXiv:1708.07747 2017.
    Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", tech. report 2009 (CIFAR).
    Netzer et al., "Reading Digits in Natural Images with Unsupervised Feature Learning", NIPS workshop 2011 (SVHN).
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from securedc.data.bundle import DatasetBundle
from securedc.data.convert import images_to_tensor, labels_to_tensor
from securedc.data.idx import find_idx_files, load_idx_dir
from securedc.data.registry import DEFAULT_ROOT, SourceRequest, register_source
from securedc.errors import DataError

__all__ = ["TorchvisionSpec", "TORCHVISION_SPECS", "DEBIAN_DATASETS_DIR", "DOWNLOAD_TIMEOUT_S"]

logger = logging.getLogger(__name__)

DEBIAN_DATASETS_DIR = Path("/usr/share/datasets")
"""Where Debian packages (e.g. ``fashion-mnist``) install datasets."""
DOWNLOAD_TIMEOUT_S = 5.0
"""Socket timeout applied only while torchvision downloads, so a dead network fails fast."""

_MNIST_CLASSES = tuple(str(i) for i in range(10))
_FMNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")


@dataclass(frozen=True)
class TorchvisionSpec:
    """How to fetch one torchvision dataset.

    Attributes:
        name: securedc name.
        cls_name: class in ``torchvision.datasets``.
        split_kw: ``"train"`` (``train=True/False``) or ``"split"`` (``split="train"/"test"``).
        mean, std: public normalisation constants.
        classes: class names used when torchvision exposes none (or for IDX copies).
        idx: MNIST-style: readable from IDX files (``ROOT/<cls_name>/raw`` or Debian's dir).
    """

    name: str
    cls_name: str
    split_kw: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...] | None = None
    idx: bool = False
    description: str = ""


TORCHVISION_SPECS = {
    s.name: s
    for s in (
        TorchvisionSpec("mnist", "MNIST", "train", (0.1307,), (0.3081,), _MNIST_CLASSES, True,
                        "MNIST 28x28 grey, 60k/10k (torchvision; also IDX under ROOT or /usr/share/datasets)"),
        TorchvisionSpec("fashion-mnist", "FashionMNIST", "train", (0.2861,), (0.3530,), _FMNIST_CLASSES, True,
                        "Fashion-MNIST 28x28 grey, 60k/10k (Debian /usr/share/datasets or torchvision)"),
        TorchvisionSpec("cifar10", "CIFAR10", "train", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), None,
                        False, "CIFAR-10 32x32 RGB, 50k/10k (torchvision, --download)"),
        TorchvisionSpec("cifar100", "CIFAR100", "train", (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), None,
                        False, "CIFAR-100 32x32 RGB, 50k/10k, 100 classes (torchvision, --download)"),
        TorchvisionSpec("svhn", "SVHN", "split", (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), _MNIST_CLASSES,
                        False, "SVHN 32x32 RGB house numbers, 73k/26k (torchvision, --download)"),
    )
}


@contextlib.contextmanager
def _download_guard() -> Iterator[io.StringIO]:
    """Short socket timeout + torchvision's download chatter captured (the library never prints)."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            yield buf
    finally:
        socket.setdefaulttimeout(old)
        if buf.getvalue():
            logger.debug("torchvision output:\n%s", buf.getvalue())


def _make(spec: TorchvisionSpec, root: Path, *, train: bool, download: bool) -> Any:
    import torchvision.datasets as tvd

    cls = getattr(tvd, spec.cls_name)
    split = {"train": train} if spec.split_kw == "train" else {"split": "train" if train else "test"}
    return cls(root=str(root), download=download, **split)


def _idx_dirs(spec: TorchvisionSpec, root: Path) -> list[Path]:
    return [root / spec.cls_name / "raw", root / spec.name, root, DEBIAN_DATASETS_DIR / spec.name]


def _arrays(ds: Any) -> tuple[Any, Any]:
    data = ds.data
    labels = getattr(ds, "targets", None)
    if labels is None:
        labels = ds.labels
    return data, np.asarray(labels)


def _load_torchvision(spec: TorchvisionSpec, request: SourceRequest) -> DatasetBundle:
    root = request.root if request.root is not None else DEFAULT_ROOT.expanduser()
    if spec.idx:
        for d in _idx_dirs(spec, root):
            if d.is_dir() and find_idx_files(d) is not None:
                logger.info("loading %s from IDX files in %s", spec.name, d)
                return load_idx_dir(d, name=spec.name, classes=spec.classes, mean=spec.mean, std=spec.std,
                                    source=str(d))
    try:
        if request.download:
            root.mkdir(parents=True, exist_ok=True)
            with _download_guard():
                train = _make(spec, root, train=True, download=True)
                test = _make(spec, root, train=False, download=True)
        else:
            train = _make(spec, root, train=True, download=False)
            test = _make(spec, root, train=False, download=False)
    except (urllib.error.URLError, OSError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if not request.download:
            where = f"{root}" + (f" or {DEBIAN_DATASETS_DIR / spec.name}" if spec.idx else "")
            raise DataError(f"{spec.name} not found under {where}; pass --download (download=True) or "
                            f"--data-root (root=...) pointing at an existing copy") from None
        raise DataError(f"could not download {spec.name} into {root} ({type(err).__name__}: {first}); check the "
                        "network, or copy the files there and use --data-root") from None
    tx, ty = _arrays(train)
    vx, vy = _arrays(test)
    layout = "NCHW" if spec.name == "svhn" else "NHWC"
    classes = tuple(getattr(train, "classes", None) or spec.classes or ())
    if spec.classes is not None and spec.idx:
        classes = spec.classes
    return DatasetBundle(
        name=spec.name,
        train_images=images_to_tensor(tx, layout=layout),
        train_labels=labels_to_tensor(ty),
        test_images=images_to_tensor(vx, layout=layout),
        test_labels=labels_to_tensor(vy),
        classes=classes,
        mean=spec.mean,
        std=spec.std,
        source=f"torchvision.datasets.{spec.cls_name}:{root}",
    )


def _register(spec: TorchvisionSpec) -> None:
    @register_source(spec.name, description=spec.description)
    def _load(request: SourceRequest) -> DatasetBundle:
        return _load_torchvision(spec, request)


for _spec in TORCHVISION_SPECS.values():
    _register(_spec)
