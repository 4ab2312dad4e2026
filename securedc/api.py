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

__all__ = ["Condensation", "condense", "as_bundle", "build_manifest"]


@dataclass
class Condensation:
    """A finished condensation: the synthetic set plus everything needed to export it."""

    images: Tensor
    labels: Tensor
    config: CondenseConfig
    result: CondenseResult
    bundle: DatasetBundle

    def manifest(self, **extra: Any) -> dict[str, Any]:
        return build_manifest(self.bundle, self.config, self.result, **extra)


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
    """The JSON manifest stored in the safetensors metadata (docs/design.md)."""
    manifest: dict[str, Any] = {
        "dataset": {
            "name": bundle.name,
            "source": bundle.source,
            "fingerprint": bundle.fingerprint,
            "classes": list(bundle.classes),
            "num_train": int(bundle.train_labels.shape[0]),
            "num_test": int(bundle.test_labels.shape[0]),
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
            "seconds": round(result.seconds, 3),
            "final_loss": result.losses[-1] if result.losses else None,
        },
        "audit": {"certified": False, "ran": False},
    }
    manifest.update(extra)
    return manifest
