"""ε of a composition of sampled Gaussian mechanisms with opacus' RDP analysis, memoised per mechanism.

Opacus' ``RDPAccountant.get_epsilon`` recomputes the RDP curve of every ``(σ, q)`` in the history
at its 151 default orders on each call; for q < 1 the fractional orders are a pure-Python series
that takes ~0.1–0.5 s per curve on a CPU. A run logs ε ~50 times and a calibration evaluates
hundreds of candidate histories, so :func:`rdp_epsilon` keeps each ``(q, σ)``'s per-step curve
(a pure function of two public numbers) and composes exactly as opacus does — ``Σ steps · curve``,
then ``get_privacy_spent`` — giving bit-identical ε.

Example:
    >>> from opacus.accountants import RDPAccountant
    >>> acc = RDPAccountant(); acc.history = [(1.1, 0.01, 500), (4.0, 1.0, 1)]
    >>> rdp_epsilon([(1.1, 0.01, 500), (4.0, 1.0, 1)], delta=1e-5) == acc.get_epsilon(delta=1e-5)
    True

References:
    Mironov, Talwar & Zhang, "Rényi Differential Privacy of the Sampled Gaussian Mechanism", 2019, arXiv:1908.10530.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

__all__ = ["rdp_curve", "rdp_epsilon", "rdp_orders"]


def rdp_orders() -> list[float]:
    """Opacus' default RDP orders (``RDPAccountant.DEFAULT_ALPHAS``).

    Opacus is imported here, not at module import: its package import pulls in its optimisers,
    ``torch.distributed.tensor`` and ``scipy.stats`` (~4 s on a 2-core CPU), which a non-private
    run or a CLI ``--help`` never needs.
    """
    from opacus.accountants import RDPAccountant

    return RDPAccountant.DEFAULT_ALPHAS


@functools.lru_cache(maxsize=1024)
def _curve(sample_rate: float, noise_multiplier: float) -> np.ndarray:
    from opacus.accountants.analysis.rdp import compute_rdp

    out = np.asarray(compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier, steps=1,
                                 orders=rdp_orders()), dtype=np.float64)
    out.setflags(write=False)
    return out


def rdp_curve(*, sample_rate: float, noise_multiplier: float) -> np.ndarray:
    """Per-step RDP of the sampled Gaussian mechanism at opacus' default orders (read-only, memoised)."""
    return _curve(float(sample_rate), float(noise_multiplier))


def rdp_epsilon(history: Sequence[tuple[float, float, int]], *, delta: float, quiet: bool = False) -> float:
    """ε at ``delta`` of ``[(σ, q, steps), ...]``, exactly as a fresh opacus ``RDPAccountant``.

    Args:
        history: the composition.
        delta: the δ of the (ε, δ) conversion.
        quiet: skip opacus' warning that the optimum sits at the edge of the orders (the same
            conversion, ``min_α ρ(α) − (log δ + log α)/(α − 1) + log((α − 1)/α)``, computed here
            without it): for probes of a search whose extreme candidates are expected to be far off.
    """
    from opacus.accountants.analysis.rdp import get_privacy_spent

    if not history:
        return 0.0
    rdp = sum([rdp_curve(sample_rate=q, noise_multiplier=s) * int(n) for s, q, n in history])
    if quiet:
        orders = np.asarray(rdp_orders(), dtype=np.float64)
        with np.errstate(invalid="ignore"):
            eps = rdp - (np.log(delta) + np.log(orders)) / (orders - 1) + np.log((orders - 1) / orders)
        return float(np.inf) if np.isnan(eps).all() else float(np.nanmin(eps))
    eps, _ = get_privacy_spent(orders=rdp_orders(), rdp=rdp, delta=delta)
    return float(eps)
