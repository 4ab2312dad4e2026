"""Train fresh models on a (condensed) training set and test them on real test data.

Protocol (the reference protocol of docs/benchmarks.md): SGD lr 0.01, momentum 0.9, weight decay 5e-4,
batch 256, DSA augmentation while training, lr × 0.1 at half of the epochs; the
mean ± std over several fresh models is reported. The same routine evaluates a
random real subset of the same size as the baseline.

References:
    Zhao, Mopuri & Bilen, "Dataset Condensation with Gradient Matching", ICLR 2021, arXiv:2006.05929.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from securedc.augment import DSA
from securedc.batching import auto_chunk
from securedc.devices import resolve_device
from securedc.config import EvalConfig
from securedc.errors import ConfigError, DataError
from securedc.models import seeded_model
from securedc.robust import PGDRecipe, check_soft_labels, soft_label_loss

__all__ = ["EvalRequest", "EvalResult", "train_model", "accuracy", "evaluate_set", "evaluate_draws",
           "evaluate_requests", "random_subset"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalResult:
    """Test accuracies of fresh models trained on one training set.

    ``models`` holds the trained models when :func:`evaluate_set` was asked to keep them
    (``keep_models=True``; the audits attack the utility audit's models instead of training
    them again); it is not part of :meth:`to_dict`.
    """

    model: str
    accuracies: list[float]
    epochs: int
    train_size: int
    seconds: float
    models: tuple[nn.Module, ...] = field(default=(), repr=False, compare=False)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracies)

    @property
    def std(self) -> float:
        return statistics.pstdev(self.accuracies) if len(self.accuracies) > 1 else 0.0

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "models"}
        return {**out, "accuracies": list(self.accuracies), "mean": self.mean, "std": self.std}

    def __str__(self) -> str:
        return f"{100 * self.mean:.1f} ± {100 * self.std:.1f} % ({self.model}, {len(self.accuracies)} models)"


def _check(images: Tensor, labels: Tensor) -> None:
    if images.ndim != 4 or labels.ndim != 1 or images.shape[0] != labels.shape[0] or images.shape[0] == 0:
        raise DataError("training set must be non-empty images [N, C, H, W] with labels [N]")


def train_model(
    images: Tensor,
    labels: Tensor,
    *,
    num_classes: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    config: EvalConfig = EvalConfig(),
    seed: int = 0,
    device: str | torch.device = "cpu",
    model_factory: Callable[[int], nn.Module] | None = None,
    soft_labels: Tensor | None = None,
    adversarial: PGDRecipe | None = None,
) -> nn.Module:
    """Train one fresh model from scratch (seeded) and return it in eval mode.

    Args:
        images: ``[N, C, H, W]`` in [0, 1].
        labels: ``[N]``.
        num_classes, mean, std: dataset metadata (public normalisation).
        config: training protocol.
        seed: controls the model init, batch order and augmentation.
        device: torch device.
        model_factory: optional ``seed -> module`` overriding ``config.model``. Batches are
            processed in cache-sized chunks with gradient accumulation, which is exact only for
            per-sample layers (instance/group/no norm, as all securedc models); a factory with
            BatchNorm would see smaller normalisation batches.
        soft_labels: optional per-image probabilities ``[N, C]`` (e.g. the file's ``soft_labels``):
            the loss is the soft-target cross-entropy (KD) instead of the hard-label one.
        adversarial: optional :class:`~securedc.robust.PGDRecipe`: every (augmented) batch is
            replaced by its PGD examples against the model being trained (adversarial training).
    """
    _check(images, labels)
    device = torch.device(resolve_device(device))
    if soft_labels is not None:
        soft_labels = check_soft_labels(soft_labels, labels, num_classes=num_classes, where="train_model").to(device)
    if model_factory is not None:
        model = model_factory(seed)
    else:
        model = seeded_model(
            config.model,
            seed=seed,
            in_channels=images.shape[1],
            num_classes=num_classes,
            image_size=tuple(images.shape[2:]),
            mean=mean,
            std=std,
        )
    model = model.to(device)
    gen = torch.Generator().manual_seed(seed + 1)
    dsa = None
    if config.dsa not in ("", "none"):
        dsa = DSA(config.dsa, flip=images.shape[1] == 3)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[config.epochs // 2], gamma=0.1)
    x_all, y_all = images.to(device).float(), labels.to(device)
    n = x_all.shape[0]
    chunk = auto_chunk(images.shape[1:], device=device)
    model.train()
    for _ in range(config.epochs):
        order = torch.randperm(n, generator=gen).to(device)
        for start in range(0, n, config.batch_size):
            idx = order[start : start + config.batch_size]
            x, y = x_all[idx], y_all[idx]
            t = soft_labels[idx] if soft_labels is not None else y
            if dsa is not None:
                params = dsa.sample(x.shape[0], generator=gen)
                x = dsa(x, params, torch.arange(x.shape[0], device=device))
            if adversarial is not None:
                x = adversarial.perturb(model, x, y, seed=int(torch.randint(0, 2**62, (1,), generator=gen)))
                model.train()
            # gradient accumulation over cache-sized chunks: the same gradient as one
            # batch (per-sample norms, mean loss) but ~1.7x faster on CPUs
            opt.zero_grad(set_to_none=True)
            for xc, tc in zip(x.split(chunk), t.split(chunk)):
                out = model(xc)
                loss = soft_label_loss(out, tc, reduction="sum") if soft_labels is not None else F.cross_entropy(out, tc, reduction="sum")
                (loss / x.shape[0]).backward()
            opt.step()
        sched.step()
    model.eval()
    return model


@torch.no_grad()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor, *, batch_size: int | None = None) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on ``images`` (``batch_size`` default: cache-sized)."""
    device = next(model.parameters()).device
    batch_size = batch_size or auto_chunk(images.shape[1:], device=device)
    correct = 0
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size].to(device)
        y = labels[start : start + batch_size].to(device)
        correct += int((model(x).argmax(1) == y).sum())
    return correct / max(1, images.shape[0])


def evaluate_set(
    images: Tensor,
    labels: Tensor,
    test_images: Tensor,
    test_labels: Tensor,
    *,
    num_classes: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    config: EvalConfig = EvalConfig(),
    seed: int = 0,
    device: str | torch.device = "cpu",
    soft_labels: Tensor | None = None,
    adversarial: PGDRecipe | None = None,
    keep_models: bool = False,
    workers: int | None = None,
) -> EvalResult:
    """Mean ± std test accuracy of ``config.models`` fresh models trained on (images, labels).

    Model ``k`` is :func:`train_model` with seed ``seed * 1000 + k``; ``keep_models`` returns
    the trained models in :attr:`EvalResult.models`. On a CPU the models train side by side
    (:mod:`securedc.concurrency`; ``workers=1``: one after the other).

    Example:
        >>> from securedc.data import load_dataset
        >>> b = load_dataset("digits")
        >>> x, y = random_subset(b.train_images, b.train_labels, ipc=5, seed=0)
        >>> r = evaluate_set(x, y, b.test_images, b.test_labels, num_classes=10, mean=b.mean,
        ...     std=b.std, config=EvalConfig(models=1, epochs=20))
        >>> r.mean > 0.3
        True
    """
    return evaluate_draws([(images, labels)], test_images, test_labels, num_classes=num_classes, mean=mean,
                          std=std, config=config, seed=seed, device=device, soft_labels=soft_labels,
                          adversarial=adversarial, keep_models=keep_models, workers=workers)


def evaluate_draws(
    draws: Sequence[tuple[Tensor, Tensor]],
    test_images: Tensor,
    test_labels: Tensor,
    *,
    num_classes: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    config: EvalConfig = EvalConfig(),
    seed: int = 0,
    device: str | torch.device = "cpu",
    soft_labels: Tensor | None = None,
    adversarial: PGDRecipe | None = None,
    keep_models: bool = False,
    workers: int | None = None,
) -> EvalResult:
    """:func:`evaluate_set` over a randomised training set: model ``k`` trains on ``draws[k mod len]``
    (seed ``seed * 1000 + k``), so the mean is the expected accuracy over draws.

    Raises:
        ConfigError: an invalid evaluation protocol.
        DataError: no training set given.
    """
    request = EvalRequest(draws=draws, config=config, soft_labels=soft_labels, adversarial=adversarial)
    return evaluate_requests([request], test_images, test_labels, num_classes=num_classes, mean=mean, std=std,
                             seed=seed, device=device, keep_models=keep_models, workers=workers)[0]


@dataclass(frozen=True)
class EvalRequest:
    """One training set for :func:`evaluate_requests`: ``config.models`` fresh models, model ``k``
    trained on ``draws[k mod len]`` (one draw for a fixed set)."""

    draws: Sequence[tuple[Tensor, Tensor]]
    config: EvalConfig = EvalConfig()
    soft_labels: Tensor | None = None
    adversarial: PGDRecipe | None = None


def evaluate_requests(
    requests: Sequence[EvalRequest],
    test_images: Tensor,
    test_labels: Tensor,
    *,
    num_classes: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    seed: int = 0,
    device: str | torch.device = "cpu",
    keep_models: bool = False,
    workers: int | None = None,
) -> list[EvalResult]:
    """Evaluate several training sets at once: every model of every request is an independent
    job, trained side by side on a CPU (:func:`securedc.concurrency.run_concurrently`; ``workers=1``
    trains them one after the other). Model ``k`` of a request has seed ``seed * 1000 + k``, as in
    :func:`evaluate_draws`. :attr:`EvalResult.seconds` is the training and testing time of the
    request's own models (summed; concurrent models overlap in wall time).

    Raises:
        ConfigError: an invalid evaluation protocol.
        DataError: a request without a training set.
    """
    from securedc.concurrency import run_concurrently

    for request in requests:
        problems = request.config.problems()
        if problems:
            raise ConfigError("; ".join(problems))
        if not request.draws:
            raise DataError("evaluation needs at least one training set")

    def job(request: EvalRequest, k: int) -> Callable[[], tuple[nn.Module, float, float]]:
        def run() -> tuple[nn.Module, float, float]:
            t0 = time.perf_counter()
            images, labels = request.draws[k % len(request.draws)]
            model = train_model(images, labels, num_classes=num_classes, mean=mean, std=std, config=request.config,
                                seed=seed * 1000 + k, device=device, soft_labels=request.soft_labels,
                                adversarial=request.adversarial)
            acc = accuracy(model, test_images, test_labels)
            logger.info("eval %s model %d/%d: %.4f", request.config.model, k + 1, request.config.models, acc)
            return model, acc, time.perf_counter() - t0

        return run

    keys = [(i, k) for i, r in enumerate(requests) for k in range(r.config.models)]
    outs = dict(zip(keys, run_concurrently([job(requests[i], k) for i, k in keys], device=device, workers=workers)))
    results = []
    for i, r in enumerate(requests):
        mine = [outs[(i, k)] for k in range(r.config.models)]
        results.append(EvalResult(
            model=r.config.model,
            accuracies=[acc for _, acc, _ in mine],
            epochs=r.config.epochs,
            train_size=int(r.draws[0][0].shape[0]),
            seconds=sum(sec for _, _, sec in mine),
            models=tuple(m for m, _, _ in mine) if keep_models else (),
        ))
    return results


def random_subset(images: Tensor, labels: Tensor, ipc: int, *, seed: int) -> tuple[Tensor, Tensor]:
    """``ipc`` random real images per class (the baseline a condensed set must beat).

    Raises:
        DataError: a class has fewer than ``ipc`` images.
    """
    gen = torch.Generator().manual_seed(seed)
    num_classes = int(labels.max()) + 1
    xs, ys = [], []
    for c in range(num_classes):
        idx = (labels == c).nonzero().flatten()
        if idx.numel() < ipc:
            raise DataError(f"class {c} has {idx.numel()} images, fewer than ipc={ipc}")
        pick = idx[torch.randperm(idx.numel(), generator=gen)[:ipc]]
        xs.append(images[pick])
        ys.append(labels[pick])
    return torch.cat(xs), torch.cat(ys)
