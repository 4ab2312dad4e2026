"""Initialisation of a condensation run: the initial synthetic set S, its optimiser and the run state.

S starts from real images or averages of them (``init="real"``/``"mix"``/``"kmeans"``,
non-private runs only, through the mechanism), from the DP prototypes (``"prototype"``: the DP
sub-class centres when the prototype rounds released them, else the class means plus public noise),
or from public noise (``"noise"``). All public randomness comes from the
seed :func:`~securedc.releases.step_seed` ``(seed, -1)``, per class.

Example:
    >>> from securedc.config import CondenseConfig
    >>> cfg = CondenseConfig(ipc=2, init="noise")
    >>> initial_images(cfg, None, None, classes=[0, 1], image_shape=(1, 4, 4), resuming=False).shape
    torch.Size([4, 1, 4, 4])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from securedc.bank import StatisticsBank
from securedc.config import REAL_DATA_INITS, CondenseConfig
from securedc.errors import ConfigError
from securedc.functional import noise_images
from securedc.kmeans import auto_real_init
from securedc.lr_adapter import HypergradientLR
from securedc.privacy import Mechanism, PrivacyAccountant
from securedc.privacy.mechanism import class_generator
from securedc.releases import step_seed
from securedc.run_checkpoint import RunState

__all__ = ["initial_images", "make_optimizer", "initial_state", "PROTOTYPE_NOISE"]

#: scale of the public noise added to each copy of a DP class prototype (deviation std 0.05 in
#: [0, 1] pixels): enough for the copies to differ, small enough not to bury the prototype. Chosen on
#: digits (members = 80 % of the training split, ε ∈ {1, 8}, 3 ConvNet-3 × 300 epochs without
#: augmentation): scale 0.25 gave 77.0 / 90.4 %, scale 1 gave 75.2 / 88.7 %.
PROTOTYPE_NOISE = 0.25


def initial_images(
    config: CondenseConfig,
    mechanism: Mechanism | None,
    prototypes: Tensor | None,
    *,
    centres: Tensor | None = None,
    classes: Sequence[int],
    image_shape: tuple[int, ...],
    resuming: bool,
) -> Tensor:
    """Initial S: real images or prototypes of them (non-private), DP class prototypes plus public
    noise, or public noise.

    Args:
        config: the run's configuration (``init``, ``init_mix``, ``ipc``, ``seed``).
        mechanism: the real data's mechanism, or ``None`` (re-condensation from a bank).
        prototypes: ``[C, *image_shape]`` DP class prototypes, or ``None``.
        centres: ``[C, K, *image_shape]`` DP sub-class centres (:mod:`securedc.privacy.centres`), or
            ``None``. With ``init="prototype"`` image j of class c starts at centre ``j mod K``, plus
            public noise from its second copy on (``ipc > K``, e.g. re-condensing a bank at a larger IPC).
        classes: the classes condensed, in order.
        image_shape: ``(channels, height, width)``.
        resuming: the run resumes from a checkpoint (which overwrites S).

    Returns:
        ``[len(classes) * ipc, *image_shape]`` images, class by class.

    Raises:
        ConfigError: ``init`` needs what is not given (the real data or the prototypes).
    """
    seed = step_seed(config.seed, -1)
    init = config.resolved_init
    if init in REAL_DATA_INITS:
        if mechanism is None:
            raise ConfigError(f"--init {init} needs the real data; a bank alone supports --init noise")
        if init == "kmeans" and config.init == "auto":  # small classes: k-means centres expose their members
            init = auto_real_init(int(mechanism.class_counts.min()), config.ipc)
        if init == "kmeans":
            return mechanism.kmeans_init(config.ipc, seed=seed, min_members=config.init_mix).float()
        mix = config.init_mix if init == "mix" else 1
        return mechanism.real_init(config.ipc, seed=seed, mix=mix).float()
    shape = (config.ipc, *image_shape)
    noise = [noise_images(shape, generator=class_generator(seed, c)) for c in classes]
    if init == "prototype":
        if prototypes is None and not resuming:  # a resume overwrites S from the checkpoint
            raise ConfigError("--init prototype needs the DP class prototypes (a private run with "
                              "prototype_share > 0, or a bank saved by one); use --init noise")
        if centres is not None:
            k = centres.shape[1]
            copies = torch.arange(config.ipc) % k
            fresh = (torch.arange(config.ipc) >= k).to(noise[0]).view(-1, *([1] * len(image_shape)))
            noise = [(centres[c].to(n)[copies] + fresh * PROTOTYPE_NOISE * (n - 0.5)).clamp(0, 1)
                     for c, n in zip(classes, noise)]
        elif prototypes is not None:
            protos = prototypes.to(noise[0])
            noise = [(protos[c] + PROTOTYPE_NOISE * (n - 0.5)).clamp(0, 1) for c, n in zip(classes, noise)]
    return torch.cat(noise)


def make_optimizer(config: CondenseConfig, images: Tensor, *, lr: float) -> torch.optim.Optimizer:
    """The optimiser of S (``config.optimizer``: SGD with ``config.momentum``, or Adam) at rate ``lr``."""
    if config.optimizer == "adam":
        return torch.optim.Adam([images], lr=lr)
    return torch.optim.SGD([images], lr=lr, momentum=config.momentum)


def initial_state(
    config: CondenseConfig,
    images: Tensor,
    bank: StatisticsBank,
    accountant: PrivacyAccountant | None,
    *,
    lr: float,
    device: torch.device,
) -> RunState:
    """A run's starting state: S from ``images`` on ``device`` (requiring grad), its optimiser
    (:func:`make_optimizer`) at rate ``lr`` and, with ``config.learn_lr``, the learning-rate
    adapter (:class:`~securedc.lr_adapter.HypergradientLR`).

    Args:
        config: the run's configuration.
        images: the initial S (:func:`initial_images`).
        bank: the bank the run fills.
        accountant: the DP accountant, or ``None``.
        lr: the image learning rate.
        device: where S is optimised.
    """
    images = images.to(device)
    images.requires_grad_(True)
    optimizer = make_optimizer(config, images, lr=lr)
    adapter = HypergradientLR(optimizer, base_lr=lr) if config.learn_lr else None
    return RunState(images, optimizer, adapter, bank, accountant)
