"""securedc.plugins.torch: CondensedDataset, cached condense(), loaders, replay mixing, the example."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from securedc.errors import CertificationError, ConfigError, DataError
from securedc.export import save_condensed, update_manifest
from securedc.owner import owner_path, read_owner_record
from securedc.plugins.torch import (
    CondensedDataset,
    MixedDataset,
    cache_key,
    condense,
    condensed_loader,
    replay_mix,
)

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(ipc=2, iterations=3, batch_real=16)


@pytest.fixture()
def digits_ds(digits) -> TensorDataset:
    return TensorDataset(digits.train_images, digits.train_labels)


def _file(tmp_path: Path, certified: bool | None) -> Path:
    path = tmp_path / "set.safetensors"
    g = torch.Generator().manual_seed(0)
    manifest = {"dataset": {"classes": ["zero", "one"]}, "privacy": {"private": False}}
    if certified is not None:
        manifest["audit"] = {"certified": certified, "ran": True}
    save_condensed(path, torch.rand(4, 1, 8, 8, generator=g), torch.tensor([0, 0, 1, 1]), manifest)
    return path


def test_dataset_refuses_uncertified_and_accepts_when_allowed(tmp_path):
    path = _file(tmp_path, certified=False)
    with pytest.raises(CertificationError, match="allow_uncertified=True"):
        CondensedDataset(path)
    ds = CondensedDataset(path, allow_uncertified=True, transform=lambda x: 1 - x)
    image, label = ds[2]
    assert image.shape == (1, 8, 8) and image.dtype == torch.float32 and label == 1
    assert torch.equal(image, 1 - ds.images[2])
    assert ds.classes == ["zero", "one"] and ds.certified is False and ds.privacy == {"private": False}
    assert ds.targets == [0, 0, 1, 1]


def test_dataset_certified_file_loads_without_flag(tmp_path):
    path = _file(tmp_path, certified=False)
    update_manifest(path, {"audit": {"certified": True}})
    assert CondensedDataset(path).certified is True


def test_dataset_detects_tampering(tmp_path):
    path = _file(tmp_path, certified=True)
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF  # flip bits in the tensor payload
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError):
        CondensedDataset(path)


def test_condense_caches_and_keys_on_config(digits_ds, tmp_path):
    t0 = time.perf_counter()
    first = condense(digits_ds, cache_dir=tmp_path, **TINY)
    t_first = time.perf_counter() - t0
    assert not first.from_cache and len(first) == 20 and first.certified is False
    mtime = first.path.stat().st_mtime_ns
    t0 = time.perf_counter()
    second = condense(digits_ds, cache_dir=tmp_path, **TINY)
    t_second = time.perf_counter() - t0
    assert second.from_cache and second.path == first.path and second.path.stat().st_mtime_ns == mtime
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert t_second < t_first
    other = condense(digits_ds, cache_dir=tmp_path, **{**TINY, "seed": 1})
    assert other.path != first.path and not other.from_cache
    # the key (a hash over the data fingerprint) lives in the owner record only: not in the manifest, not in the name
    record = read_owner_record(first.path, tensor_sha256=first.manifest["tensor_sha256"])
    meta = {"name": "custom", "classes": [str(c) for c in range(10)], "mean": [0.5], "std": [0.5]}
    key = cache_key(__import__("securedc").CondenseConfig.from_dict(first.manifest["config"]),
                    record["dataset"]["fingerprint"], metadata=meta)
    assert record["cache"]["key"] == key and "cache" not in first.manifest
    assert "fingerprint" not in first.manifest["dataset"]
    metadata = first.path.read_bytes()[:20_000].decode("latin-1")
    assert key not in metadata and key[:20] not in metadata and record["dataset"]["fingerprint"] not in metadata
    assert key[:20] not in first.path.name
    # refresh recomputes into the same file; a missing owner record is a cache miss
    again = condense(digits_ds, cache_dir=tmp_path, refresh=True, **TINY)
    assert again.path == first.path and not again.from_cache
    owner_path(first.path).unlink()
    assert not condense(digits_ds, cache_dir=tmp_path, **TINY).from_cache
    # what the file records besides the pixels is part of the key: other constants or names, another file
    for extra in ({"mean": [0.1], "std": [0.3]}, {"classes": [str(c) for c in "abcdefghij"]}):
        assert not condense(digits_ds, cache_dir=tmp_path, **extra, **TINY).from_cache


def test_condense_writes_the_soft_labels_it_made(digits_ds, tmp_path):
    ds = condense(digits_ds, cache_dir=tmp_path, epsilon=8.0, adv_eps="8/255", adv_weight=0.0, soft_labels=True,
                  extractor_epochs=2, **TINY)
    assert ds.soft_labels is not None and ds.soft_labels.shape == (20, 10)
    _, target = ds[0]
    assert target.shape == (10,) and abs(float(target.sum()) - 1) < 1e-5  # items carry the soft label


def test_condense_matches_library_result(digits, digits_ds, tmp_path):
    import securedc

    ds = condense(digits_ds, cache_dir=tmp_path, mean=digits.mean, std=digits.std, **TINY)
    direct = securedc.condense(digits, **TINY)  # same data, constants and config -> same images
    assert torch.equal(ds.images, direct.images)


def test_condense_private_and_user_dataset(digits, tmp_path):
    class NumpyDigits(Dataset):  # a user dataset returning HW uint8 arrays and numpy labels
        def __len__(self) -> int:
            return 300

        def __getitem__(self, i: int):
            img = (digits.train_images[i, 0].numpy() * 255).astype(np.uint8)
            return img, np.int64(digits.train_labels[i])

    ds = condense(NumpyDigits(), epsilon=8.0, cache_dir=tmp_path, **TINY)
    assert ds.privacy["private"] is True and 0 < ds.privacy["epsilon"] <= 8.0 + 1e-6
    assert ds.images.shape == (20, 1, 8, 8) and "num_train" not in ds.manifest["dataset"]
    assert read_owner_record(ds.path)["dataset"]["num_train"] == 300  # the exact count is the owner's


def test_condense_rejects_unknown_option(digits_ds, tmp_path):
    with pytest.raises(ConfigError, match="unknown condense option"):
        condense(digits_ds, ipc=1, cache_dir=tmp_path, iteratons=3)


def test_loader_is_seeded_and_class_balanced():
    ds = TensorDataset(torch.arange(40.0).view(40, 1, 1, 1), torch.tensor([0] * 36 + [1] * 4))
    order = lambda seed: torch.cat([x.flatten() for x, _ in condensed_loader(ds, batch_size=8, seed=seed)])  # noqa: E731
    assert torch.equal(order(3), order(3)) and not torch.equal(order(3), order(4))
    counts: Counter[int] = Counter()
    for epoch in range(50):
        for _, y in condensed_loader(ds, batch_size=8, seed=epoch, class_balanced=True):
            counts.update(y.tolist())
    share = counts[1] / sum(counts.values())
    assert 0.4 < share < 0.6  # 10 % of the data, ~50 % of the samples
    assert len(condensed_loader(ds, batch_size=1000)) == 1  # batch size capped at the set size


def test_mixed_dataset_ratio_semantics(digits):
    real = TensorDataset(digits.train_images[:300], digits.train_labels[:300])
    memory = TensorDataset(torch.ones(20, 1, 8, 8), torch.arange(20) % 10)
    mixed = MixedDataset(real, memory, ratio=0.25, seed=0)
    assert len(mixed) == 400 and mixed.num_replay == 100
    replayed = [int((mixed[i][0] == 1).all()) for i in range(len(mixed))]
    assert sum(replayed) == 100 and sum(replayed[:300]) == 0
    assert Counter(mixed.replay_order.tolist()) == Counter({k: 5 for k in range(20)})  # each replayed equally
    assert torch.equal(mixed.replay_order, MixedDataset(real, memory, ratio=0.25, seed=0).replay_order)
    loader = replay_mix(real, memory, ratio=0.25, batch_size=50, seed=0)
    per_batch = [int((x.flatten(1) == 1).all(1).sum()) for x, _ in loader]
    assert sum(per_batch) == 100 and len(per_batch) == 8 and max(per_batch) < 50
    with pytest.raises(ConfigError):
        MixedDataset(real, memory, ratio=1.0)


def test_plain_pytorch_example_runs(tmp_path):
    cmd = [sys.executable, str(ROOT / "examples" / "plain_pytorch.py"), "--condensed", "--ipc", "2",
           "--iterations", "3", "--batch-real", "16", "--epochs", "3", "--cache-dir", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True).stdout
    assert "condensed (20 images)" in out
    acc = float(out.split("test accuracy")[1].split(";")[0])
    assert 0.0 <= acc <= 1.0
    assert len(list(tmp_path.glob("*.safetensors"))) == 1


def test_docstring_examples():
    import doctest

    import securedc.plugins.torch as module

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 5 and result.failed == 0


def test_loader_and_replay_refuse_inputs_they_cannot_honour(tmp_path):
    ds = TensorDataset(torch.rand(6, 1, 2, 2), torch.tensor([0, 0, 0, 0, 1, 1]))
    with pytest.raises(ConfigError, match="shuffle"):  # class balancing samples at random
        condensed_loader(ds, batch_size=2, class_balanced=True, shuffle=False)
    with pytest.raises(DataError, match="shape"):  # caught here, not in the DataLoader's collate
        MixedDataset(TensorDataset(torch.rand(4, 1, 3, 3), torch.zeros(4, dtype=torch.int64)), ds, ratio=0.5)
    with pytest.raises(DataError, match="beyond the manifest"):
        save_condensed(tmp_path / "x.safetensors", torch.rand(2, 1, 2, 2), torch.tensor([0, 2]),
                       {"dataset": {"classes": ["a", "b"]}})
