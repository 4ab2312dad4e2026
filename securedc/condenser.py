"""The condensation loop over a statistics bank (sample once, optimise many).

Data flow::

    CondenseConfig → Condenser.make_mechanism(real)   # DP: calibration (privacy/calibration.py)
                   → Condenser.fit(mechanism)          # or fit(None, bank=StatisticsBank.load(...))
    per step k:   if release r is due (k = ⌊r·K/R⌋):  # the ONLY access to real data
                      context_r = (network, DSA params, term randomness) from seed s_r
                      bank[r] = mechanism.release(vector_fn of context_r)
                  else: r = a release made so far, drawn from a public generator keyed by k
                  loss = Σ_k w_k · term_k.loss(bank[r]_k, DSA_r(S)) ; optimiser step on S ; S ∈ [0, 1]

With R = K (the non-private default, ``reuse = 1``) every step makes its own release and the loop
is distribution matching with a fresh random network per step. The accountant takes one step
per release, never per optimisation step (:mod:`securedc.bank`). Every release derives its
randomness from ``(seed, r)`` and every draw from the bank from ``(seed, k)``, so a run resumed
from a checkpoint reproduces the uninterrupted run bit for bit on CPU.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from securedc.augment import DSA
from securedc.bank import StatisticsBank, check_bank_matches, statistics_signature
from securedc.batching import auto_chunk, resolve_precision
from securedc.checkpoint import load_checkpoint, optimizer_from_tensors, optimizer_to_tensors, save_checkpoint
from securedc.config import CondenseConfig
from securedc.errors import ConfigError, DataError, PrivacyError
from securedc.init import initial_images, make_optimizer
from securedc.lr_adapter import HypergradientLR
from securedc.models import seeded_model
from securedc.privacy import ExactMechanism, GaussianMechanism, Mechanism, PrivacyAccountant
from securedc.privacy.calibration import PrivacyPlan, plan_private_run
from securedc.privacy.streams import SecretStreams
from securedc.releases import ReleaseSchedule, step_seed
from securedc.terms import StepContext, Term, build_terms

__all__ = ["Condenser", "CondenseResult", "ProgressEvent", "step_seed", "NOT_COVERED"]

logger = logging.getLogger(__name__)

#: What the (ε, δ) guarantee does not cover; copied into every private manifest and report.
NOT_COVERED = [
    "the choice of hyper-parameters (epsilon, iterations, releases, learning rates, clip bounds, architecture): "
    "they must not be tuned on the private data; tuning runs are not accounted",
    "class counts when the user declares them public (--counts public); by default they are released "
    "through the accounted Gaussian mechanism",
    "the public normalisation constants and dataset metadata (image shape, class names)",
    "floating-point and pseudo-random-number side channels (Philox/torch generators are not cryptographically secure)",
    "the export decision: certification by the owner's audit (membership inference, canaries, utility and "
    "robustness on the real data) decides whether this file is released, and that decision depends on the "
    "private data outside the accountant, so the manifest's audit verdict (certified yes/no) is NOT covered "
    "by (epsilon, delta); audit results stay with the data owner",
    "the data owner's files beside the release (NAME.owner.json and the NAME.report/ directory): they hold the "
    "dataset fingerprint, the member split, exact example counts and every audit and evaluation number, all "
    "computed from the private data; they are not part of the release and must not be published",
]

@dataclass(frozen=True)
class ProgressEvent:
    """Sent to the progress callback after every step.

    Attributes:
        images: the current synthetic images (a detached view of the optimised tensor:
            copy it to keep a snapshot; never modify it), or ``None``.
        releases: releases in the bank so far.
    """

    step: int
    total: int
    loss: float
    epsilon_spent: float | None
    seconds: float
    images: Tensor | None = None
    releases: int = 0


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
    bank: StatisticsBank | None = None
    #: real examples whose per-sample vector was non-finite and zeroed (owner only, never released)
    nonfinite_rows: int = 0


class Condenser:
    """Optimises a synthetic set against a multi-term discrepancy objective over a statistics bank.

    Args:
        config: validated run configuration.
        num_classes: C.
        image_shape: ``(channels, height, width)``.
        mean, std: PUBLIC normalisation constants (inside the models).
        classes: condense only these classes (distributed runs split classes across
            ranks; every release's randomness is per class, so the union of the ranks'
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
        Zhao & Bilen, "Dataset Condensation with Distribution Matching", WACV 2023, arXiv:2110.04181.
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
        self.device = torch.device(getattr(config, "resolved_device", config.device))
        self.terms: list[Term] = build_terms(config)
        flip = config.flip if config.flip is not None else image_shape[0] == 3
        self.dsa = DSA(config.dsa, flip=flip) if config.dsa not in ("", "none") else None
        self.classes = sorted(set(classes)) if classes is not None else list(range(num_classes))
        self.labels = torch.tensor(self.classes, dtype=torch.int64).repeat_interleave(config.ipc)
        self.lr_img = config.resolved_lr_img(self.std)
        self.real_chunk = config.real_chunk or auto_chunk(self.image_shape, device=self.device)
        self.real_precision = resolve_precision(config.real_precision, self.device)
        self.plan: PrivacyPlan | None = None
        self.schedule = ReleaseSchedule(
            seed=config.seed, steps=config.iterations, terms=self.terms, dsa=self.dsa, make_network=self.make_network,
            num_classes=num_classes, private=config.privacy.private, real_precision=self.real_precision,
            real_chunk=self.real_chunk, device=self.device,
        )

    @property
    def sensitivity(self) -> float:
        """L2 sensitivity of one example's per-sample vector, ``sqrt(Σ C_k²)`` over the terms."""
        return math.sqrt(sum(t.clip**2 for t in self.terms))

    @property
    def delta(self) -> float | None:
        """δ of a private run (known after :meth:`make_mechanism`), else ``None``."""
        return self.plan.delta if self.plan is not None else None

    # ------------------------------------------------------------------ setup
    def make_network(self, seed: int) -> nn.Module:
        """A fresh network for one release, frozen, in eval mode."""
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

    def make_mechanism(
        self,
        images: Tensor,
        labels: Tensor,
        *,
        noise_seed: int | None = None,
        resume_from: str | Path | None = None,
    ) -> Mechanism:
        """Wrap the real training data in the mechanism the configuration asks for.

        In DP mode this calibrates the run (:func:`~securedc.privacy.calibration.plan_private_run`:
        q, the count release unless counts are declared public, δ, σ). With ``resume_from`` the
        plan, the released counts and the secret key come from the checkpoint instead — no new
        access — and a configuration that would change (σ, q, R) is refused.

        Args:
            images, labels: the real training set (only the mechanism keeps them).
            noise_seed: DP only: SECRET key of sampling and noise; ``None`` draws 128 bits from
                the OS. Give it only for reproducible tests or class-subset processes.
            resume_from: the checkpoint a DP run will resume from.

        Raises:
            DataError: images of the wrong shape, or --ipc larger than a class (real/mix init).
            PrivacyError: a resume that would change the private mechanism.
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
        if cfg.iterations < 1:
            raise PrivacyError("a private run needs --iterations >= 1")
        clips = [t.clip for t in self.terms]
        if resume_from is not None:
            gm = GaussianMechanism(images, labels, num_classes=self.num_classes, clip_bounds=clips, classes=self.classes)
            self._restore_private(load_checkpoint(resume_from)[1], gm, source=resume_from)
            return gm
        gm = GaussianMechanism(
            images, labels, num_classes=self.num_classes, clip_bounds=clips, classes=self.classes, noise_seed=noise_seed
        )
        self.plan = plan_private_run(cfg.privacy, gm, releases=cfg.resolved_releases)
        logger.info(
            "DP: epsilon=%g delta=%g q=%.4f R=%d sigma=%.4f counts=%s",
            self.plan.target_epsilon, self.plan.delta, self.plan.sample_rate, self.plan.releases,
            self.plan.noise_multiplier, self.plan.counts,
        )
        return gm

    def _restore_private(self, meta: dict[str, Any], mechanism: GaussianMechanism, *, source: Any) -> None:
        """Configure ``mechanism`` from a DP checkpoint: its plan, released counts and secret key."""
        if not meta.get("privacy_plan") or not meta.get("secret"):
            raise PrivacyError(f"{source} is not a checkpoint of a private run; cannot resume with --epsilon")
        plan = PrivacyPlan.from_dict(meta["privacy_plan"], estimated_counts=meta["secret"]["counts"])
        self._check_resumable(plan)
        mechanism.streams = SecretStreams.from_state_dict(meta["secret"])
        counts = torch.tensor(plan.estimated_counts, dtype=torch.float64)
        mechanism.configure(
            sample_rate=plan.sample_rate, noise_multiplier=plan.noise_multiplier, expected_counts=counts * plan.sample_rate
        )
        self.plan = plan

    def _check_resumable(self, plan: PrivacyPlan) -> None:
        """Refuse a DP resume whose configuration would change the private mechanism."""
        p = self.config.privacy
        wanted = {
            "releases": self.config.resolved_releases,
            "target_epsilon": p.epsilon,
            "accountant": p.accountant,
            "counts": p.counts,
            **({"delta": p.delta} if p.delta is not None else {}),
            **({"sample_rate": p.sample_rate} if p.sample_rate is not None else {}),
        }
        have = plan.to_dict()
        changed = [f"{k} {have[k]} -> {v}" for k, v in wanted.items() if have[k] != v]
        if changed:
            raise PrivacyError(
                "resuming would change the private mechanism (" + ", ".join(changed) + "); the checkpoint's "
                f"releases used sigma={plan.noise_multiplier:.4g}, q={plan.sample_rate:g}, R={plan.releases}: "
                "resume with the original --iterations/--releases/--epsilon"
            )

    def _init_images(self, mechanism: Mechanism | None, prototypes: Tensor | None, *, resuming: bool) -> Tensor:
        """Initial S (:func:`~securedc.init.initial_images`)."""
        return initial_images(self.config, mechanism, prototypes, classes=self.classes, image_shape=self.image_shape,
                              resuming=resuming)

    # ------------------------------------------------------------------ loop
    def fit(
        self,
        mechanism: Mechanism | None,
        *,
        bank: StatisticsBank | None = None,
        bank_privacy: dict[str, Any] | None = None,
        callback: Callable[[ProgressEvent], None] | None = None,
        checkpoint_path: str | Path | None = None,
        resume_from: str | Path | None = None,
    ) -> CondenseResult:
        """Run the optimisation; the real data is reachable only through ``mechanism``.

        Args:
            mechanism: from :meth:`make_mechanism`; ``None`` with a full ``bank`` (re-condensation
                from a saved bank: no real data, no privacy cost).
            bank: a full bank loaded with :meth:`StatisticsBank.load` (with ``mechanism=None``).
            bank_privacy: the loaded bank's privacy section (copied into the result).
            callback: called with a :class:`ProgressEvent` after every step.
            checkpoint_path: where checkpoints go (every ``checkpoint_every`` steps, at the
                end, and on Ctrl-C).
            resume_from: a checkpoint written by a run with the same configuration.

        Returns:
            :class:`CondenseResult` (its ``bank`` holds the releases).
        """
        cfg = self.config
        if mechanism is None:
            if bank is None or not bank.full:
                raise ConfigError("fit needs the real data's mechanism or a complete statistics bank")
        elif mechanism.private != cfg.privacy.private:
            raise PrivacyError("mechanism and configuration disagree about privacy")
        if mechanism is not None and bank is not None:
            raise ConfigError("give a mechanism or a saved bank, not both")
        accountant = self._new_accountant(mechanism)
        if bank is None:
            bank = StatisticsBank(
                capacity=self.plan.releases if self.plan is not None else cfg.resolved_releases,
                num_classes=self.num_classes,
                max_bytes=int(cfg.bank_memory_gb * 2**30),
            )
        if self.plan is not None and len(bank) == 0:
            bank.prototypes, bank.noise_std = self.plan.prototypes, self.plan.noise_std(self.sensitivity)
        bank.to(self.device)
        start, losses, eps_hist = 0, [], []
        images = self._init_images(mechanism, bank.prototypes, resuming=resume_from is not None).to(self.device)
        images.requires_grad_(True)
        optimizer = make_optimizer(cfg, images, lr=self.lr_img)
        lr = HypergradientLR(optimizer, base_lr=self.lr_img) if cfg.learn_lr else None
        if resume_from is not None:
            start, losses, eps_hist, accountant = self._resume(
                resume_from, images, optimizer, lr, bank, accountant, mechanism
            )
        labels = self.labels.to(self.device)
        t0 = time.perf_counter()
        state = (images, optimizer, lr, bank, losses, eps_hist)
        step = start
        try:
            for step in range(start, cfg.iterations):
                release, ctx, params = self.schedule.next(step, mechanism, bank, images, labels, accountant)
                loss = self._optimise(ctx, params, bank.statistics(release), images, labels, optimizer, lr)
                losses.append(loss)
                eps = accountant.epsilon() if accountant is not None and self._log_eps(step) else None
                if eps is not None:
                    eps_hist.append((step + 1, eps))
                if callback is not None:
                    callback(ProgressEvent(step + 1, cfg.iterations, loss, eps, time.perf_counter() - t0,
                                           images.detach(), len(bank)))
                if checkpoint_path and cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0:
                    self._save(checkpoint_path, step + 1, state, accountant, mechanism)
            step = cfg.iterations
        except KeyboardInterrupt:
            if checkpoint_path:
                self._save(checkpoint_path, len(losses), state, accountant, mechanism)
                logger.warning("interrupted at step %d; checkpoint saved to %s", len(losses), checkpoint_path)
            raise
        if checkpoint_path and cfg.checkpoint_every:
            self._save(checkpoint_path, step, state, accountant, mechanism)
        nonfinite = int(getattr(mechanism, "nonfinite_rows", 0))
        if nonfinite:
            logger.warning("%d real per-sample vectors were non-finite and zeroed before clipping", nonfinite)
        if mechanism is None:
            privacy = dict(bank_privacy or {"private": False, "epsilon": "inf"})
            privacy["from_bank"] = "re-condensed from a saved statistics bank: no further access to real data"
        else:
            privacy = self.privacy_section(mechanism, accountant, bank)
        return CondenseResult(
            images=images.detach().cpu().clamp(0, 1),
            labels=self.labels.clone(),
            steps_done=step,
            losses=losses,
            seconds=time.perf_counter() - t0,
            privacy=privacy,
            terms=[t.describe() for t in self.terms],
            epsilon_history=eps_hist,
            bank=bank,
            nonfinite_rows=nonfinite,
        )

    def _new_accountant(self, mechanism: Mechanism | None) -> PrivacyAccountant | None:
        if mechanism is None or not mechanism.private:
            return None
        assert self.plan is not None  # set by make_mechanism
        accountant = PrivacyAccountant(self.plan.accountant, delta=self.plan.delta)
        for sigma0 in (self.plan.count_noise_multiplier, self.plan.prototype_noise_multiplier):
            if sigma0 is not None:
                accountant.step(noise_multiplier=sigma0, sample_rate=1.0)
        return accountant

    def _log_eps(self, step: int) -> bool:
        total = self.config.iterations
        return step + 1 == total or (step + 1) % max(1, total // 50) == 0

    def _optimise(
        self,
        ctx: StepContext,
        params: Any,
        stats: list[Tensor],
        images: Tensor,
        labels: Tensor,
        optimizer: torch.optim.Optimizer,
        lr: HypergradientLR | None,
    ) -> float:
        syn = self.dsa(images, params, labels) if params is not None else images
        loss = sum(t.weight * t.loss(ctx, s, syn, labels) for t, s in zip(self.terms, stats))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if lr is not None:
            lr.update(images)
        optimizer.step()
        with torch.no_grad():
            images.clamp_(0, 1)
        return float(loss.detach())

    # ------------------------------------------------------------------ banks on disk
    def signature(self) -> dict[str, Any]:
        """What this run's statistics depend on (:func:`~securedc.bank.statistics_signature`)."""
        return statistics_signature(
            self.config, image_shape=self.image_shape, num_classes=self.num_classes, mean=self.mean, std=self.std
        )

    def check_bank(self, meta: dict[str, Any], *, source: Any) -> None:
        """Refuse a loaded bank made with other statistics settings (DataError naming them)."""
        check_bank_matches(meta, self.signature(), source=source)

    def save_bank(self, path: str | Path, result: CondenseResult, *, dataset: str) -> None:
        """Write ``result.bank`` with its manifest (signature + privacy section) to ``path``.

        Privacy:
            In DP mode the bank is a DP release (its statistics went through the accounted
            mechanism). In non-private mode it holds exact class statistics of the real data:
            as sensitive as the data itself.
        """
        if result.bank is None:
            raise ConfigError("this result holds no statistics bank")
        import securedc

        result.bank.save(
            path,
            {
                "dataset": dataset,
                "signature": self.signature(),
                "privacy": result.privacy,
                "terms": result.terms,
                "securedc_version": securedc.__version__,
                "statement": (
                    "differentially private statistics (see privacy)" if result.privacy.get("private")
                    else "NOT private: exact class statistics of the real data; keep it as private as the data"
                ),
            },
        )

    # ------------------------------------------------------------------ privacy
    def privacy_section(
        self, mechanism: Mechanism, accountant: PrivacyAccountant | None, bank: StatisticsBank | None = None
    ) -> dict[str, Any]:
        """The manifest's privacy section: ε recomputable from the recorded history and δ."""
        import opacus

        if accountant is None or self.plan is None:
            return {"private": False, "epsilon": "inf", "statement": "NOT differentially private"}
        assert isinstance(mechanism, GaussianMechanism)
        releases = len(bank) if bank is not None else self.plan.releases
        plan = self.plan.to_dict()
        return {
            "private": True,
            "epsilon": accountant.epsilon(),
            **plan,
            "steps": releases,
            "optimisation_steps": self.config.iterations,
            "clip_bounds": {t.name: t.clip for t in self.terms},
            "sensitivity": mechanism.sensitivity,
            "accountant_history": accountant.state_dict()["history"],
            "opacus_version": opacus.__version__,
            "mechanism": (
                "per release: Poisson-sampled Gaussian mechanism on per-class sums of clipped per-sample vectors"
                + ("; class counts declared public by the user" if plan["counts"] == "public"
                   else "; class counts released once through a Gaussian mechanism, composed")
                + ("; per-class mean images (prototypes, the initialisation of S) released once through a "
                   "full-batch Gaussian mechanism, composed" if plan.get("prototype_noise_multiplier") else "")
            ),
            "noise_seed": (
                "given by the caller (must be kept secret)"
                if mechanism.noise_seed_given
                else "secret: 128-bit key from the OS CSPRNG, not recorded here (checkpoints hold it: keep them private)"
            ),
            "not_covered": list(NOT_COVERED),
        }

    # ------------------------------------------------------------------ checkpoints
    def _save(
        self,
        path: str | Path,
        step: int,
        state: tuple[Tensor, torch.optim.Optimizer, HypergradientLR | None, StatisticsBank, list, list],
        accountant: PrivacyAccountant | None,
        mechanism: Mechanism | None,
    ) -> None:
        images, optimizer, lr, bank, losses, eps_hist = state
        opt_tensors, opt_record = optimizer_to_tensors(optimizer)
        lr_tensors, lr_record = lr.state() if lr is not None else ({}, None)
        tensors = {"images": images, **opt_tensors, **lr_tensors, **{f"bank.{k}": v for k, v in bank.tensors().items()}}
        secret = None
        if isinstance(mechanism, GaussianMechanism) and self.plan is not None:
            # SECRET: the stream key and the released counts; checkpoints stay with the data owner
            secret = {**mechanism.streams.state_dict(), "counts": list(self.plan.estimated_counts)}
        meta = {
            "step": step,
            "config": self.config.to_dict(),
            "optimizer": opt_record,
            "lr": lr_record,
            "losses": losses,
            "epsilon_history": eps_hist,
            "accountant": accountant.state_dict() if accountant is not None else None,
            "privacy_plan": self.plan.to_dict() if self.plan is not None else None,
            "secret": secret,
        }
        save_checkpoint(path, tensors, meta)

    def _resume(
        self,
        path: str | Path,
        images: Tensor,
        optimizer: torch.optim.Optimizer,
        lr: HypergradientLR | None,
        bank: StatisticsBank,
        accountant: PrivacyAccountant | None,
        mechanism: Mechanism | None,
    ) -> tuple[int, list[float], list[tuple[int, float]], PrivacyAccountant | None]:
        tensors, meta = load_checkpoint(path)
        saved, mine = meta["config"], self.config.to_dict()
        free = ("iterations", "checkpoint_every", "device", "real_chunk", "real_precision", "releases", "reuse",
                "bank_memory_gb")
        differing = [k for k in mine if k not in free and saved.get(k) != mine[k]]
        if differing:
            raise ConfigError(f"checkpoint {path} was made with a different configuration ({', '.join(differing)})")
        if (meta["accountant"] is None) != (accountant is None):
            raise PrivacyError("cannot resume a private run from a non-private checkpoint or the reverse")
        if isinstance(mechanism, GaussianMechanism):
            self._restore_private(meta, mechanism, source=path)
        if tensors["images"].shape != images.shape:
            raise DataError(f"checkpoint images have shape {tuple(tensors['images'].shape)}, expected {tuple(images.shape)}")
        with torch.no_grad():
            images.copy_(tensors["images"].to(images.device))
        optimizer_from_tensors(optimizer, tensors, meta["optimizer"], device=self.device)
        if lr is not None and meta.get("lr") is not None:
            lr.load(tensors, meta["lr"])
        saved_bank = {k.removeprefix("bank."): v for k, v in tensors.items() if k.startswith("bank.")}
        made = saved_bank["seeds"].numel()
        if made > bank.capacity:
            raise ConfigError(
                f"checkpoint {path} holds {made} releases but this run makes {bank.capacity}; "
                "resume with the original --iterations/--releases"
            )
        saved = StatisticsBank.from_tensors(saved_bank, capacity=max(1, made), num_classes=self.num_classes)
        for r in range(made):
            bank.add(saved.seed(r), [s.to(self.device) for s in saved.statistics(r)])
        bank.prototypes, bank.noise_std = saved.prototypes, saved.noise_std
        if accountant is not None:
            accountant = PrivacyAccountant.from_state_dict(meta["accountant"])
        eps_hist = [tuple(x) for x in meta["epsilon_history"]]
        logger.info("resumed from %s at step %d with %d releases", path, meta["step"], len(bank))
        return int(meta["step"]), list(meta["losses"]), eps_hist, accountant  # type: ignore[return-value]
