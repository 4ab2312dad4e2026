"""High-level Python API: ``condense(data, *, ipc, ...)`` and manifest building."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from securedc.batching import resolve_precision
from securedc.condensation import Condensation, run_condensation, step_events
from securedc.condenser import CondenseResult, ProgressEvent
from securedc.config import CondenseConfig
from securedc.data import DatasetBundle, bundle_from_torch_dataset, load_dataset
from securedc.errors import ConfigError

__all__ = ["Condensation", "condense", "as_bundle", "build_manifest", "build_owner_record"]


def as_bundle(
    data: DatasetBundle | Dataset | str, *, root: str | None = None, download: bool = False,
    test_fraction: float = 0.2,
) -> DatasetBundle:
    """Accept a dataset name, a :class:`DatasetBundle` or any map-style torch ``Dataset``.

    A torch ``Dataset`` has no test split: ``test_fraction`` of it (each example by a hash of its
    own bytes, :func:`securedc.data.split.train_test_split`) becomes the test split; ``0`` keeps
    every example for training.
    """
    if isinstance(data, DatasetBundle):
        return data
    if isinstance(data, str):
        return load_dataset(data, root=root, download=download)
    if isinstance(data, Dataset) or (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        return bundle_from_torch_dataset(data, test_fraction=test_fraction)
    raise ConfigError(f"cannot condense data of type {type(data).__name__}; give a dataset name or a torch Dataset")


def condense(
    data: DatasetBundle | Dataset | str = "digits",
    *,
    ipc: int | None = None,
    epsilon: float | str | None = None,
    delta: float | str | None = None,
    adv_eps: float | str | None = None,
    config: CondenseConfig | None = None,
    callback: Callable[[ProgressEvent], None] | None = None,
    checkpoint_path: str | Path | None = None,
    resume_from: str | Path | None = None,
    **options: Any,
) -> Condensation:
    """Condense ``data`` into ``ipc`` synthetic images per class (no audit, nothing written).

    For an audited, exported release use :func:`securedc.release`.

    Args:
        data: a dataset name (``"digits"``, ``"fashion-mnist"``, ``"npz:FILE"`` …), a
            :class:`DatasetBundle`, or any map-style torch Dataset of (image, label) (condensed
            whole: no test split is taken from it).
        ipc: images per class (default 10, or ``config``'s).
        epsilon: DP target ε (``inf`` = non-private).
        delta: DP δ (default: below 1/N).
        adv_eps: L∞ radius of the adversarial term (0 = off).
        config: a base :class:`CondenseConfig`; every keyword that is not ``None`` overrides it
            (:meth:`CondenseConfig.from_options`, the rule the CLI and the plugins use too).
        callback: progress callback, called with a :class:`ProgressEvent` per step.
        checkpoint_path, resume_from: checkpointing (see :meth:`Condenser.fit`).
        **options: any other option of :meth:`CondenseConfig.from_options` (``iterations``, ``discrepancy`` …).

    Returns:
        :class:`Condensation`.

    Example:
        >>> out = condense("digits", ipc=1, iterations=3, batch_real=16)
        >>> out.images.shape, out.result.privacy["private"]
        (torch.Size([10, 1, 8, 8]), False)
    """
    cfg = CondenseConfig.from_options(config, ipc=ipc, epsilon=epsilon, delta=delta, adv_eps=adv_eps, **options)
    bundle = as_bundle(data, test_fraction=0.0)  # nothing is evaluated here: a Dataset is condensed whole
    out = run_condensation(cfg, bundle, progress=step_events(callback) if callback is not None else None,
                           checkpoint=checkpoint_path, resume=resume_from, distributed=False)
    assert out is not None  # only a distributed run returns None
    return out


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
            "lr_img": result.lr_img if result.lr_img is not None else config.resolved_lr_img(bundle.std),
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
