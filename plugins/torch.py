"""Plain-PyTorch integration: a condensed set as a ``Dataset``, cached condensation, loaders, replay.

A training loop adopts securedc in two lines::

    train_set = condense(train_set, ipc=10)          # any map-style Dataset -> CondensedDataset
    loader = condensed_loader(train_set, batch_size=256)

``condense`` caches its output under ``~/.cache/securedc/condensed`` (key: the full
configuration, the data fingerprint and the securedc version), so the second run of a
script loads the file instead of recomputing. The key is computed from the private data, so it
is kept only in the owner record beside each cached file (``NAME.owner.json``, see
:mod:`securedc.owner`), never in the file's manifest nor in its name; a lookup reads the owner
records of the cache directory.

Certification: by default files written by :func:`condense` are not audited, so their manifest
says ``audit.certified = false``; :func:`condense` opens them with ``allow_uncertified=True`` (and
the returned dataset's ``certified`` is ``False``), and :class:`CondensedDataset` refuses such
files unless asked explicitly. With ``audit=AuditConfig(...)`` :func:`condense` makes an audited
release (:func:`securedc.release`: members/non-members split, audit, certification, owner-only
report) and raises :class:`~securedc.errors.CertificationError` when the audit refuses it.

References:
    Zhao & Bilen, "Dataset Condensation with Distribution Matching", WACV 2023.
    Rolnick et al., "Experience Replay for Continual Learning", NeurIPS 2019 (replay mixing).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from securedc.api import condense as api_condense
from securedc.audits.certify import Policy
from securedc.audits.pipeline import AuditConfig
from securedc.config import CondenseConfig, EvalConfig
from securedc.data import DatasetBundle, bundle_from_torch_dataset
from securedc.errors import CertificationError, ConfigError, DataError
from securedc.export import load_condensed, save_condensed
from securedc.robust import PGDRecipe
from securedc.owner import OWNER_SUFFIX, read_owner_record

__all__ = [
    "CondensedDataset",
    "PGDRecipe",
    "AdversarialLoader",
    "adversarial_batch",
    "condense",
    "cache_key",
    "default_cache_dir",
    "condensed_loader",
    "MixedDataset",
    "replay_mix",
]

logger = logging.getLogger(__name__)


class CondensedDataset(Dataset):
    """Map-style dataset over an exported condensed file (``.safetensors`` + manifest).

    The file's tensor hash is verified on load. A file whose manifest does not say
    ``audit.certified = true`` is refused unless ``allow_uncertified=True``.

    Args:
        path: file written by :func:`securedc.export.save_condensed` or ``securedc condense``.
        transform: applied to each image tensor ``[C, H, W]`` (float in [0, 1]).
        allow_uncertified: accept a file the audit did not certify (or that was never audited).
        use_soft_labels: when the file holds ``soft_labels`` (a robust teacher's per-image
            probabilities), items are ``(image, probabilities [C])`` instead of ``(image, int)``,
            so ``F.cross_entropy(logits, target)`` trains with the KD (soft-target) loss unchanged;
            ``None`` (default) = whenever present, ``False`` = always the int label.

    Attributes:
        path, manifest, images ``[M, C, H, W]``, labels ``[M]``, classes (names),
        privacy (manifest section), certified, targets (list of int labels, torchvision style),
        from_cache (set by :func:`condense`).

    Raises:
        DataError: missing/corrupt file or hash mismatch.
        CertificationError: uncertified file without ``allow_uncertified=True``.

    Example:
        >>> import tempfile, pathlib, torch
        >>> from securedc.export import save_condensed
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "s.safetensors"
        >>> _ = save_condensed(p, torch.rand(4, 1, 8, 8), torch.tensor([0, 0, 1, 1]),
        ...                    {"dataset": {"classes": ["a", "b"]}})
        >>> ds = CondensedDataset(p, allow_uncertified=True)
        >>> len(ds), ds.classes, ds[0][0].shape, ds[3][1]
        (4, ['a', 'b'], torch.Size([1, 8, 8]), 1)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        transform: Callable[[Tensor], Any] | None = None,
        allow_uncertified: bool = False,
        use_soft_labels: bool | None = None,
    ) -> None:
        self.path = Path(path)
        loaded = load_condensed(self.path)
        if not loaded.certified and not allow_uncertified:
            audit = loaded.manifest.get("audit", {})
            ran = isinstance(audit, dict) and audit.get("ran")
            raise CertificationError(
                f"condensed set {str(self.path)!r} is not certified by the audit "
                f"({'audit refused it' if ran else 'audit not run'}); audit it first or pass "
                "CondensedDataset(path, allow_uncertified=True) to use it anyway"
            )
        self.manifest: dict[str, Any] = loaded.manifest
        self.images: Tensor = loaded.images
        self.labels: Tensor = loaded.labels
        self.soft_labels: Tensor | None = loaded.soft_labels
        if use_soft_labels and self.soft_labels is None:
            raise DataError(f"{str(self.path)!r} has no soft_labels tensor (condense with soft labels, "
                            "or use_soft_labels=None/False)")
        self.use_soft_labels = self.soft_labels is not None and use_soft_labels is not False
        self.certified: bool = loaded.certified
        self.privacy: dict[str, Any] = loaded.privacy
        self.transform = transform
        self.from_cache = False
        names = (loaded.manifest.get("dataset") or {}).get("classes")
        if names is None:
            names = [str(c) for c in range(int(self.labels.max()) + 1 if len(self.labels) else 0)]
        self.classes: list[str] = list(names)
        self.targets: list[int] = self.labels.tolist()

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        if self.use_soft_labels:
            assert self.soft_labels is not None
            return image, self.soft_labels[index]
        return image, int(self.labels[index])

    def __repr__(self) -> str:
        eps = self.privacy.get("epsilon", "inf") if self.privacy.get("private") else "inf"
        return (f"CondensedDataset({str(self.path)!r}, images={len(self)}, classes={len(self.classes)}, "
                f"epsilon={eps}, certified={self.certified})")


def default_cache_dir() -> Path:
    """``$SECUREDC_CACHE/condensed`` if set, else ``~/.cache/securedc/condensed``."""
    root = os.environ.get("SECUREDC_CACHE")
    return Path(root) / "condensed" if root else Path.home() / ".cache" / "securedc" / "condensed"


def cache_key(
    config: CondenseConfig, fingerprint: str, *, audit: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
) -> str:
    """SHA-256 hex of (full configuration, data fingerprint, securedc version[, audit settings][, metadata]).

    ``metadata`` holds what the file records besides the pixels (name, class names, the public
    normalisation constants): another value is another file.

    The key is computed from the data: it goes into the owner record beside a cached file
    (``cache.key``), never into the file or its name.

    Example:
        >>> a = cache_key(CondenseConfig(ipc=1), "f" * 64)
        >>> a == cache_key(CondenseConfig(ipc=1), "f" * 64), a == cache_key(CondenseConfig(ipc=2), "f" * 64)
        (True, False)
    """
    import securedc

    payload = {"config": config.to_dict(), "fingerprint": fingerprint, "version": securedc.__version__}
    if audit is not None:  # an audited release is another file than an unaudited one
        payload["audit"] = audit
    if metadata is not None:
        payload["metadata"] = metadata
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _find_cached(folder: Path, key: str) -> tuple[Path, str] | None:
    """The cached release whose owner record holds ``key``: ``(path, tensor_sha256)``, or ``None``."""
    if not folder.is_dir():
        return None
    for record_file in sorted(folder.glob(f"*{OWNER_SUFFIX}")):
        release = record_file.with_name(record_file.name.removesuffix(OWNER_SUFFIX) + ".safetensors")
        try:
            record = read_owner_record(release)
        except DataError as err:
            logger.debug("skipping %s: %s", record_file, err)
            continue
        if (record or {}).get("cache", {}).get("key") == key and release.is_file():
            return release, str(record.get("tensor_sha256"))
    return None


def condense(
    dataset: Dataset | DatasetBundle,
    *,
    ipc: int,
    epsilon: float | None = None,
    delta: float | None = None,
    adv_eps: float | None = None,
    config: CondenseConfig | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    refresh: bool = False,
    transform: Callable[[Tensor], Any] | None = None,
    classes: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    test: Dataset | None = None,
    audit: AuditConfig | None = None,
    policy: Policy | str | os.PathLike[str] | None = None,
    eval_config: EvalConfig | None = None,
    force: bool = False,
    **options: Any,
) -> CondensedDataset:
    """Condense any map-style dataset of ``(image, label)`` and return it as a Dataset, cached.

    Without ``audit`` the whole ``dataset`` is condensed (no test split is taken from it). Images may be
    PIL images, numpy arrays or tensors (see :func:`securedc.data.bundle_from_torch_dataset`);
    they are materialised once to compute the fingerprint, so a second call with the same
    arguments reads the data but skips the condensation.

    Args:
        dataset: a torchvision dataset, ``TensorDataset``, a user Dataset, or a
            :class:`~securedc.data.DatasetBundle` (its training split is condensed).
        ipc: synthetic images per class.
        epsilon: DP target ε (``None``/``inf`` = not private).
        delta: DP δ (default below 1/N).
        adv_eps: L∞ radius of the adversarial term (``None``/0 = off).
        config: a base :class:`CondenseConfig`; the arguments above and ``options`` override it.
        cache_dir: where files go (default :func:`default_cache_dir`).
        refresh: recompute even if a cached file exists.
        transform: passed to the returned :class:`CondensedDataset`.
        classes, mean, std: class names and PUBLIC normalisation constants (default 0.5).
        test: real test data for the audit's accuracy (default: each example of ``dataset`` with
            probability 0.2, by a keyed hash of its bytes, taken out before condensing); used only
            with ``audit``.
        audit: audit and certify the release (:class:`~securedc.audits.pipeline.AuditConfig`), as
            :func:`securedc.release` does; ``None`` (default) = not audited.
        policy: certification thresholds (a Policy, a TOML file, or ``None`` for the default).
        eval_config: protocol of the audit's fresh models (default :class:`EvalConfig`).
        force: keep a release the audit refused (marked uncertified) instead of raising.
        **options: any other option of :meth:`CondenseConfig.from_options` (``iterations``, ``batch_real`` …).

    Returns:
        A :class:`CondensedDataset`: certified when audited (and not forced), else opened with
        ``allow_uncertified=True``; ``from_cache`` tells whether it was loaded from the cache.

    Raises:
        ConfigError, PrivacyError, DataError: as :func:`securedc.api.condense`.
        CertificationError: the audit refused the release (its report is written; ``force`` keeps it).

    Example:
        >>> import tempfile, torch
        >>> from torch.utils.data import TensorDataset
        >>> g = torch.Generator().manual_seed(0)
        >>> data = TensorDataset(torch.rand(40, 1, 8, 8, generator=g), torch.arange(40) % 2)
        >>> cache = tempfile.mkdtemp()
        >>> ds = condense(data, ipc=2, iterations=2, batch_real=8, cache_dir=cache)
        >>> len(ds), ds.from_cache, condense(data, ipc=2, iterations=2, batch_real=8, cache_dir=cache).from_cache
        (4, False, True)
    """
    cfg = CondenseConfig.from_options(config, ipc=ipc, epsilon=epsilon, delta=delta, adv_eps=adv_eps, **options)
    if isinstance(dataset, DatasetBundle):
        bundle = dataset
    else:
        bundle = bundle_from_torch_dataset(dataset, test, test_fraction=0.2 if audit is not None else 0.0,
                                           classes=classes, mean=mean, std=std)
    settings = None
    if audit is not None:
        from securedc.release import resolve_policy

        settings = {"audit": dataclasses.asdict(audit.validate()), "policy": resolve_policy(policy).to_dict()}
    metadata = {"name": bundle.name, "classes": list(bundle.classes), "mean": list(bundle.mean),
                "std": list(bundle.std)}
    key = cache_key(cfg, bundle.fingerprint, audit=settings, metadata=metadata)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    found = _find_cached(folder, key)
    if found is not None and not refresh and (cached := _open_cached(found, transform)) is not None:
        if audit is not None and not force and not cached.certified:  # a forced refusal stays refused
            raise CertificationError(f"the cached release {found[0]} was refused by its audit (kept with force=True); "
                                     "pass force=True to use it, or refresh=True to condense again")
        return cached
    from securedc.release import default_stem, release

    path = found[0] if found else folder / f"{default_stem(bundle.name, cfg.ipc)}-{secrets.token_hex(8)}.safetensors"
    # a random name: the key must not be readable from the file name either
    cache = {"cache": {"key": key, "created_by": "securedc.plugins.torch.condense"}}
    if audit is None:
        outcome = api_condense(bundle, config=cfg)
        save_condensed(path, outcome.images, outcome.labels, outcome.manifest(), owner=outcome.owner_record(**cache),
                       soft_labels=outcome.soft_labels)
        logger.info("condensed %d images to %s (not audited: uncertified)", len(outcome.labels), path)
        return CondensedDataset(path, transform=transform, allow_uncertified=True)
    done = release(cfg, bundle, out=path.parent, name=path.name.removesuffix(".safetensors"), audit=audit,
                   policy=policy, eval_config=eval_config or EvalConfig(), force=force, record=cache)
    assert done is not None  # the plugin condenses in one process
    done.check()
    logger.info("audited release %s: certified = %s", path, done.certified)
    return CondensedDataset(path, transform=transform, allow_uncertified=force)


def _open_cached(found: tuple[Path, str], transform: Callable[[Tensor], Any] | None) -> CondensedDataset | None:
    """The cached file if it is readable and matches its owner record, else ``None`` (recompute)."""
    try:
        ds = CondensedDataset(found[0], transform=transform, allow_uncertified=True)
    except DataError as err:
        logger.warning("cached file %s is unreadable (%s); recomputing", found[0], err)
        return None
    if ds.manifest.get("tensor_sha256") != found[1]:
        logger.warning("cached file %s does not match its owner record; recomputing", found[0])
        return None
    ds.from_cache = True
    logger.info("loaded condensed set from cache %s", found[0])
    return ds


def _labels_of(ds: Dataset) -> Tensor:
    for name in ("labels", "targets"):
        value = getattr(ds, name, None)
        if value is not None:
            return torch.as_tensor(value, dtype=torch.int64)
    return torch.tensor([int(ds[i][1]) for i in range(len(ds))], dtype=torch.int64)  # type: ignore[arg-type]


def condensed_loader(
    dataset: Dataset,
    *,
    batch_size: int = 256,
    shuffle: bool = True,
    seed: int = 0,
    num_workers: int = 0,
    class_balanced: bool = False,
    drop_last: bool = False,
) -> DataLoader:
    """A seeded ``DataLoader`` for a (small) condensed set.

    Args:
        dataset: usually a :class:`CondensedDataset` (any map-style dataset works).
        batch_size: capped at ``len(dataset)`` so a tiny set still gives full batches.
        shuffle: reshuffle each epoch with a generator seeded by ``seed`` (same seed ->
            same batch order).
        seed: seed of the sampler's generator.
        num_workers: DataLoader workers (condensed sets are in memory; 0 is usually fastest).
        class_balanced: sample with replacement, each class equally likely (weights
            1/count of the label); useful when ``dataset`` is a :class:`MixedDataset`
            or when some classes have more images. Epoch length stays ``len(dataset)``.
            Random sampling by nature: ``shuffle=False`` is refused with it.
        drop_last: drop the last incomplete batch.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> ds = TensorDataset(torch.rand(6, 1, 2, 2), torch.tensor([0, 0, 0, 0, 1, 1]))
        >>> [len(b[1]) for b in condensed_loader(ds, batch_size=4)]
        [4, 2]
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1 (got {batch_size})")
    generator = torch.Generator().manual_seed(seed)
    batch_size = min(batch_size, max(1, len(dataset)))  # type: ignore[arg-type]
    if class_balanced:
        if not shuffle:
            raise ConfigError("class_balanced=True samples at random; it cannot keep shuffle=False's fixed order")
        labels = _labels_of(dataset)
        counts = torch.bincount(labels).double()
        weights = (1.0 / counts)[labels]
        sampler = WeightedRandomSampler(weights, num_samples=len(labels), replacement=True, generator=generator)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, drop_last=drop_last)
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, generator=generator if shuffle else None,
        num_workers=num_workers, drop_last=drop_last,
    )


class MixedDataset(Dataset):
    """A real dataset plus replayed condensed images, a fraction ``ratio`` of the items.

    Semantics: the length is ``len(real) + R`` with ``R = round(len(real) * ratio / (1 - ratio))``,
    so ``ratio`` is exactly the share of condensed items in one pass. Indices
    ``0 … len(real)-1`` are the real items unchanged; indices ``len(real) + k`` are the
    condensed item ``order[k]``, where ``order`` concatenates seeded permutations of the
    condensed set (every condensed image is replayed equally often, ±1). Shuffle with a
    DataLoader (:func:`replay_mix`) to spread replay items over the batches, giving on
    average ``ratio * batch_size`` replay items per batch. The real dataset must return
    ``(tensor [C, H, W] in [0, 1], int label)`` with the condensed set's shape and label space.

    Args:
        real: the current task's data (map-style).
        condensed: the replay memory (e.g. a :class:`CondensedDataset` of earlier tasks).
        ratio: share of replay items, in ``[0, 1)``.
        seed: seed of the replay order.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> real = TensorDataset(torch.zeros(6, 1, 2, 2), torch.zeros(6, dtype=torch.int64))
        >>> memory = TensorDataset(torch.ones(2, 1, 2, 2), torch.ones(2, dtype=torch.int64))
        >>> mixed = MixedDataset(real, memory, ratio=0.25, seed=0)
        >>> len(mixed), sum(int(mixed[i][1]) for i in range(len(mixed)))
        (8, 2)
    """

    def __init__(self, real: Dataset, condensed: Dataset, *, ratio: float, seed: int = 0) -> None:
        if not (isinstance(ratio, (int, float)) and 0.0 <= ratio < 1.0 and math.isfinite(ratio)):
            raise ConfigError(f"ratio must be in [0, 1) (share of replay items); got {ratio!r}")
        n_real, n_mem = len(real), len(condensed)  # type: ignore[arg-type]
        if n_mem == 0 and ratio > 0:
            raise DataError("the condensed (replay) dataset is empty")
        if n_real and n_mem:  # a mismatch would only surface later, inside the DataLoader's collate
            real_shape, replay_shape = getattr(real[0][0], "shape", None), getattr(condensed[0][0], "shape", None)
            if real_shape is not None and replay_shape is not None and tuple(real_shape) != tuple(replay_shape):
                raise DataError(f"real items have shape {tuple(real_shape)} but condensed ones {tuple(replay_shape)}; "
                                "replay needs the condensed set of the same data (or a transform that matches them)")
        self.real, self.condensed, self.ratio, self.seed = real, condensed, float(ratio), seed
        self.num_real = n_real
        self.num_replay = int(round(n_real * ratio / (1.0 - ratio)))
        gen = torch.Generator().manual_seed(seed)
        cycles = -(-self.num_replay // n_mem) if n_mem else 0
        perms = [torch.randperm(n_mem, generator=gen) for _ in range(cycles)]
        self.replay_order = torch.cat(perms)[: self.num_replay] if perms else torch.zeros(0, dtype=torch.int64)
        self.labels = torch.cat([_labels_of(real), _labels_of(condensed)[self.replay_order]])

    def __len__(self) -> int:
        return self.num_real + self.num_replay

    def __getitem__(self, index: int) -> Any:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for MixedDataset of length {len(self)}")
        if index < self.num_real:
            return self.real[index]
        return self.condensed[int(self.replay_order[index - self.num_real])]


def replay_mix(
    real: Dataset,
    condensed: Dataset,
    *,
    ratio: float,
    batch_size: int = 256,
    seed: int = 0,
    num_workers: int = 0,
) -> DataLoader:
    """Shuffled, seeded loader over ``MixedDataset(real, condensed, ratio=ratio, seed=seed)``.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> real = TensorDataset(torch.zeros(30, 1, 2, 2), torch.zeros(30, dtype=torch.int64))
        >>> memory = TensorDataset(torch.ones(4, 1, 2, 2), torch.ones(4, dtype=torch.int64))
        >>> loader = replay_mix(real, memory, ratio=0.25, batch_size=8)
        >>> sum(int(y.sum()) for _, y in loader), len(loader.dataset)
        (10, 40)
    """
    mixed = MixedDataset(real, condensed, ratio=ratio, seed=seed)
    return condensed_loader(mixed, batch_size=batch_size, shuffle=True, seed=seed, num_workers=num_workers)


class AdversarialLoader:
    """Wrap a loader so every batch is replaced by its PGD examples against ``model`` (adversarial training).

    Iterating yields ``(x_adv, target)``: ``x_adv`` is :meth:`PGDRecipe.perturb` of the batch's images
    against the model's *current* weights (torchattacks PGD, per-example keyed start), ``target`` is the
    batch's target unchanged (an int label, or a soft-label vector — PGD then attacks its argmax).
    The model's training mode is restored after each attack.

    Args:
        loader: any iterable of ``(images in [0, 1], targets)``, e.g. :func:`condensed_loader`.
        model: the model being trained.
        recipe: the :class:`PGDRecipe`.
        seed: keys of the random starts (batch ``b`` of epoch ``e`` uses a different key).

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> ds = TensorDataset(torch.rand(8, 1, 4, 4), torch.arange(8) % 2)
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
        >>> adv = AdversarialLoader(condensed_loader(ds, batch_size=4), model=net, recipe=PGDRecipe(eps=0.1, steps=2))
        >>> [tuple(x.shape) for x, _ in adv], len(adv)
        ([(4, 1, 4, 4), (4, 1, 4, 4)], 2)
    """

    def __init__(self, loader: Any, *, model: torch.nn.Module, recipe: PGDRecipe, seed: int = 0) -> None:
        if not isinstance(recipe, PGDRecipe):
            raise ConfigError(f"recipe must be a PGDRecipe(eps=..., steps=...), got {type(recipe).__name__}")
        self.loader, self.model, self.recipe, self.seed = loader, model, recipe, seed
        self._epoch = 0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        epoch, self._epoch = self._epoch, self._epoch + 1
        for b, (x, target) in enumerate(self.loader):
            yield adversarial_batch(self.model, x, target, recipe=self.recipe,
                                    seed=self.seed * 1_000_003 + epoch * 10_007 + b), target


def adversarial_batch(model: torch.nn.Module, x: Tensor, target: Tensor, *, recipe: PGDRecipe, seed: int) -> Tensor:
    """PGD examples of one batch (hard labels, or the argmax of soft-label targets), model mode restored."""
    was_training = model.training
    hard = target.argmax(1) if target.dim() == 2 else target
    try:
        return recipe.perturb(model, x, hard.to(x.device), seed=seed)
    finally:
        model.train(was_training)
