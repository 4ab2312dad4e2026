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
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
import torchattacks
from torch import Tensor, nn

from securedc.discrepancy.base import discrepancy_for_run
from securedc.terms.base import StepContext, Term, register_term

if TYPE_CHECKING:
    from securedc.config import CondenseConfig

__all__ = ["AdversarialTerm", "KeyedPGD", "example_keys", "keyed_uniform_start", "pgd_perturb", "train_on_synthetic"]

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


class KeyedPGD(torchattacks.PGD):
    """torchattacks' L∞ PGD whose every example is attacked independently of the batch.

    Two changes to :class:`torchattacks.PGD` (same step rule, projection and clamping):

    * the random start of example i is :func:`keyed_uniform_start` — a function of that
      example and the public ``seed`` only (torchattacks draws one uniform tensor for
      the whole batch from the global RNG, so an example's start depends on its position
      among the others);
    * the ascent loss is the *sum* of per-example cross-entropies, so the gradient with
      respect to ``x_i`` is exactly ``∇ CE(f(x_i), y_i)``. (torchattacks uses the mean, whose
      gradient is that times ``1/n`` — the batch size; ``sign()`` removes a positive scale,
      so the steps agree up to float underflow, but the sum has no ``n`` at all.)

    The model must treat examples independently (eval mode, no BatchNorm in train mode):
    securedc's networks use instance/group normalisation. Untargeted mode only.

    Args:
        model: classifier returning logits for inputs in [0, 1].
        eps, alpha, steps: radius, step size, steps (torchattacks' meaning).
        seed: public key of the random starts.
        random_start: start from the keyed uniform point (``False``: from ``x``).
    """

    def __init__(self, model: nn.Module, *, eps: float, alpha: float, steps: int, seed: int,
                 random_start: bool = True) -> None:
        super().__init__(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start)
        self.seed = int(seed)
        self.supported_mode = ["default"]

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:  # noqa: D102 (torchattacks template method)
        images = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        adv = images.clone()
        if self.random_start:
            adv = (adv + keyed_uniform_start(images, eps=self.eps, seed=self.seed)).clamp(0, 1).detach()
        for _ in range(self.steps):
            adv.requires_grad_(True)
            cost = F.cross_entropy(self.get_logits(adv), labels, reduction="sum")
            (grad,) = torch.autograd.grad(cost, adv)
            adv = adv.detach() + self.alpha * grad.sign()
            delta = torch.clamp(adv - images, min=-self.eps, max=self.eps)
            adv = torch.clamp(images + delta, min=0, max=1).detach()
        return adv


def pgd_perturb(
    model: nn.Module, x: Tensor, y: Tensor, *, eps: float, alpha: float, steps: int, seed: int
) -> Tensor:
    """L∞ PGD with a per-example random start (:class:`KeyedPGD`), deterministic and global-RNG neutral.

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
    """Discrepancy between PGD-perturbed real data and the (optionally perturbed) synthetic set.

    Args:
        eps: L∞ radius in [0, 1] image units.
        steps: PGD steps.
        alpha: PGD step size.
        discrepancy: registered discrepancy (the same as the distribution term's).
        private: DP mode (normalised features, private-compatible discrepancies only).
        discrepancy_kwargs: forwarded to the discrepancy.
        perturb_synthetic: also perturb the synthetic images with PGD before matching
            (min-max form); the perturbation is a constant offset, gradients flow to S.
        attack_network: ``"random"`` attacks the step's random network (default: free,
            every step a new network, exactly reproducible on resume); ``"synthetic"``
            attacks a network trained on S only, retrained every ``retrain_every`` steps.
        retrain_every: steps between retrainings of the synthetic attack network.
        retrain_epochs: epochs of each retraining.
        weight, clip: see :class:`Term`.

    Privacy:
        Real examples enter only through :meth:`real_vectors` (one row each); the
        attack network never sees real data.

    Note:
        With ``attack_network="synthetic"`` a run resumed from a checkpoint taken between
        two retrainings retrains on the resumed S, so it is not bit-identical to the
        uninterrupted run (the random default is).

    References:
        Chen & Selvan, "A Discrepancy-Based Perspective on Dataset Condensation", 2025.
        Zhou et al., "ROME is Forged in Adversity: Robust Distilled Datasets via Information
        Bottleneck", ICML 2025.
        Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018.
    """

    def __init__(
        self,
        *,
        eps: float,
        steps: int = 10,
        alpha: float | None = None,
        discrepancy: str = "mean-embedding",
        private: bool = False,
        discrepancy_kwargs: dict[str, Any] | None = None,
        perturb_synthetic: bool = False,
        attack_network: str = "random",
        retrain_every: int = 50,
        retrain_epochs: int = 50,
        weight: float = 1.0,
        clip: float = 1.0,
    ) -> None:
        super().__init__(weight=weight, clip=clip)
        self.eps = float(eps)
        self.steps = int(steps)
        self.alpha = float(alpha) if alpha is not None else self.eps / 4
        self.perturb_synthetic = bool(perturb_synthetic)
        self.attack_network = attack_network
        self.retrain_every = int(retrain_every)
        self.retrain_epochs = int(retrain_epochs)
        self.discrepancy = discrepancy_for_run(discrepancy, private=private, **(discrepancy_kwargs or {}))
        self._seed = 0
        self._attack_net: nn.Module | None = None
        self._attack_net_round: int | None = None

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
            perturb_synthetic=adv.perturb_synthetic,
            attack_network=adv.attack_network,
            weight=adv.weight,
            clip=config.privacy.clip,
        )

    # ------------------------------------------------------------------ per step
    def prepare(self, ctx: StepContext) -> None:
        self._seed = int(torch.randint(0, 2**62, (1,), generator=ctx.generator))
        local = torch.Generator().manual_seed(self._seed)
        self.discrepancy.resample(feature_dim=ctx.network.feature_dim, generator=local)
        if self.attack_network == "synthetic":
            rnd = ctx.step // self.retrain_every
            if self._attack_net is None or self._attack_net_round != rnd:
                net = ctx.model_factory(self._seed % (2**31))
                self._attack_net = train_on_synthetic(
                    net, ctx.synthetic_images, ctx.synthetic_labels, epochs=self.retrain_epochs, seed=self._seed % (2**31)
                )
                self._attack_net_round = rnd

    def _attacker(self, ctx: StepContext) -> nn.Module:
        if self.attack_network == "synthetic" and self._attack_net is not None:
            return self._attack_net
        return ctx.network

    def _perturb(self, ctx: StepContext, x: Tensor, y: Tensor, *, offset: int) -> Tensor:
        return pgd_perturb(
            self._attacker(ctx), x, y, eps=self.eps, alpha=self.alpha, steps=self.steps, seed=(self._seed + offset) % (2**62)
        )

    def real_vectors(self, ctx: StepContext, x: Tensor, y: Tensor) -> Tensor:
        x_adv = self._perturb(ctx, x, y, offset=0)
        with torch.no_grad():
            return self.discrepancy.real_vectors(ctx.network.embed(x_adv)).detach()

    def reducer(self):
        return self.discrepancy.reduce

    def loss(self, ctx: StepContext, real_stat: Tensor, syn_x: Tensor, syn_y: Tensor) -> Tensor:
        if self.perturb_synthetic:
            delta = self._perturb(ctx, syn_x.detach(), syn_y, offset=1) - syn_x.detach()
            syn_x = syn_x + delta
        return self.discrepancy.loss(real_stat, ctx.network.embed(syn_x), syn_y)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "discrepancy": self.discrepancy.name,
            "eps": self.eps,
            "steps": self.steps,
            "alpha": self.alpha,
            "perturb_synthetic": self.perturb_synthetic,
            "attack_network": self.attack_network,
            "attack": "torchattacks.PGD (L-inf; per-example keyed random start, sum loss)",
            **(
                {"retrain_every": self.retrain_every, "retrain_epochs": self.retrain_epochs}
                if self.attack_network == "synthetic"
                else {}
            ),
        }
