"""The condensation loop over a statistics bank (sample once, optimise many).

Data flow::

    CondenseConfig → Condenser.make_mechanism(real)   # DP: calibration (privacy/calibration.py)
                   → Condenser.fit(mechanism)          # or fit(None, bank=StatisticsBank.load(...))
    per step k:   if release r is due (k = ⌊r·K/R⌋):  # the ONLY access to real data
                      context_r = (network, DSA params, term randomness) from seed s_r
                      bank[r] = mechanism.release(vector_fn of context_r)
                  else: r = a release made so far, drawn from a public generator keyed by k
                  loss = Σ_k w_k · term_k.loss(bank[r]_k, DSA_r(S)) ; optimiser step on S ; S ∈ [0, 1]

With R = K (``reuse = 1``) every step makes its own release and the loop is distribution
matching with a fresh random network per step; the non-private default ``reuse = 4`` makes a
release every fourth step (more accuracy per second: ``benchmarks/results/reuse_fmnist.md``).
The accountant takes one step per release, never per optimisation step (:mod:`securedc.bank`).
Every release derives its randomness from ``(seed, r)`` and every draw from the bank from
``(seed, k)``, so a run resumed from a checkpoint reproduces the uninterrupted run bit for bit on CPU.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from securedc.augment import DSA
from securedc.bank import StatisticsBank, check_bank_matches, statistics_signature
from securedc.batching import auto_chunk, resolve_precision
from securedc.config import CondenseConfig
from securedc.init import initial_images, initial_state
from securedc.manifest import NOT_COVERED, from_bank_section, privacy_section, write_bank
from securedc.privacy import Mechanism, PrivacyAccountant
from securedc.privacy.calibration import PrivacyPlan, noisy_bank_step_scale
from securedc.privacy.run import epsilon_due, new_accountant, run_mechanism
from securedc.releases import ReleaseSchedule, release_network, run_bank, step_seed
from securedc.results import CondenseResult, ProgressEvent
from securedc.run_checkpoint import RunCheckpoints, RunState, resume_run
from securedc.terms import StepContext, Term, build_terms

__all__ = ["Condenser", "CondenseResult", "ProgressEvent", "step_seed", "NOT_COVERED"]

logger = logging.getLogger(__name__)


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
        """A fresh network for one release, frozen, in eval mode (:func:`~securedc.releases.release_network`)."""
        return release_network(self.config, seed, image_shape=self.image_shape, num_classes=self.num_classes,
                               mean=self.mean, std=self.std, device=self.device)

    def make_mechanism(self, images: Tensor, labels: Tensor, *, noise_seed: int | None = None,
                       resume_from: str | Path | None = None) -> Mechanism:
        """Wrap the real training data in the configured mechanism (:func:`~securedc.privacy.run.run_mechanism`).

        In DP mode this calibrates the run (q, the count release unless counts are declared public,
        δ, σ). With ``resume_from`` the plan, the released counts and the secret key come from the
        checkpoint instead — no new access — and a configuration that would change (σ, q, R) is refused.

        Args:
            images, labels: the real training set (only the mechanism keeps them).
            noise_seed: DP only: SECRET key of sampling and noise; ``None`` draws 128 bits from
                the OS. Give it only for reproducible tests or class-subset processes.
            resume_from: the checkpoint a DP run will resume from.

        Raises:
            DataError: images of the wrong shape, or --ipc larger than a class (real/mix init).
            PrivacyError: a resume that would change the private mechanism.
        """
        mech, plan = run_mechanism(self.config, [t.clip for t in self.terms], images, labels,
                                   num_classes=self.num_classes, classes=self.classes, image_shape=self.image_shape,
                                   noise_seed=noise_seed, resume_from=resume_from,
                                   feature_dim=(self.statistic_width()  # the SNR rule of a new DP plan
                                                if self.config.privacy.private and resume_from is None else None))
        self.plan = plan if plan is not None else self.plan
        return mech

    def statistic_width(self) -> int:
        """Width d of the distribution term's DP statistic before phase 0: the network's feature width,
        or the requested subspace dimension (an upper bound: the subspace is capped at the number of
        prototype images − 1, known after phase 0)."""
        width = self.make_network(0).feature_dim
        return min(width, self.config.privacy.subspace) if self.config.privacy.subspace else width

    def _init_images(self, mechanism: Mechanism | None, bank: StatisticsBank, *, resuming: bool) -> Tensor:
        """Initial S (:func:`~securedc.init.initial_images`) from the mechanism or the bank's DP prototypes."""
        return initial_images(self.config, mechanism, bank.prototypes, centres=bank.centres, classes=self.classes,
                              image_shape=self.image_shape, resuming=resuming)

    # ------------------------------------------------------------------ loop
    def fit(self, mechanism: Mechanism | None, *, bank: StatisticsBank | None = None,
            bank_privacy: dict[str, Any] | None = None, callback: Callable[[ProgressEvent], None] | None = None,
            checkpoint_path: str | Path | None = None, resume_from: str | Path | None = None) -> CondenseResult:
        """Run the optimisation; the real data is reachable only through ``mechanism``.

        Args:
            mechanism: from :meth:`make_mechanism`; ``None`` with a full ``bank`` (re-condensation
                from a saved bank: no real data, no privacy cost).
            bank: a full bank loaded with :meth:`StatisticsBank.load` (with ``mechanism=None``).
            bank_privacy: the loaded bank's privacy section (copied into the result).
            callback: called with a :class:`ProgressEvent` after every step.
            checkpoint_path: where checkpoints go: on Ctrl-C, and with ``checkpoint_every`` > 0
                every that many steps and at the end.
            resume_from: a checkpoint written by a run with the same configuration.

        Returns:
            :class:`CondenseResult` (its ``bank`` holds the releases).
        """
        cfg = self.config
        bank = run_bank(bank, mechanism=mechanism, config=cfg, plan=self.plan, num_classes=self.num_classes,
                        sensitivity=self.sensitivity, device=self.device)
        init = self._init_images(mechanism, bank, resuming=resume_from is not None)
        lr = self.run_lr(bank_privacy)
        state = initial_state(cfg, init, bank, new_accountant(self.plan, mechanism), lr=lr, device=self.device)
        start = 0
        if resume_from is not None:
            start, plan = resume_run(resume_from, state, config=cfg, mechanism=mechanism,
                                     num_classes=self.num_classes, device=self.device)
            self.plan = plan if plan is not None else self.plan
        images, accountant, losses, eps_hist = state.images, state.accountant, state.losses, state.epsilon_history
        checkpoints = RunCheckpoints(checkpoint_path, state, cfg, self.plan, mechanism)
        labels = self.labels.to(self.device)
        t0 = time.perf_counter()
        step = start
        try:
            for step in range(start, cfg.iterations):
                release, ctx, params = self.schedule.next(step, mechanism, bank, images, labels, accountant)
                loss = self._optimise(ctx, params, bank.statistics(release), state, labels)
                losses.append(loss)
                if (eps := epsilon_due(accountant, step, steps=cfg.iterations)) is not None:
                    eps_hist.append((step + 1, eps))
                if callback is not None:
                    callback(ProgressEvent(step + 1, cfg.iterations, loss, eps, time.perf_counter() - t0,
                                           images.detach(), len(bank)))
                checkpoints.after_step(step + 1)
            step = cfg.iterations
        except KeyboardInterrupt:
            checkpoints.interrupted()
            raise
        checkpoints.at_end(step)
        if nonfinite := int(getattr(mechanism, "nonfinite_rows", 0)):
            logger.warning("%d real per-sample vectors were non-finite and zeroed before clipping", nonfinite)
        privacy = (from_bank_section(bank_privacy) if mechanism is None
                   else self.privacy_section(mechanism, accountant, bank))
        return CondenseResult(
            images=images.detach().cpu().clamp(0, 1), labels=self.labels.clone(), steps_done=step, losses=losses,
            seconds=time.perf_counter() - t0, privacy=privacy, terms=[t.describe() for t in self.terms],
            epsilon_history=eps_hist, bank=bank, nonfinite_rows=nonfinite, lr_img=lr,
        )

    def run_lr(self, bank_privacy: dict[str, Any] | None = None) -> float:
        """The image learning rate of the run: ``lr_img`` as given, else the default scaled down
        for a mostly-noise bank (:func:`~securedc.privacy.calibration.noisy_bank_step_scale`, from
        this run's plan or, re-condensing, the loaded bank's privacy section)."""
        if self.config.lr_img is not None:
            return self.lr_img
        privacy = self.plan.to_dict() if self.plan is not None else bank_privacy
        return self.lr_img * noisy_bank_step_scale(privacy)

    def _optimise(self, ctx: StepContext, params: Any, stats: list[Tensor], state: RunState, labels: Tensor) -> float:
        """One optimiser step on S (``state.images``) against the release's statistics ``stats``; returns the loss."""
        images = state.images
        syn = self.dsa(images, params, labels) if params is not None else images
        loss = sum(t.weight * t.loss(ctx, s, syn, labels) for t, s in zip(self.terms, stats))
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if state.lr is not None:
            state.lr.update(images)
        state.optimizer.step()
        with torch.no_grad():
            images.clamp_(0, 1)
        return float(loss.detach())

    # ------------------------------------------------------------------ banks on disk
    def signature(self) -> dict[str, Any]:
        """What this run's statistics depend on (:func:`~securedc.bank.statistics_signature`)."""
        return statistics_signature(self.config, image_shape=self.image_shape, num_classes=self.num_classes,
                                    mean=self.mean, std=self.std)

    def check_bank(self, meta: dict[str, Any], *, source: Any) -> None:
        """Refuse a loaded bank made with other statistics settings (DataError naming them)."""
        check_bank_matches(meta, self.signature(), source=source)

    def save_bank(self, path: str | Path, result: CondenseResult, *, dataset: str) -> None:
        """Write ``result.bank`` with its manifest (:func:`~securedc.manifest.write_bank`; in non-private
        mode it holds exact class statistics of the real data: as sensitive as the data)."""
        write_bank(path, result.bank, dataset=dataset, signature=self.signature(), privacy=result.privacy,
                   terms=result.terms)

    def privacy_section(self, mechanism: Mechanism, accountant: PrivacyAccountant | None,
                        bank: StatisticsBank | None = None) -> dict[str, Any]:
        """The manifest's privacy section (:func:`~securedc.manifest.privacy_section`)."""
        return privacy_section(self.plan, mechanism, accountant, bank=bank, iterations=self.config.iterations,
                               terms=self.terms)
