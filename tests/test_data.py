"""Tests of securedc.data on real data: sklearn digits, Debian Fashion-MNIST, files written here."""

from __future__ import annotations

import gzip
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from securedc.data import DatasetBundle, bundle_from_torch_dataset, list_datasets, load_dataset
from securedc.data.idx import read_idx, write_idx
from securedc.data.registry import register_source
from securedc.errors import ConfigError, DataError

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
needs_fmnist = pytest.mark.skipif(not FMNIST_DIR.is_dir(), reason="Debian fashion-mnist not installed")


@pytest.fixture(scope="module")
def digits() -> DatasetBundle:
    return load_dataset("digits")


def _check_bundle(b: DatasetBundle) -> None:
    for x, y in ((b.train_images, b.train_labels), (b.test_images, b.test_labels)):
        assert x.dtype == torch.float32 and x.dim() == 4 and x.is_contiguous()
        assert y.dtype == torch.int64 and y.shape == (x.shape[0],)
        if x.numel():
            assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
            assert 0 <= int(y.min()) and int(y.max()) < b.num_classes
    assert len(b.mean) == len(b.std) == b.channels == b.image_shape[0]
    assert len(b.fingerprint) == 64
    assert int(b.class_counts().sum()) == len(b.train_labels) and bool((b.class_counts() > 0).all())


# ---------------------------------------------------------------- digits
def test_digits_shapes_ranges_and_fixed_split(digits: DatasetBundle) -> None:
    _check_bundle(digits)
    assert digits.train_images.shape == (1347, 1, 8, 8) and digits.test_images.shape == (450, 1, 8, 8)
    assert digits.classes == tuple(str(i) for i in range(10)) and digits.num_classes == 10
    assert float(digits.train_images.max()) == 1.0 and float(digits.train_images.min()) == 0.0
    # pixel values are k/16
    assert torch.equal(digits.train_images * 16, (digits.train_images * 16).round())
    assert digits.mean == (0.5,) and digits.std == (0.5,) and digits.source == "sklearn.load_digits"
    # stratified: every class has 43..46 of the 450 test images
    assert set(torch.bincount(digits.test_labels).tolist()) <= {43, 44, 45, 46}
    # the split does not depend on seed
    other = load_dataset("digits", seed=123)
    assert torch.equal(other.train_images, digits.train_images) and torch.equal(other.test_labels, digits.test_labels)
    assert other.fingerprint == digits.fingerprint


def test_digits_constants_are_data_free() -> None:
    """The constants must not be a statistic of the (private in DP mode) images: a perturbed copy of
    the data gets the same constants, and they are the pixel range's midpoint and half-width."""
    from securedc.data.digits import DIGITS_MEAN, DIGITS_STD

    assert DIGITS_MEAN == (0.5,) and DIGITS_STD == (0.5,)
    bundle = load_dataset("digits")
    assert abs(float(bundle.train_images.mean()) - DIGITS_MEAN[0]) > 0.1, "not the data mean"


def test_fingerprint_stable_and_sensitive(digits: DatasetBundle) -> None:
    again = load_dataset("DIGITS")  # case-insensitive
    assert again.fingerprint == digits.fingerprint
    x = digits.train_images.clone()
    x[0, 0, 0, 0] = 0.5 if float(x[0, 0, 0, 0]) != 0.5 else 0.25
    changed = DatasetBundle(name="d", train_images=x, train_labels=digits.train_labels,
                            test_images=digits.test_images, test_labels=digits.test_labels, classes=digits.classes,
                            mean=digits.mean, std=digits.std, source="test")
    assert changed.fingerprint != digits.fingerprint
    y = digits.test_labels.clone()
    y[0] = (y[0] + 1) % 10
    relabeled = DatasetBundle(name="d", train_images=digits.train_images, train_labels=digits.train_labels,
                              test_images=digits.test_images, test_labels=y, classes=digits.classes,
                              mean=digits.mean, std=digits.std, source="test")
    assert relabeled.fingerprint != digits.fingerprint


def test_bundle_validation_errors(digits: DatasetBundle) -> None:
    kw = dict(name="t", test_images=digits.test_images, test_labels=digits.test_labels, classes=digits.classes,
              mean=(0.5,), std=(0.5,), source="t")
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        DatasetBundle(train_images=digits.train_images * 2, train_labels=digits.train_labels, **kw)
    with pytest.raises(DataError, match="no training image"):
        DatasetBundle(train_images=digits.train_images[:5], train_labels=torch.zeros(5, dtype=torch.int64), **kw)
    with pytest.raises(DataError, match="NaN"):
        bad = digits.train_images.clone()
        bad[0, 0, 0, 0] = float("nan")
        DatasetBundle(train_images=bad, train_labels=digits.train_labels, **kw)
    with pytest.raises(DataError, match="one value per channel"):
        DatasetBundle(train_images=digits.train_images, train_labels=digits.train_labels,
                      **{**kw, "mean": (0.5, 0.5, 0.5)})


# ---------------------------------------------------------------- registry
def test_unknown_name_lists_choices() -> None:
    with pytest.raises(ConfigError) as err:
        load_dataset("imagenet-9000")
    msg = str(err.value)
    for choice in ("digits", "fashion-mnist", "cifar10", "npz:FILE", "idx:DIR", "folder:DIR"):
        assert choice in msg
    with pytest.raises(ConfigError, match="npz:FILE"):
        load_dataset("npz")


def test_list_datasets_and_duplicate_registration() -> None:
    names = [n for n, _ in list_datasets()]
    assert names == ["digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "svhn", "idx:DIR", "npz:FILE",
                     "folder:DIR"]
    assert all(desc for _, desc in list_datasets())
    with pytest.raises(ConfigError, match="twice"):
        register_source("digits", description="again")(lambda request: None)  # type: ignore[arg-type,return-value]


# ---------------------------------------------------------------- Fashion-MNIST (Debian) and IDX
@needs_fmnist
def test_fashion_mnist_from_debian(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    b = load_dataset("fashion-mnist", root=tmp_path)  # empty root -> falls back to the Debian dir
    elapsed = time.perf_counter() - t0
    assert b.train_images.shape == (60000, 1, 28, 28) and b.test_images.shape == (10000, 1, 28, 28)
    assert float(b.train_images.min()) == 0.0 and float(b.train_images.max()) == 1.0
    assert b.class_counts().tolist() == [6000] * 10 and b.classes[0] == "T-shirt/top"
    assert b.mean == (0.2861,) and b.std == (0.3530,) and b.source == str(FMNIST_DIR)
    assert abs(float(b.train_images.mean()) - 0.2861) < 1e-3  # published constant matches the data
    assert elapsed < 10.0
    # same files through idx:DIR -> same data, same fingerprint
    assert load_dataset(f"idx:{FMNIST_DIR}").fingerprint == b.fingerprint


def _write_small_idx(directory: Path, *, gz: bool, n_train: int = 50, n_test: int = 20) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(0)
    xs = rng.integers(0, 256, size=(n_train, 6, 5), dtype=np.uint8)
    ys = (np.arange(n_train) % 3).astype(np.uint8)
    xt = rng.integers(0, 256, size=(n_test, 6, 5), dtype=np.uint8)
    yt = (np.arange(n_test) % 3).astype(np.uint8)
    ext = ".gz" if gz else ""
    directory.mkdir(parents=True, exist_ok=True)
    write_idx(directory / f"train-images-idx3-ubyte{ext}", xs)
    write_idx(directory / f"train-labels-idx1-ubyte{ext}", ys)
    write_idx(directory / f"t10k-images-idx3-ubyte{ext}", xt)
    write_idx(directory / f"t10k-labels-idx1-ubyte{ext}", yt)
    return xs, ys, xt, yt


@pytest.mark.parametrize("gz", [True, False])
def test_idx_dir_round_trip(tmp_path: Path, gz: bool) -> None:
    xs, ys, xt, yt = _write_small_idx(tmp_path / "d", gz=gz)
    b = load_dataset(f"idx:{tmp_path / 'd'}")
    _check_bundle(b)
    assert b.image_shape == (1, 6, 5) and b.num_classes == 3 and b.mean == (0.5,)
    assert torch.equal(b.train_images[:, 0], torch.from_numpy(xs).float() / 255)
    assert b.train_labels.tolist() == ys.tolist() and b.test_labels.tolist() == yt.tolist()


@needs_fmnist
def test_idx_slice_of_fashion_mnist(tmp_path: Path) -> None:
    full_x = read_idx(FMNIST_DIR / "t10k-images-idx3-ubyte.gz")
    full_y = read_idx(FMNIST_DIR / "t10k-labels-idx1-ubyte.gz")
    d = tmp_path / "slice"
    d.mkdir()
    write_idx(d / "train-images-idx3-ubyte.gz", full_x[:200])
    write_idx(d / "train-labels-idx1-ubyte.gz", full_y[:200])
    write_idx(d / "t10k-images-idx3-ubyte", full_x[200:260])
    write_idx(d / "t10k-labels-idx1-ubyte", full_y[200:260])
    b = load_dataset(f"idx:{d}")
    assert b.train_images.shape == (200, 1, 28, 28) and b.test_images.shape == (60, 1, 28, 28)
    assert torch.equal(b.train_labels, torch.from_numpy(full_y[:200].astype(np.int64)))
    # a torchvision-layout copy under root wins over the Debian dir
    raw = tmp_path / "root" / "FashionMNIST" / "raw"
    shutil.copytree(d, raw)
    fm = load_dataset("fashion-mnist", root=tmp_path / "root")
    assert fm.fingerprint == b.fingerprint and fm.classes[9] == "Ankle boot" and fm.source == str(raw)


def test_corrupt_idx_raises(tmp_path: Path) -> None:
    d = tmp_path / "d"
    _write_small_idx(d, gz=True)
    good = gzip.decompress((d / "train-images-idx3-ubyte.gz").read_bytes())
    # truncated gzip stream
    (d / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(good)[:-40])
    with pytest.raises(DataError, match="train-images"):
        load_dataset(f"idx:{d}")
    # valid gzip, truncated data
    (d / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(good[:-7]))
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_dataset(f"idx:{d}")
    # bad magic number
    (d / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x01\x02" + good[2:]))
    with pytest.raises(DataError, match="magic"):
        load_dataset(f"idx:{d}")
    # missing file / missing dir
    (d / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match="not found"):
        load_dataset(f"idx:{d}")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"idx:{tmp_path / 'nope'}")


# ---------------------------------------------------------------- npz
def test_npz_uint8_hwc_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(60, 7, 7, 3), dtype=np.uint8)
    y = np.repeat([10, 20, 30], 20)  # non-contiguous labels -> remapped
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=y)
    b = load_dataset(f"npz:{path}", seed=0)
    _check_bundle(b)
    assert b.image_shape == (3, 7, 7) and b.classes == ("10", "20", "30")
    assert len(b.train_labels) + len(b.test_labels) == 60 and 0 < len(b.test_labels) < 30  # ~20 % by record hash
    assert sum(b.class_counts().tolist()) == len(b.train_labels) and b.mean == (0.5, 0.5, 0.5)
    # round trip: every image comes back exactly, with its label
    back = torch.cat([b.train_images, b.test_images]).permute(0, 2, 3, 1).mul(255).round().to(torch.uint8)
    orig = {x[i].tobytes(): y[i] for i in range(60)}
    labels = torch.cat([b.train_labels, b.test_labels]).tolist()
    assert sorted(orig[im.numpy().tobytes()] for im in back) == sorted(y.tolist())
    assert all(int(b.classes[lab]) == orig[im.numpy().tobytes()] for im, lab in zip(back, labels))
    # seed changes the split, same seed reproduces it
    assert load_dataset(f"npz:{path}", seed=0).fingerprint == b.fingerprint
    assert load_dataset(f"npz:{path}", seed=1).fingerprint != b.fingerprint


def test_npz_float_nchw_with_test_and_metadata(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    x = rng.random((12, 3, 5, 5), dtype=np.float32)
    xt = rng.random((4, 3, 5, 5), dtype=np.float32)
    path = tmp_path / "f.npz"
    np.savez(path, x=x, y=np.arange(12) % 2, x_test=xt, y_test=np.array([0, 1, 1, 0]),
             classes=np.array(["cat", "dog"]), mean=np.array([0.4, 0.5, 0.6]), std=np.array([0.2, 0.2, 0.2]))
    b = load_dataset(f"npz:{path}")
    assert torch.equal(b.train_images, torch.from_numpy(x)) and torch.equal(b.test_images, torch.from_numpy(xt))
    assert b.classes == ("cat", "dog") and b.mean == (0.4, 0.5, 0.6) and b.test_labels.tolist() == [0, 1, 1, 0]
    # NHWC float is recognised too
    np.savez(tmp_path / "g.npz", x=x.transpose(0, 2, 3, 1), y=np.arange(12) % 2)
    assert load_dataset(f"npz:{tmp_path / 'g.npz'}").image_shape == (3, 5, 5)


def test_npz_errors(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", x=np.full((4, 3, 3), 2.0), y=np.arange(4))
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        load_dataset(f"npz:{tmp_path / 'a.npz'}")
    np.savez(tmp_path / "b.npz", images=np.zeros((4, 3, 3)))
    with pytest.raises(DataError, match="lacks arrays"):
        load_dataset(f"npz:{tmp_path / 'b.npz'}")
    np.savez(tmp_path / "c.npz", x=np.zeros((4, 3, 3)), y=np.array([{"a": 1}] * 4, dtype=object))
    with pytest.raises(DataError, match="pickle"):
        load_dataset(f"npz:{tmp_path / 'c.npz'}")
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 3, 3)), y=np.arange(4), x_test=np.zeros((1, 3, 3)),
             y_test=np.array([7]))  # class 7 only in test -> no training image
    with pytest.raises(DataError, match="no training image"):
        load_dataset(f"npz:{tmp_path / 'd.npz'}")
    (tmp_path / "e.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError):
        load_dataset(f"npz:{tmp_path / 'e.npz'}")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"npz:{tmp_path / 'missing.npz'}")


# ---------------------------------------------------------------- folder
def _write_pngs(root: Path, classes: list[str], per_class: int, *, size=(6, 4), mode="L", seed=0) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
            Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8), mode=mode).save(root / c / f"{i}.png")


def test_folder_split_and_train_test(tmp_path: Path) -> None:
    _write_pngs(tmp_path / "flat", ["ant", "bee"], 5)
    b = load_dataset(f"folder:{tmp_path / 'flat'}", seed=0)
    _check_bundle(b)
    assert b.classes == ("ant", "bee") and b.image_shape == (1, 4, 6)
    assert len(b.train_labels) + len(b.test_labels) == 10 and set(b.train_labels.tolist()) == {0, 1}

    _write_pngs(tmp_path / "tt" / "train", ["a", "b", "c"], 3, mode="RGB", seed=1)
    _write_pngs(tmp_path / "tt" / "test", ["a", "b", "c"], 1, mode="RGB", seed=2)
    b2 = load_dataset(f"folder:{tmp_path / 'tt'}")
    assert b2.image_shape == (3, 4, 6) and len(b2.train_labels) == 9 and len(b2.test_labels) == 3
    from PIL import Image

    first = np.array(Image.open(tmp_path / "tt" / "train" / "a" / "0.png"))
    assert torch.equal(b2.train_images[0], torch.from_numpy(first).permute(2, 0, 1).float() / 255)


def test_folder_mixed_sizes_and_empty(tmp_path: Path) -> None:
    _write_pngs(tmp_path / "m", ["a"], 2, size=(6, 4))
    _write_pngs(tmp_path / "m", ["b"], 2, size=(5, 5))
    with pytest.raises(DataError, match="resize"):
        load_dataset(f"folder:{tmp_path / 'm'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError):
        load_dataset(f"folder:{tmp_path / 'empty'}")


# ---------------------------------------------------------------- torchvision
def test_torchvision_missing_without_download(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", root=tmp_path, download=False)
    msg = str(err.value)
    assert "cifar10 not found under" in msg and str(tmp_path) in msg and "--download" in msg
    assert "\n" not in msg


def test_torchvision_download_without_network_fails_fast(tmp_path: Path) -> None:
    import socket

    before = socket.getdefaulttimeout()
    t0 = time.perf_counter()
    try:
        load_dataset("cifar10", root=tmp_path, download=True)
    except DataError as err:
        assert "could not download cifar10" in str(err) and "\n" not in str(err)
    else:  # pragma: no cover - only with internet access
        pytest.skip("network available: CIFAR-10 downloaded")
    assert time.perf_counter() - t0 < 30.0
    assert socket.getdefaulttimeout() == before  # the short timeout is restored


# ---------------------------------------------------------------- bundle_from_torch_dataset
def test_bundle_from_tensor_dataset(digits: DatasetBundle) -> None:
    ds = TensorDataset(digits.train_images, digits.train_labels)
    b = bundle_from_torch_dataset(ds, TensorDataset(digits.test_images, digits.test_labels), name="d2",
                                  classes=digits.classes, mean=digits.mean, std=digits.std)
    assert b.fingerprint == digits.fingerprint and b.name == "d2"
    split = bundle_from_torch_dataset(ds, test_fraction=0.25, seed=3)
    assert len(split.train_labels) + len(split.test_labels) == 1347
    assert abs(len(split.test_labels) - 1347 * 0.25) <= 4 * (1347 * 0.25 * 0.75) ** 0.5  # Bernoulli per example
    assert split.fingerprint == bundle_from_torch_dataset(ds, test_fraction=0.25, seed=3).fingerprint


class _PilDataset(Dataset):
    """Returns PIL images (RGB, HWC uint8 underneath) with numpy integer labels."""

    classes = ["zero", "one"]

    def __init__(self, n: int) -> None:
        from PIL import Image

        rng = np.random.default_rng(4)
        self.arrays = rng.integers(0, 256, size=(n, 5, 4, 3), dtype=np.uint8)
        self.images = [Image.fromarray(a) for a in self.arrays]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], np.int64(i % 2)


def test_bundle_from_pil_dataset() -> None:
    ds = _PilDataset(10)
    b = bundle_from_torch_dataset(ds, test_fraction=0.2, seed=0)
    _check_bundle(b)
    assert b.classes == ("zero", "one") and b.image_shape == (3, 5, 4)
    assert len(b.train_labels) + len(b.test_labels) == 10
    all_x = torch.cat([b.train_images, b.test_images]).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1)
    assert sorted(a.tobytes() for a in ds.arrays) == sorted(x.numpy().tobytes() for x in all_x)


def test_bundle_from_torch_dataset_errors() -> None:
    class Mixed(Dataset):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: int):
            return torch.rand(1, 4 + i, 4), 0

    with pytest.raises(DataError, match="resize"):
        bundle_from_torch_dataset(Mixed())

    class StrLabels(Dataset):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: int):
            return torch.rand(1, 4, 4), "cat"

    with pytest.raises(DataError, match="integer"):
        bundle_from_torch_dataset(StrLabels())
    with pytest.raises(ConfigError, match="fraction"):
        bundle_from_torch_dataset(TensorDataset(torch.rand(4, 1, 2, 2), torch.tensor([0, 1, 0, 1])),
                                  test_fraction=1.5)
