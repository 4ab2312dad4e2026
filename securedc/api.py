"""High-level Python API: ``condense(data, *, ipc, ...)`` and manifest building."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor
from torch.utils.data import Dataset

from securedc.batching import resolve_precision
from securedc.condenser import Condenser, CondenseResult, ProgressEvent
from securedc.config import CondenseConfig
from securedc.data import DatasetBundle, bundle_from_torch_dataset, load_dataset
from securedc.errors import ConfigError

__all__ = ["Condensation", "condense", "as_bundle", "build_manifest", "build_owner_record"]


@dataclass
class Condensation:
    """A finished condensation: the synthetic set plus everything needed to export it."""

    images: Tensor
    labels: Tensor
    config: CondenseConfig
    result: CondenseResult
    bundle: DatasetBundle

    def manifest(self, **extra: Any) -> dict[str, Any]:
        """The public manifest of the release (see :func:`build_manifest`)."""
        return build_manifest(self.bundle, self.config, self.result, **extra)

    def owner_record(self, **extra: Any) -> dict[str, Any]:
        """The data owner's record kept beside the release (see :func:`build_owner_record`)."""
        return build_owner_record(self.bundle, self.result, **extra)


def as_bundle(data: DatasetBundle | Dataset | str, *, root: str | None = None, download: bool = False) -> DatasetBundle:
    """Accept a dataset name, a :class:`DatasetBundle` or any map-style torch ``Dataset``."""
    if isinstance(data, DatasetBundle):
        return data
    if isinstance(data, str):
        return load_dataset(data, root=root, download=download)
    if isinstance(data, Dataset) or (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        return bundle_from_torch_dataset(data)
    raise ConfigError(f"cannot condense data of type {type(data).__name__}; give a dataset name or a torch Dataset")


def condense(
    data: DatasetBundle | Dataset | str = "digits",
    *,
    ipc: int = 10,
    epsilon: float = math.inf,
    delta: float | None = None,
    adv_eps: float = 0.0,
    config: CondenseConfig | None = None,
    callback: Callable[[ProgressEvent], None] | None = None,
    checkpoint_path: str | Path | None = None,
    resume_from: str | Path | None = None,
    **options: Any,
) -> Condensation:
    """Condense ``data`` into ``ipc`` synthetic images per class.

    Args:
        data: a dataset name (``"digits"``, ``"fashion-mnist"``, ``"npz:FILE"`` …), a
            :class:`DatasetBundle`, or any map-style torch Dataset of (image, label).
        ipc: images per class.
        epsilon: DP target ε (``inf`` = non-private).
        delta: DP δ (default: below 1/N).
        adv_eps: L∞ radius of the adversarial term (0 = off).
        config: a full :class:`CondenseConfig`; the keyword arguments above override it.
        callback: progress callback.
        checkpoint_path, resume_from: checkpointing (see :meth:`Condenser.fit`).
        **options: any other :class:`CondenseConfig` field (``iterations``, ``discrepancy`` …).

    Returns:
        :class:`Condensation`.

    Example:
        >>> out = condense("digits", ipc=1, iterations=3, batch_real=16)
        >>> out.images.shape, out.result.privacy["private"]
        (torch.Size([10, 1, 8, 8]), False)
    """
    bundle = as_bundle(data)
    base = config or CondenseConfig()
    fields = {f.name for f in dataclasses.fields(CondenseConfig)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ConfigError(f"unknown condense option(s) {unknown}; valid: {sorted(fields)}")
    privacy = base.privacy
    if config is None or not math.isinf(epsilon):  # explicit keywords override the given config
        privacy = dataclasses.replace(base.privacy, epsilon=epsilon, delta=delta if delta is not None else base.privacy.delta)
    adversarial = dataclasses.replace(base.adversarial, eps=adv_eps) if adv_eps else base.adversarial
    cfg = dataclasses.replace(base, ipc=ipc, privacy=privacy, adversarial=adversarial, **options).validate()
    condenser = Condenser(
        cfg, num_classes=bundle.num_classes, image_shape=bundle.image_shape, mean=bundle.mean, std=bundle.std
    )
    mechanism = condenser.make_mechanism(bundle.train_images, bundle.train_labels)
    result = condenser.fit(mechanism, callback=callback, checkpoint_path=checkpoint_path, resume_from=resume_from)
    return Condensation(images=result.images, labels=result.labels, config=cfg, result=result, bundle=bundle)


def build_manifest(
    bundle: DatasetBundle, config: CondenseConfig, result: CondenseResult, **extra: Any
) -> dict[str, Any]:
    """The public JSON manifest stored in the safetensors metadata.

    It holds only what is true of the release without reference to the private data beyond the
    DP mechanism: dataset name, source and class names, configuration, privacy accounting,
    adversarial settings and the audit verdict. The data fingerprint, the exact numbers of
    training and test examples, the wall time and every audit or evaluation number go into
    :func:`build_owner_record` instead.

    Args:
        bundle: The data condensed (name, source, classes and normalisation are recorded).
        config: The configuration of the run.
        result: The condenser's result.
        **extra: Further top-level sections (e.g. ``audit``), replacing defaults.

    Returns:
        A plain-JSON dict for :func:`securedc.export.save_condensed`.
    """
    manifest: dict[str, Any] = {
        "dataset": {
            "name": bundle.name,
            "source": bundle.source,
            "classes": list(bundle.classes),
        },
        "ipc": config.ipc,
        "image_shape": list(bundle.image_shape),
        "normalization": {"mean": list(bundle.mean), "std": list(bundle.std), "public": True},
        "config": config.to_dict(),
        "terms": result.terms,
        "privacy": result.privacy,
        "adversarial": {
            "enabled": config.adversarial.enabled,
            **({k: v for k, v in dataclasses.asdict(config.adversarial).items()} if config.adversarial.enabled else {}),
        },
        "condensation": {
            "steps_done": result.steps_done,
            "lr_img": config.resolved_lr_img(bundle.std),
            "real_precision": resolve_precision(config.real_precision, config.device),
            "final_loss": result.losses[-1] if result.losses else None,
        },
        "audit": {"certified": False, "ran": False},
    }
    manifest.update(extra)
    return manifest


def build_owner_record(bundle: DatasetBundle, result: CondenseResult, **extra: Any) -> dict[str, Any]:
    """What only the data owner keeps about a release (``NAME.owner.json``, see :mod:`securedc.owner`).

    Args:
        bundle: The data condensed.
        result: The condenser's result.
        **extra: Further sections (``audit``, ``evaluation``, ``cache`` ...).

    Returns:
        A plain-JSON dict: the data fingerprint, the exact numbers of training and test
        examples, the condensation's wall time, how many real per-sample vectors the DP
        mechanism zeroed as non-finite, plus ``extra``.
    """
    record: dict[str, Any] = {
        "dataset": {
            "fingerprint": bundle.fingerprint,
            "num_train": int(bundle.train_labels.shape[0]),
            "num_test": int(bundle.test_labels.shape[0]),
        },
        "condensation": {"seconds": round(result.seconds, 3), "nonfinite_rows_zeroed": result.nonfinite_rows},
    }
    record.update(extra)
    return record
