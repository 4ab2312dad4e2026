"""A robust extractor / teacher trained on data the user declares public (``securedc extractor``).

The robust-feature term and the soft labels (``--adv-eps``, ``--soft-labels``) need a robust
network. In DP mode it may never see the private data: by default it is adversarially trained on
the synthetic set only (post-processing), which on a tiny S is a weak teacher. This module trains
a stronger one on a dataset the user declares PUBLIC — e.g. a public benchmark of the same
domain, or, for a non-private release, the training data itself — and writes it as safetensors
weights for ``securedc condense --robust-extractor FILE``. The file's metadata records what it
was trained on and its measured clean and PGD-20 accuracy, so a reader can check both claims.

Robustness transfers to models trained on a condensed set through the soft labels of a robust
teacher (Goldblum et al., ARD) far more than through matching its features: on Fashion-MNIST
IPC 10, soft labels of such a teacher raised the PGD-20 accuracy of standard-trained models by
4.3 points over three seeds (at 4.1 clean points) while feature matching alone gave none
(docs/audits.md).

References:
    Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018.
    Wong, Rice & Kolter, "Fast is better than free: Revisiting adversarial training", ICLR 2020.
    Goldblum et al., "Adversarially Robust Distillation", AAAI 2020, arXiv:1905.09747.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from securedc.data import DatasetBundle
from securedc.errors import ConfigError, DataError
from securedc.models.registry import seeded_model
from securedc.robust import PGDRecipe, save_extractor, train_robust_extractor

__all__ = [
    "PublicExtractor",
    "auto_epochs",
    "check_declared_public",
    "check_extractor_options",
    "extractor_metadata",
    "fit_public_extractor",
    "score_text",
]

#: metadata key of the JSON description written into the weights file
METADATA_KEY = "securedc_extractor"

#: description field holding the fingerprint of the training data (kept in the file, never in a release)
FINGERPRINT_KEY = "dataset_fingerprint"

#: optimisation steps the automatic epoch count aims at (FMNIST, 10 000 images, batch 128: 4 epochs)
AUTO_STEPS = 240


@dataclass(frozen=True)
class PublicExtractor:
    """A robust network trained on declared-public data, with what it was trained on and how robust it is.

    Attributes:
        model: the trained network (frozen, eval mode).
        description: dataset name, source and fingerprint, images, epochs, seed, recipe, eps, model
            and the measured ``clean_acc`` / ``pgd20_acc`` on the dataset's test split (``test_images``
            of them).
    """

    model: nn.Module
    description: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the weights (safetensors, atomic) with :attr:`description` in the file's metadata."""
        save_extractor(path, self.model, metadata={METADATA_KEY: json.dumps(self.description, sort_keys=True)})


def check_extractor_options(*, eps: float, images: int, epochs: int, test_images: int = 1) -> None:
    """Raise :class:`ConfigError` for an ``eps`` outside (0, 1], ``epochs`` or ``images`` < 0, or ``test_images`` < 1."""
    if not (0 < eps <= 1):
        raise ConfigError(f"extractor eps must be in (0, 1] (got {eps}); e.g. 8/255")
    if epochs < 0 or images < 0:
        raise ConfigError(f"extractor epochs and images must be >= 0 (got {epochs}, {images})")
    if test_images < 1:
        raise ConfigError(f"extractor test images must be >= 1 (got {test_images})")


def auto_epochs(images: int, batch_size: int) -> int:
    """Epochs for at least :data:`AUTO_STEPS` optimisation steps, and at least 3 epochs.

    Example:
        >>> auto_epochs(10_000, 128), auto_epochs(1347, 128), auto_epochs(60_000, 128)
        (4, 22, 3)
    """
    batches = max(1, math.ceil(images / batch_size))
    return max(3, math.ceil(AUTO_STEPS / batches))


def fit_public_extractor(
    bundle: DatasetBundle,
    *,
    eps: float,
    images: int = 10_000,
    epochs: int = 0,
    seed: int = 0,
    model: str = "convnet",
    test_images: int = 500,
    batch_size: int = 128,
) -> PublicExtractor:
    """Adversarially train ``model`` on (a seeded subset of) ``bundle``'s training split, then measure it.

    The caller declares ``bundle`` public: nothing here is accounted for. Training is fast
    adversarial training (FGSM from a random start, step 1.25 eps; Wong et al. 2020), the recipe
    of the robustness audit; robustness is then measured with PGD-20 (2 restarts) on a seeded
    subsample of the test split.

    Args:
        bundle: the public dataset.
        eps: L∞ radius in [0, 1] pixel units (e.g. 8/255).
        images: training images used (a seeded subset; ``0`` or more than the split = all).
        epochs: training epochs; ``0`` = :func:`auto_epochs`.
        seed: seeds the subset, the network's init and the batch order.
        model: registered architecture (the condensation run's ``model``).
        test_images: test images attacked for the recorded accuracy.
        batch_size: training batch size.

    Returns:
        The trained :class:`PublicExtractor`.

    Raises:
        ConfigError: ``eps`` outside (0, 1], ``epochs`` or ``images`` < 0.
    """
    check_extractor_options(eps=eps, images=images, epochs=epochs, test_images=test_images)
    from securedc.audits.robustness import AttackSettings, attack_subsample, audit_model

    n = bundle.train_images.shape[0]
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(n, generator=gen)[: images or n]
    epochs = epochs or auto_epochs(int(idx.numel()), batch_size)
    net = seeded_model(model, seed=seed, in_channels=bundle.image_shape[0], num_classes=bundle.num_classes,
                       image_size=bundle.image_shape[1:], mean=bundle.mean, std=bundle.std)
    recipe = PGDRecipe.fast(eps)
    t0 = time.perf_counter()
    train_robust_extractor(net, bundle.train_images[idx], bundle.train_labels[idx], recipe=recipe, epochs=epochs,
                           seed=seed, batch_size=batch_size)
    seconds = time.perf_counter() - t0
    tx, ty = attack_subsample(bundle.test_images, bundle.test_labels, test_images, seed)
    clean = pgd20 = None  # data without a test split (e.g. a plugin's whole dataset): nothing to score on
    if tx.shape[0]:
        head = audit_model(net, tx, ty, eps=eps, num_classes=bundle.num_classes, seed=seed,
                           settings=AttackSettings.quick(), sanity=False)
        clean, pgd20 = float(head.metrics["clean_acc"]), float(head.metrics["pgd20_acc"])
    description = {
        "declared_public": bundle.name, "source": bundle.source, FINGERPRINT_KEY: bundle.fingerprint,
        "train_images": int(idx.numel()),
        "epochs": epochs, "seed": seed, "model": model, "eps": eps, "recipe": recipe.describe(),
        "training_seconds": round(seconds, 1), "test_images": int(tx.shape[0]),
        "clean_acc": clean, "pgd20_acc": pgd20,
    }
    return PublicExtractor(model=net, description=description)


def score_text(description: dict[str, Any]) -> str:
    """The measured accuracy of a fitted extractor, in words (``"not scored"`` without test images).

    Example:
        >>> score_text({"clean_acc": 0.81, "pgd20_acc": 0.76, "test_images": 500})
        'clean 81.0 %, PGD-20 76.0 % on 500 test images'
    """
    if description.get("clean_acc") is None:
        return "not scored (no test split)"
    return (f"clean {100 * description['clean_acc']:.1f} %, PGD-20 {100 * description['pgd20_acc']:.1f} % "
            f"on {description['test_images']} test images")


def extractor_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The description :meth:`PublicExtractor.save` wrote into ``path`` (``{}`` for weights without one).

    Raises:
        DataError: unreadable file or a malformed description.
    """
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
    except FileNotFoundError:
        raise DataError(f"--robust-extractor {str(path)!r} not found") from None
    except Exception as err:  # safetensors raises its own error types for a corrupt header
        raise DataError(f"--robust-extractor {str(path)!r} is not a safetensors weights file: {err}") from None
    if METADATA_KEY not in meta:
        return {}
    try:
        out = json.loads(meta[METADATA_KEY])
    except json.JSONDecodeError as err:
        raise DataError(f"--robust-extractor {str(path)!r}: malformed {METADATA_KEY} metadata ({err})") from None
    if not isinstance(out, dict):
        raise DataError(f"--robust-extractor {str(path)!r}: malformed {METADATA_KEY} metadata (not an object)")
    return out


def check_declared_public(path: str | os.PathLike[str], bundle: DatasetBundle) -> None:
    """Refuse an extractor file trained on ``bundle`` itself, for a DP run that condenses ``bundle``.

    A teacher or extractor that saw the private data passes it on through its features and soft
    labels, outside the accountant. :func:`fit_public_extractor` records the name, source and
    fingerprint of the dataset it was trained on (the fingerprint covers the train and test split,
    and an audited run's member split keeps the whole dataset's); when the fingerprint, or the
    name and source together, equal those of the data a DP run condenses — e.g.
    ``securedc extractor T --dataset fashion-mnist`` followed by
    ``securedc condense --dataset fashion-mnist --epsilon 8 --robust-extractor T`` — the run is
    refused. The check cannot see overlap between different datasets (a public set that contains
    private images): declaring the data public stays the user's responsibility (docs/privacy.md).

    Raises:
        ConfigError: the file was trained on ``bundle``.
        DataError: unreadable file or malformed description.
    """
    meta = extractor_metadata(path)
    if meta.get(FINGERPRINT_KEY) == bundle.fingerprint or (
            (meta.get("declared_public"), meta.get("source")) == (bundle.name, bundle.source)):
        raise ConfigError(f"--robust-extractor {str(path)!r} was trained on {bundle.name!r}, the data this DP run "
                          "condenses; train it on data you declare public (securedc extractor --dataset PUBLIC)")
