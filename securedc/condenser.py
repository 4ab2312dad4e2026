"""The condensation loop: sample → per-sample vectors → mechanism → losses on S → step.

Data flow (DESIGN.md §3)::

    CondenseConfig → Condenser.make_mechanism(real) → Condenser.fit(mechanism)
    per step t:  generator_t = f(seed, t);  network_t = fresh seeded model
                 DSA params (one set per class, shared by real and synthetic: siamese)
                 stats = mechanism.release(vector_fn)      # the ONLY access to real data
                 loss  = Σ_k w_k · term_k.loss(stats_k, DSA(S))
                 optimizer step on S, then S clamped to [0, 1]

Every step derives its randomness from ``(seed, t)`` alone, so a run resumed from a
checkpoint at step t reproduces the uninterrupted run bit for bit on CPU.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor, nn

from securedc.augment import DSA
from securedc.batching import auto_chunk, resolve_precision
from securedc.config import CondenseConfig, default_delta
from securedc.errors import ConfigError, DataError, PrivacyError
from securedc.io import atomic_write_bytes
from securedc.models import seeded_model
from securedc.privacy import ExactMechanism, GaussianMechanism, Mechanism, PrivacyAccountant, calibrate_noise
from securedc.privacy.mechanism import class_generator
from securedc.terms import StepContext, Term, build_terms

__all__ = ["Condenser", "CondenseResult", "ProgressEvent", "step_seed", "NOT_COVERED"]

logger = logging.getLogger(__name__)

#: What the (ε, δ) guarantee does not cover; copied into every private manifest and report.
NOT_COVERED = [
    "the number of training examples per class (class counts are treated as public)",
    "the choice of hyper-parameters (epsilon, iterations, learning rates, clip bounds, architecture): "
    "they must not be tuned on the private data; tuning runs are not accounted",
    "the public normalisation constants and dataset metadata (image shape, class names)",
    "floating-point and pseudo-random-number side channels (torch's generator is not cryptographically secure)",
    "data used by the audit (member/non-member splits and shadow runs) and the evaluation on the test set: "
    "audit results are for the data owner and are not part of the private release",
]


def step_seed(seed: int, step: int) -> int:
    """Seed of step ``step`` derived from the master seed (stable across versions).

    Example:
        >>> step_seed(0, 1) != step_seed(1, 0)
        True
    """
    return (seed * 1_000_003 + step * 7_919 + 12_345) % (2**63 - 1)


@dataclass(frozen=True)
class ProgressEvent:
    """Sent to the progress callback after every step.

    Attributes:
        images: the current synthetic images (a detached view of the optimised tensor:
            copy it to keep a snapshot; never modify it), or ``None``.
    """

    step: int
    total: int
    loss: float
    epsilon_spent: float | None
    seconds: float
    images: Tensor | None = None


@dataclass
class CondenseResult:
    """Output of :meth:`Condenser.fit`."""

    images: Tensor
    labels: Tensor
    steps_done: int
    losses: list[float]
    seconds: float
    privacy: dict[str, Any]
    terms: list[dict[str, Any]]
    interrupted: bool = False
    epsilon_history: list[tuple[int, float]] = field(default_factory=list)


class Condenser:
    """Optimises a synthetic set against a multi-term discrepancy objective.

    Args:
        config: validated run configuration.
        num_classes: C.
        image_shape: ``(channels, height, width)``.
        mean, std: PUBLIC normalisation constants (inside the models).
        classes: condense only these classes (distributed runs split classes across
            ranks; every step's randomness is per class, so the union of the ranks'
            results equals a single-process run).

    Raises:
        ConfigError, PrivacyError: inconsistent configuration.

    Example:
        >>> from securedc.data import load_dataset
        >>> b = load_dataset("digits")
        >>> cfg = CondenseConfig(ipc=1, iterations=2, batch_real=8)
        >>> c = Condenser(cfg, num_classes=10, image_shape=(1, 8, 8), mean=b.mean, std=b.std)
        >>> c.fit(c.make_mechanism(b.train_images, b.train_labels)).images.shape
        torch.Size([10, 1, 8, 8])

    References:
        Zhao & Bilen, "Dataset Condensation with Distribution Matching", WACV 2023.
        Chen & Selvan, "A Discrepancy-Based Perspective on Dataset Condensation", 2025.
    """

    def __init__(
        self,
        config: CondenseConfig,
        *,
        num_classes: int,
        image_shape: tuple[int, int, int],
        mean: tuple[float, ...],
        std: tuple[float, ...],
        classes: Sequence[int] | None = None,
    ) -> None:
        self.config = config.validate()
        self.num_classes = num_classes
        self.image_shape = tuple(image_shape)
        self.mean, self.std = tuple(mean), tuple(std)
        self.device = torch.device(config.device)
        self.terms: list[Term] = build_terms(config)
        flip = config.flip if config.flip is not None else image_shape[0] == 3
        self.dsa = DSA(config.dsa, flip=flip) if config.dsa not in ("", "none") else None
        self.classes = sorted(set(classes)) if classes is not None else list(range(num_classes))
        self.labels = torch.tensor(self.classes, dtype=torch.int64).repeat_interleave(config.ipc)
        self.lr_img = config.resolved_lr_img(self.std)
        self.real_chunk = config.real_chunk or auto_chunk(self.image_shape, device=self.device)
        self.real_precision = resolve_precision(config.real_precision, self.device)
        self._noise_multiplier: float | None = None
        self._sample_rate: float | None = None
        self._delta: float | None = None
        self._ckpt_noise_seed: int | None = None  # DP: the mechanism's secret seed, for checkpoints only

    @property
    def delta(self) -> float | None:
        """δ of a private run (known after :meth:`make_mechanism`), else ``None``."""
        return self._delta

    # ------------------------------------------------------------------ setup
    def make_network(self, seed: int) -> nn.Module:
        """A fresh network for one step, frozen, in eval mode."""
        net = seeded_model(
            self.config.model,
            seed=seed,
            in_channels=self.image_shape[0],
            num_classes=self.num_classes,
            image_size=self.image_shape[1:],
            mean=self.mean,
            std=self.std,
        ).to(self.device)
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        return net

    def make_mechanism(self, images: Tensor, labels: Tensor, *, noise_seed: int | None = None) -> Mechanism:
        """Wrap the real training data in the mechanism the configuration asks for.

        In DP mode this calibrates σ from (ε, δ, q, T) before the loop.

        Args:
            images, labels: the real training set (only the mechanism keeps them).
            noise_seed: DP only: SECRET seed of sampling and noise; ``None`` draws one from
                the OS (see :class:`~securedc.privacy.GaussianMechanism`). Give it only for
                reproducible tests or class-subset processes; never publish it.
        """
        if tuple(images.shape[1:]) != self.image_shape:
            raise DataError(f"real images have shape {tuple(images.shape[1:])}, expected {self.image_shape}")
        cfg = self.config
        if not cfg.privacy.private:
            mech: Mechanism = ExactMechanism(
                images, labels, num_classes=self.num_classes, batch_per_class=cfg.batch_real, classes=self.classes
            )
            counts = mech.class_counts
            if cfg.resolved_init in ("real", "mix") and int(counts.min()) < cfg.ipc:
                raise DataError(f"--ipc {cfg.ipc} is larger than the smallest class ({int(counts.min())} images)")
            return mech
        n = int(labels.shape[0])
        self._delta = cfg.privacy.delta if cfg.privacy.delta is not None else default_delta(n)
        if self._delta >= 1.0 / n:
            logger.warning("delta=%g is not below 1/N=%g: the guarantee is weak", self._delta, 1.0 / n)
        self._sample_rate = min(1.0, cfg.batch_real * self.num_classes / n)
        if cfg.iterations < 1:
            raise PrivacyError("a private run needs --iterations >= 1")
        self._noise_multiplier = calibrate_noise(
            target_epsilon=cfg.privacy.epsilon,
            target_delta=self._delta,
            sample_rate=self._sample_rate,
            steps=cfg.iterations,
            accountant=cfg.privacy.accountant,
        )
        logger.info(
            "DP: epsilon=%g delta=%g q=%.5f T=%d -> sigma=%.4f",
            cfg.privacy.epsilon, self._delta, self._sample_rate, cfg.iterations, self._noise_multiplier,
        )
        return GaussianMechanism(
            images,
            labels,
            num_classes=self.num_classes,
            sample_rate=self._sample_rate,
            noise_multiplier=self._noise_multiplier,
            clip_bounds=[t.clip for t in self.terms],
            classes=self.classes,
            noise_seed=noise_seed,
        )

    def _init_images(self, mechanism: Mechanism) -> Tensor:
        seed = step_seed(self.config.seed, -1)
        if self.config.resolved_init in ("real", "mix"):
            mix = self.config.init_mix if self.config.resolved_init == "mix" else 1
            return mechanism.real_init(self.config.ipc, seed=seed, mix=mix).float()
        shape = (self.config.ipc, *self.image_shape)
        noise = [torch.randn(shape, generator=class_generator(seed, c)) for c in self.classes]
        return (0.5 + 0.2 * torch.cat(noise)).clamp(0, 1)

    def _make_optimizer(self, images: Tensor) -> torch.optim.Optimizer:
        cfg = self.config
        if cfg.optimizer == "adam":
            return torch.optim.Adam([images], lr=self.lr_img)
        return torch.optim.SGD([images], lr=self.lr_img, momentum=cfg.momentum)

    # ------------------------------------------------------------------ loop
    def fit(
        self,
        mechanism: Mechanism,
        *,
        callback: Callable[[ProgressEvent], None] | None = None,
        checkpoint_path: str | Path | None = None,
        resume_from: str | Path | None = None,
    ) -> CondenseResult:
        """Run the optimisation; the real data is reachable only through ``mechanism``.

        Args:
            mechanism: from :meth:`make_mechanism`.
            callback: called with a :class:`ProgressEvent` after every step.
            checkpoint_path: where checkpoints go (every ``checkpoint_every`` steps, at the
                end, and on Ctrl-C).
            resume_from: a checkpoint written by a run with the same configuration.

        Returns:
            :class:`CondenseResult`; ``interrupted`` is never True here because
            ``KeyboardInterrupt`` is re-raised after the checkpoint is saved.
        """
        cfg = self.config
        if mechanism.private != cfg.privacy.private:
            raise PrivacyError("mechanism and configuration disagree about privacy")
        accountant = None
        if mechanism.private:
            assert self._delta is not None  # set by make_mechanism
            accountant = PrivacyAccountant(cfg.privacy.accountant, delta=self._delta)
        start, losses, eps_hist = 0, [], []
        images = self._init_images(mechanism).to(self.device)
        images.requires_grad_(True)
        optimizer = self._make_optimizer(images)
        hyper = {"lr": self.lr_img, "prev_grad": None}
        self._ckpt_noise_seed = getattr(mechanism, "noise_seed", None)
        if resume_from is not None:
            start, losses, eps_hist, accountant = self._load_checkpoint(
                resume_from, images, optimizer, hyper, accountant
            )
            if isinstance(mechanism, GaussianMechanism) and self._ckpt_noise_seed is not None:
                mechanism.noise_seed = self._ckpt_noise_seed  # continue the same secret noise stream
            if isinstance(mechanism, GaussianMechanism) and accountant is not None:
                self._check_projected_budget(accountant, mechanism, cfg.iterations - start)
        labels = self.labels.to(self.device)
        t0 = time.perf_counter()
        step = start
        try:
            for step in range(start, cfg.iterations):
                loss = self._step(step, images, labels, mechanism, optimizer, hyper)
                if accountant is not None:
                    accountant.step(noise_multiplier=mechanism.noise_multiplier, sample_rate=mechanism.sample_rate)
                losses.append(loss)
                eps = accountant.epsilon() if accountant is not None and self._log_eps(step) else None
                if eps is not None:
                    eps_hist.append((step + 1, eps))
                if callback is not None:
                    callback(
                        ProgressEvent(step + 1, cfg.iterations, loss, eps, time.perf_counter() - t0, images.detach())
                    )
                if checkpoint_path and cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0:
                    self._save_checkpoint(checkpoint_path, step + 1, images, optimizer, hyper, losses, eps_hist, accountant)
            step = cfg.iterations
        except KeyboardInterrupt:
            done = len(losses)
            if checkpoint_path:
                self._save_checkpoint(checkpoint_path, done, images, optimizer, hyper, losses, eps_hist, accountant)
                logger.warning("interrupted at step %d; checkpoint saved to %s", done, checkpoint_path)
            raise
        if checkpoint_path and cfg.checkpoint_every:
            self._save_checkpoint(checkpoint_path, step, images, optimizer, hyper, losses, eps_hist, accountant)
        return CondenseResult(
            images=images.detach().cpu().clamp(0, 1),
            labels=self.labels.clone(),
            steps_done=step,
            losses=losses,
            seconds=time.perf_counter() - t0,
            privacy=self.privacy_section(mechanism, accountant),
            terms=[t.describe() for t in self.terms],
            epsilon_history=eps_hist,
        )

    def _check_projected_budget(self, accountant: PrivacyAccountant, mechanism: GaussianMechanism, remaining: int) -> None:
        """Refuse a resume whose spent + remaining steps would exceed the target ε.

        σ was calibrated for this run's T; a checkpoint made with another T (or σ) has
        a history that, composed with the remaining steps, can overshoot the target.
        """
        projected = PrivacyAccountant.from_state_dict(accountant.state_dict())
        if remaining > 0:
            projected._acc.history.append((mechanism.noise_multiplier, mechanism.sample_rate, remaining))
        eps = projected.epsilon()
        target = self.config.privacy.epsilon
        if eps > target * 1.0001:
            raise PrivacyError(
                f"resuming would spend epsilon={eps:.4g} > target {target:g} (the checkpoint was made with "
                "different --iterations or noise); resume with the original --iterations"
            )

    def _log_eps(self, step: int) -> bool:
        total = self.config.iterations
        return step + 1 == total or (step + 1) % max(1, total // 50) == 0

    def _step(
        self,
        step: int,
        images: Tensor,
        labels: Tensor,
        mechanism: Mechanism,
        optimizer: torch.optim.Optimizer,
        hyper: dict[str, Any],
    ) -> float:
        seed = step_seed(self.config.seed, step)
        gen = torch.Generator().manual_seed(seed)
        net = self.make_network(seed)
        ctx = StepContext(
            step=step,
            network=net,
            generator=gen,
            num_classes=self.num_classes,
            private=mechanism.private,
            synthetic_images=images.detach(),
            synthetic_labels=labels,
            model_factory=self.make_network,
            real_precision=self.real_precision,
        )
        for term in self.terms:
            term.prepare(ctx)
        params = self.dsa.sample(self.num_classes, generator=gen) if self.dsa is not None else None

        def vector_fn(x: Tensor, y: Tensor) -> list[Tensor]:
            if params is not None:
                x = self.dsa(x, params, y)
            parts: list[list[Tensor]] = [[] for _ in self.terms]
            for xc, yc in zip(x.split(self.real_chunk), y.split(self.real_chunk)):
                for k, term in enumerate(self.terms):
                    parts[k].append(term.real_vectors(ctx, xc, yc))
            return [torch.cat(p) for p in parts]

        stats = mechanism.release(
            vector_fn, seed=seed, reducers=[t.reducer() for t in self.terms], device=self.device
        )
        syn = self.dsa(images, params, labels) if params is not None else images
        loss = sum(t.weight * t.loss(ctx, s, syn, labels) for t, s in zip(self.terms, stats))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.learn_lr:
            self._hypergradient(images, optimizer, hyper)
        optimizer.step()
        with torch.no_grad():
            images.clamp_(0, 1)
        return float(loss.detach())

    def _hypergradient(self, images: Tensor, optimizer: torch.optim.Optimizer, hyper: dict[str, Any]) -> None:
        """Multiplicative hypergradient descent on the image learning rate.

        References:
            Baydin et al., "Online Learning Rate Adaptation with Hypergradient Descent", ICLR 2018, arXiv:1703.04782.
        """
        grad = images.grad.detach().flatten().clone()
        prev = hyper["prev_grad"]
        if prev is not None:
            cos = torch.dot(grad, prev) / (grad.norm() * prev.norm() + 1e-12)
            lr0 = self.lr_img
            hyper["lr"] = float(min(max(hyper["lr"] * (1 + 0.02 * float(cos)), lr0 / 100), lr0 * 100))
        hyper["prev_grad"] = grad
        for group in optimizer.param_groups:
            group["lr"] = hyper["lr"]

    # ------------------------------------------------------------------ privacy
    def privacy_section(self, mechanism: Mechanism, accountant: PrivacyAccountant | None) -> dict[str, Any]:
        """The manifest's privacy section (recomputable from σ, q, T, δ)."""
        import opacus

        if accountant is None:
            return {"private": False, "epsilon": "inf", "statement": "NOT differentially private"}
        assert isinstance(mechanism, GaussianMechanism)
        return {
            "private": True,
            "epsilon": accountant.epsilon(),
            "target_epsilon": self.config.privacy.epsilon,
            "delta": accountant.delta,
            "noise_multiplier": mechanism.noise_multiplier,
            "sample_rate": mechanism.sample_rate,
            "steps": accountant.steps,
            "clip_bounds": {t.name: t.clip for t in self.terms},
            "sensitivity": mechanism.sensitivity,
            "accountant": accountant.mechanism,
            "accountant_history": accountant.state_dict()["history"],
            "opacus_version": opacus.__version__,
            "mechanism": "Poisson-sampled Gaussian mechanism on per-class sums of clipped per-sample vectors",
            "noise_seed": (
                "given by the caller (must be kept secret)"
                if mechanism.noise_seed_given
                else "secret: drawn from the OS CSPRNG, not recorded here (checkpoints hold it: keep them private)"
            ),
            "not_covered": list(NOT_COVERED),
        }

    # ------------------------------------------------------------------ checkpoints
    def _save_checkpoint(
        self,
        path: str | Path,
        step: int,
        images: Tensor,
        optimizer: torch.optim.Optimizer,
        hyper: dict[str, Any],
        losses: list[float],
        eps_hist: list[tuple[int, float]],
        accountant: PrivacyAccountant | None,
    ) -> None:
        tensors: dict[str, Tensor] = {"images": images.detach().cpu().contiguous()}
        opt_state = optimizer.state_dict()
        scalars: dict[str, Any] = {}
        for pid, state in opt_state["state"].items():
            for key, value in state.items():
                if isinstance(value, Tensor):
                    tensors[f"opt.{pid}.{key}"] = value.detach().cpu().contiguous()
                else:
                    scalars[f"{pid}.{key}"] = value
        if hyper["prev_grad"] is not None:
            tensors["hyper.prev_grad"] = hyper["prev_grad"].cpu().contiguous()
        meta = {
            "kind": "securedc-checkpoint",
            "step": step,
            "config": self.config.to_dict(),
            "optimizer_param_groups": opt_state["param_groups"],
            "optimizer_scalars": scalars,
            "lr": hyper["lr"],
            "losses": losses,
            "epsilon_history": eps_hist,
            "accountant": accountant.state_dict() if accountant is not None else None,
            # SECRET (DP): the mechanism's sampling/noise seed; checkpoints must stay private
            "noise_seed": str(self._ckpt_noise_seed) if accountant is not None else None,
        }
        data = st_save(tensors, metadata={"securedc_checkpoint": json.dumps(meta, allow_nan=False)})
        atomic_write_bytes(path, data)

    def _load_checkpoint(
        self,
        path: str | Path,
        images: Tensor,
        optimizer: torch.optim.Optimizer,
        hyper: dict[str, Any],
        accountant: PrivacyAccountant | None,
    ) -> tuple[int, list[float], list[tuple[int, float]], PrivacyAccountant | None]:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"checkpoint {path} not found")
        raw = path.read_bytes()
        try:
            tensors = st_load(raw)
            header_len = int.from_bytes(raw[:8], "little")
            header = json.loads(raw[8 : 8 + header_len])
            meta = json.loads(header["__metadata__"]["securedc_checkpoint"])
        except (SafetensorError, KeyError, ValueError, TypeError) as err:
            raise DataError(f"{path} is not a securedc checkpoint: {err}") from None
        saved = meta["config"]
        mine = self.config.to_dict()
        free = ("iterations", "checkpoint_every", "device", "real_chunk", "real_precision")  # no effect on the math
        differing = [k for k in mine if k not in free and saved.get(k) != mine[k]]
        if differing:
            raise ConfigError(f"checkpoint {path} was made with a different configuration ({', '.join(differing)})")
        if tensors["images"].shape != images.shape:
            raise DataError(f"checkpoint images have shape {tuple(tensors['images'].shape)}, expected {tuple(images.shape)}")
        with torch.no_grad():
            images.copy_(tensors["images"].to(images.device))
        state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("opt."):
                _, pid, name = key.split(".", 2)
                state.setdefault(int(pid), {})[name] = value.to(self.device)
        for key, value in meta["optimizer_scalars"].items():
            pid, name = key.split(".", 1)
            state.setdefault(int(pid), {})[name] = value
        optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer_param_groups"]})
        hyper["lr"] = meta["lr"]
        hyper["prev_grad"] = tensors.get("hyper.prev_grad")
        if meta["accountant"] is not None:
            accountant = PrivacyAccountant.from_state_dict(meta["accountant"])
        elif accountant is not None:
            raise PrivacyError("cannot resume a private run from a non-private checkpoint")
        eps_hist = [tuple(x) for x in meta["epsilon_history"]]
        if meta.get("noise_seed") is not None:
            self._ckpt_noise_seed = int(meta["noise_seed"])
        logger.info("resumed from %s at step %d", path, meta["step"])
        return int(meta["step"]), list(meta["losses"]), eps_hist, accountant  # type: ignore[return-value]
