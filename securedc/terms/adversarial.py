"""The adversarial-discrepancy term: the discrepancy against PGD-perturbed real data.

Seed-paper view (Chen & Selvan 2025): robustness is the discrepancy measured
against the worst-case perturbed real distribution. Practical form (the
"robustness-aligned" term of ROME, Zhou et al. ICML 2025): every sampled (already
DSA-augmented) real example is perturbed inside the L∞ ball of radius ``eps`` with
torchattacks' PGD (random start) against an *attack network*; the per-sample
discrepancy vectors of the perturbed examples' features (step network) form the
real side, matched per class with the synthetic set's features.

Privacy: each perturbed example depends on one real example and a public network
(random, or trained on S only = post-processing), so its vector is one more clipped
part of the same per-sample vector; the Gaussian mechanism covers it (total
sensitivity ``sqrt(sum C_k^2)``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from securedc.discrepancy.base import discrepancy_for_run
from securedc.errors import ConfigError
from securedc.terms.base import StepContext, Term, register_term
from securedc.terms.distribution import public_center

if TYPE_CHECKING:
    from securedc.config import CondenseConfig
    from securedc.robust import PGDRecipe

__all__ = ["AdversarialTerm", "soft_labels_for", "synthetic_teacher", "example_keys", "keyed_uniform_start", "pgd_perturb", "train_on_synthetic"]

logger = logging.getLogger(__name__)


def example_keys(x: Tensor, *, seed: int) -> list[int]:
    """One 64-bit key per example: a keyed BLAKE2b hash of that example's float32 bytes.

    The key depends on the example's pixels and the public ``seed`` only, never on the
    other examples of the batch or on the example's position in it.

    Example:
        >>> x = torch.rand(3, 1, 2, 2, generator=torch.Generator().manual_seed(0))
        >>> example_keys(x, seed=1)[1:] == example_keys(x[1:], seed=1)
        True
    """
    rows = x.detach().to("cpu", torch.float32).contiguous().reshape(x.shape[0], -1).numpy()
    salt = int(seed % 2**64).to_bytes(8, "little")
    return [int.from_bytes(hashlib.blake2b(r.tobytes(), digest_size=8, key=salt).digest(), "little") for r in rows]


def keyed_uniform_start(x: Tensor, *, eps: float, seed: int) -> Tensor:
    """Per-example uniform offsets in ``[-eps, eps]``, row i drawn from a generator keyed by
    ``(seed, hash(x_i))`` (see :func:`example_keys`); same shape and device as ``x``."""
    out = torch.empty(x.shape, dtype=torch.float32)
    for i, key in enumerate(example_keys(x, seed=seed)):
        gen = torch.Generator().manual_seed(key % (2**63))
        out[i] = torch.rand(x.shape[1:], generator=gen) * (2 * eps) - eps
    return out.to(device=x.device, dtype=x.dtype)


def pgd_perturb(
    model: nn.Module, x: Tensor, y: Tensor, *, eps: float, alpha: float, steps: int, seed: int
) -> Tensor:
    """L∞ PGD with a per-example random start (:class:`~securedc.keyed_pgd.KeyedPGD`), deterministic and global-RNG neutral.

    Every output row is a function of that row's input, its label, the model and the
    public ``seed`` only — removing, adding or reordering other examples leaves it
    unchanged (what the Gaussian mechanism's sensitivity bound needs). It needs input
    gradients, so it runs under ``torch.enable_grad()`` even inside ``no_grad`` (the
    mechanism computes real vectors without autograd). Frozen parameters are fine.

    Args:
        model: classifier returning logits for inputs in [0, 1].
        x: ``[n, C, H, W]`` in [0, 1].
        y: labels ``[n]``.
        eps, alpha, steps: PGD radius, step size and number of steps.
        seed: public key of the random starts.

    Returns:
        Detached perturbed images in ``[x - eps, x + eps] ∩ [0, 1]``.

    References:
        Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018.
    """
    if x.shape[0] == 0:
        return x.detach()
    with torch.enable_grad():
        from securedc.keyed_pgd import KeyedPGD  # lazy: torchattacks' import pulls in scipy.stats (~1.6 s)

        attack = KeyedPGD(model, eps=eps, alpha=alpha, steps=steps, seed=seed)
        adv = attack(x.detach().clamp(0, 1), y)
    return adv.detach()


def train_on_synthetic(
    model: nn.Module, images: Tensor, labels: Tensor, *, epochs: int, seed: int, lr: float = 0.01
) -> nn.Module:
    """Briefly train ``model`` on the synthetic set only (post-processing: no privacy cost).

    Returns the model frozen and in eval mode.
    """
    for p in model.parameters():
        p.requires_grad_(True)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    x_all, y_all = images.detach(), labels
    n = x_all.shape[0]
    model.train()
    with torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(n, generator=gen).to(x_all.device)
            for start in range(0, n, 256):
                idx = order[start : start + 256]
                loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@register_term("adversarial")
class AdversarialTerm(Term):
    """The robustness term: match real data's features under a *robust* extractor (default), or
    the older variant that matches PGD-perturbed real data under the step network.

    Modes:
        ``"robust-features"`` (default). Per-class statistics of real features under a robust
        extractor ``g`` are matched with those of S: ``φ(x) = D(g.embed(x))`` (``D`` the
        discrepancy's per-sample map, e.g. the feature itself for DM), optionally of
        ``x`` PGD-perturbed against ``g`` (``perturb_real``). Robustness of models trained on
        a set comes from robust features (Ilyas et al. 2019; ROME's adversarially trained
        pool); random networks have none, so S copied non-robust, label-correlated
        directions. The extractor is either

        * trained on S only (``extractor_path=None``): fast adversarial training
          (:meth:`~securedc.robust.PGDRecipe.fast`, FGSM from a random start; as robust as PGD-5
          training on digits at a third of the cost, docs/audits.md) on the
          current synthetic set — post-processing, no privacy cost — alternating with
          condensation: a new *round* every ``retrain_every`` releases, warm-started from the
          previous round's weights; or
        * loaded from ``extractor_path`` (safetensors weights of the run's architecture,
          trained on data the user declares public; never pickle).

        ``"perturbed"``: every real example is PGD-perturbed against the step network (or a
        network trained on S, ``attack_network="synthetic"``) and matched under the step
        network. Measured: this *lowers* PGD accuracy of models trained on S (digits and
        FMNIST, ``benchmarks/results/robust_fmnist_perturbed.md``); kept only as the comparison variant.

    Statistics bank contract: :meth:`prepare` is a deterministic function of the context
    (``ctx.generator``, ``ctx.network``, ``ctx.release``/``ctx.step``) and of the term's state.
    The extractor used for release ``r`` is the one of round ``r // retrain_every``: each
    round's frozen weights are kept (keyed by round) so that an optimisation step that reuses
    an old release ``r`` matches S under the very extractor that produced ``r``'s real
    statistic. Memory: one state dict per round, ``ceil(R / retrain_every)`` of them for R
    releases (ConvNet-3 width 128 on 28×28: ≈ 1.3 MB each), at most ``max_rounds`` (older
    rounds beyond it raise a :class:`~securedc.errors.ConfigError` instead of being silently
    retrained); a loaded extractor is one state dict.

    Args:
        eps: L∞ radius in [0, 1] image units (extractor training and PGD).
        steps: PGD steps.
        alpha: PGD step size of the perturbed variant and ``perturb_real`` (default eps / 4).
        discrepancy: registered discrepancy (the same as the distribution term's).
        private: DP mode (normalised features, private-compatible discrepancies only).
        discrepancy_kwargs: forwarded to the discrepancy.
        mode: ``"robust-features"`` or ``"perturbed"``.
        extractor_path: public robust extractor weights (robust-features mode).
        extractor_epochs: adversarial-training epochs of the first round on S (later rounds: half).
        perturb_real: robust-features mode: also PGD-perturb real examples against the extractor.
        max_rounds: bound on the stored extractor rounds.
        perturb_synthetic: perturbed mode: also perturb S (min-max form).
        attack_network: perturbed mode: ``"random"`` or ``"synthetic"``.
        retrain_every: releases per extractor round (both modes' S-trained networks).
        retrain_epochs: perturbed mode: epochs of each standard retraining of the attack network.
        weight, clip: see :class:`Term`.

    Privacy:
        Real examples enter only through :meth:`real_vectors`, one row each, a function of that
        example, the public extractor/network and public seeds only (PGD starts are keyed per
        example, :class:`~securedc.keyed_pgd.KeyedPGD`); extractors and attack networks never see real data.

    References:
        Ilyas et al., "Adversarial Examples Are Not Bugs, They Are Features", NeurIPS 2019, arXiv:1905.02175.
        Zhou et al., "ROME is Forged in Adversity: Robust Distilled Datasets via Information
        Bottleneck", ICML 2025.
        Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018.
        Chen & Selvan, "A Discrepancy-Based Perspective on Dataset Condensation", 2025.
    """

    MODES = ("robust-features", "perturbed")

    def __init__(
        self,
        *,
        eps: float,
        steps: int = 10,
        alpha: float | None = None,
        discrepancy: str = "mean-embedding",
        private: bool = False,
        discrepancy_kwargs: dict[str, Any] | None = None,
        mode: str = "robust-features",
        extractor_path: str | None = None,
        extractor_epochs: int = 30,
        perturb_real: bool = False,
        max_rounds: int = 256,
        perturb_synthetic: bool = False,
        attack_network: str = "random",
        retrain_every: int = 50,
        retrain_epochs: int = 50,
        weight: float = 1.0,
        clip: float = 1.0,
    ) -> None:
        super().__init__(weight=weight, clip=clip)
        if mode not in self.MODES:
            raise ConfigError(f"adversarial mode must be one of {list(self.MODES)} (got {mode!r})")
        self.mode = mode
        self.eps = float(eps)
        self.steps = int(steps)
        self.alpha = float(alpha) if alpha is not None else self.eps / 4
        self.perturb_synthetic = bool(perturb_synthetic)
        self.attack_network = attack_network
        self.retrain_every = max(1, int(retrain_every))
        self.retrain_epochs = int(retrain_epochs)
        self.extractor_path = extractor_path
        self.extractor_epochs = int(extractor_epochs)
        self.perturb_real = bool(perturb_real)
        self.max_rounds = int(max_rounds)
        self.private = bool(private)
        self.discrepancy = discrepancy_for_run(discrepancy, private=private, **(discrepancy_kwargs or {}))
        self._seed = 0
        self._attack_net: nn.Module | None = None
        self._attack_net_round: int | None = None
        self._rounds: dict[int, dict[str, Tensor]] = {}  # round -> frozen extractor weights
        self._extractor: nn.Module | None = None
        self._extractor_round: int | None = None

    @classmethod
    def from_config(cls, config: "CondenseConfig") -> "AdversarialTerm | None":
        adv = config.adversarial
        if not adv.enabled or adv.weight <= 0:
            return None
        return cls(
            eps=adv.eps,
            steps=adv.steps,
            alpha=adv.step_size,
            discrepancy=config.discrepancy,
            private=config.privacy.private,
            discrepancy_kwargs=config.discrepancy_kwargs,
            mode=adv.mode,
            extractor_path=adv.robust_extractor,
            extractor_epochs=adv.extractor_epochs,
            retrain_every=adv.retrain_every,
            perturb_synthetic=adv.perturb_synthetic,
            attack_network=adv.attack_network,
            weight=adv.weight,
            clip=config.privacy.clip,
        )

    # ------------------------------------------------------------------ robust extractor
    def _recipe(self) -> "PGDRecipe":
        from securedc.robust import PGDRecipe

        return PGDRecipe.fast(self.eps)

    def _round_of(self, ctx: StepContext) -> int:
        return int(getattr(ctx, "release", ctx.step)) // self.retrain_every

    def _ensure_extractor(self, ctx: StepContext) -> None:
        from securedc.robust import train_robust_extractor

        if self.extractor_path is not None:
            self._loaded_extractor(ctx.model_factory)
            return
        rnd = self._round_of(ctx)
        if self._extractor is not None and self._extractor_round == rnd:
            return
        net = ctx.model_factory(rnd)
        if rnd in self._rounds:
            net.load_state_dict(self._rounds[rnd])
        else:
            if len(self._rounds) >= self.max_rounds:
                raise ConfigError(f"adversarial term: more than max_rounds={self.max_rounds} extractor rounds; "
                                  "raise retrain_every")
            earlier = [r for r in self._rounds if r < rnd]
            epochs = self.extractor_epochs
            if earlier:  # warm start: alternate condensation and adversarial training of the extractor
                net.load_state_dict(self._rounds[max(earlier)])
                epochs = max(1, epochs // 2)
            train_robust_extractor(net, ctx.synthetic_images, ctx.synthetic_labels, recipe=self._recipe(),
                                   epochs=epochs, seed=1_000_003 * (rnd + 1) + 17)
            self._rounds[rnd] = {k: v.detach().clone() for k, v in net.state_dict().items()}
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        self._extractor, self._extractor_round = net, rnd

    def _loaded_extractor(self, model_factory: "Callable[[int], nn.Module]") -> nn.Module:
        """The ``extractor_path`` network, read from its file once per term."""
        from securedc.robust import load_extractor

        if self._extractor is None:
            self._extractor = load_extractor(str(self.extractor_path), model_factory(0))
            self._extractor_round = 0
        return self._extractor

    def teacher(self, images: Tensor, labels: Tensor, model_factory: "Callable[[int], nn.Module]") -> nn.Module:
        """The robust teacher for soft labels: the loaded public extractor (the one the term matched
        under), or one more adversarial-training round on the final synthetic set, warm-started from
        the last round (post-processing of S)."""
        if self.extractor_path is not None:
            return self._loaded_extractor(model_factory)
        return synthetic_teacher(images, labels, model_factory, eps=self.eps, epochs=self.extractor_epochs,
                                 warm_start=self._rounds[max(self._rounds)] if self._rounds else None)

    # ------------------------------------------------------------------ per step
    def prepare(self, ctx: StepContext) -> None:
        self._seed = int(torch.randint(0, 2**62, (1,), generator=ctx.generator))
        local = torch.Generator().manual_seed(self._seed)
        if self.mode == "robust-features":
            self._ensure_extractor(ctx)
            assert self._extractor is not None
            self.discrepancy.resample(feature_dim=self._extractor.feature_dim, generator=local)
            self._center(ctx, local)
            return
        self.discrepancy.resample(feature_dim=ctx.network.feature_dim, generator=local)
        self._center(ctx, local)
        if self.attack_network == "synthetic":
            rnd = self._round_of(ctx)
            if self._attack_net is None or self._attack_net_round != rnd:
                net = ctx.model_factory(self._seed % (2**31))
                self._attack_net = train_on_synthetic(
                    net, ctx.synthetic_images, ctx.synthetic_labels, epochs=self.retrain_epochs, seed=self._seed % (2**31)
                )
                self._attack_net_round = rnd

    def _center(self, ctx: StepContext, generator: torch.Generator) -> None:
        """DP mode: centre features on the embedder's mean feature of public noise images before
        normalising (:func:`~securedc.terms.distribution.public_center`, the distribution term's
        centring). Data-free: a function of the release's public seed and network only."""
        if self.private:
            self.discrepancy.center = public_center(self._embedder(ctx), ctx.synthetic_images.shape[1:],
                                                    generator=generator)
        self.discrepancy.noise_std = ctx.noise_std  # signal weights of the DP statistic

    def _attacker(self, ctx: StepContext) -> nn.Module:
        if self.mode == "robust-features":
            assert self._extractor is not None
            return self._extractor
        if self.attack_network == "synthetic" and self._attack_net is not None:
            return self._attack_net
        return ctx.network

    def _embedder(self, ctx: StepContext) -> nn.Module:
        return self._attacker(ctx) if self.mode == "robust-features" else ctx.network

    def _perturb(self, ctx: StepContext, x: Tensor, y: Tensor, *, offset: int) -> Tensor:
        return pgd_perturb(
            self._attacker(ctx), x, y, eps=self.eps, alpha=self.alpha, steps=self.steps, seed=(self._seed + offset) % (2**62)
        )

    def real_vectors(self, ctx: StepContext, x: Tensor, y: Tensor) -> Tensor:
        if self.mode == "perturbed" or self.perturb_real:
            x = self._perturb(ctx, x, y, offset=0)
        with torch.no_grad():
            return self.discrepancy.real_vectors(self._embedder(ctx).embed(x)).detach()

    def reducer(self):
        return self.discrepancy.reduce

    def loss(self, ctx: StepContext, real_stat: Tensor, syn_x: Tensor, syn_y: Tensor) -> Tensor:
        if self.mode == "perturbed" and self.perturb_synthetic:
            delta = self._perturb(ctx, syn_x.detach(), syn_y, offset=1) - syn_x.detach()
            syn_x = syn_x + delta
        return self.discrepancy.loss(real_stat, ctx.embed(self._embedder(ctx), syn_x), syn_y)

    def _extractor_description(self) -> dict[str, Any]:
        """What the loaded extractor file says it was trained on (``securedc extractor``), and its name."""
        from pathlib import Path

        from securedc.public_extractor import FINGERPRINT_KEY, extractor_metadata

        meta = extractor_metadata(str(self.extractor_path))
        meta.pop(FINGERPRINT_KEY, None)  # no data fingerprint in a release (a mis-declared set would leak one)
        return {"name": Path(str(self.extractor_path)).name, **meta}

    def describe(self) -> dict[str, Any]:
        out = {
            **super().describe(),
            "mode": self.mode,
            "discrepancy": self.discrepancy.name,
            "eps": self.eps,
            "steps": self.steps,
            "alpha": self.alpha,
        }
        if self.mode == "robust-features":
            out.update({
                "extractor": "public file (declared public by the user)" if self.extractor_path else
                             "adversarially trained on the synthetic set only (post-processing)",
                **({"extractor_file": self._extractor_description()} if self.extractor_path else {}),
                "extractor_training": self._recipe().describe(),
                "retrain_every": self.retrain_every,
                "extractor_epochs": self.extractor_epochs,
                "perturb_real": self.perturb_real,
            })
            return out
        out.update({
            "perturb_synthetic": self.perturb_synthetic,
            "attack_network": self.attack_network,
            "attack": "torchattacks.PGD (L-inf; per-example keyed random start, sum loss)",
            **({"retrain_every": self.retrain_every, "retrain_epochs": self.retrain_epochs}
               if self.attack_network == "synthetic" else {}),
        })
        return out


def soft_labels_for(
    terms: "list[Term]", images: Tensor, labels: Tensor, *, model_factory: Callable[[int], nn.Module],
    temperature: float | None = None, teacher: nn.Module | None = None, extractor_path: str | None = None,
    eps: float | None = None, epochs: int = 30,
) -> Tensor | None:
    """Per-image soft labels ``[M, C]`` of the final synthetic set from a robust teacher (post-processing of S).

    The teacher is ``teacher`` when given (a non-private run's teacher trained on the real data),
    else that of the run's robust-features term (its declared-public extractor file, read once, or
    its last round trained on S), else the network in ``extractor_path`` (a declared-public file
    given with ``adv_weight=0``); otherwise one adversarially trained on S only at radius ``eps``
    for ``epochs`` epochs (fast AT, the term's recipe). ``None`` when there is none of these.
    """
    from securedc.robust import load_extractor, soft_labels_from

    if teacher is None:
        term = next((t for t in terms if isinstance(t, AdversarialTerm) and t.mode == "robust-features"), None)
        if term is not None:
            teacher = term.teacher(images, labels, model_factory)
        elif extractor_path is not None:
            teacher = load_extractor(extractor_path, model_factory(0))
        elif eps:
            teacher = synthetic_teacher(images, labels, model_factory, eps=eps, epochs=epochs)
        else:
            return None
    return soft_labels_from(teacher, images, temperature=temperature)


def synthetic_teacher(
    images: Tensor, labels: Tensor, model_factory: Callable[[int], nn.Module], *, eps: float, epochs: int,
    warm_start: dict[str, Tensor] | None = None,
) -> nn.Module:
    """A robust teacher adversarially trained on the synthetic set only (post-processing of S: free).

    Fast adversarial training (:meth:`~securedc.robust.PGDRecipe.fast` at ``eps``) for ``epochs``
    epochs, or — warm-started from ``warm_start`` weights (the term's last extractor round) — for
    half of them (at least one).
    """
    from securedc.robust import PGDRecipe, train_robust_extractor

    net = model_factory(10_007)
    if warm_start is not None:
        net.load_state_dict(warm_start)
        epochs = max(1, epochs // 2)
    return train_robust_extractor(net, images, labels, recipe=PGDRecipe.fast(eps), epochs=epochs, seed=99_991)
