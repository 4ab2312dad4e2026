"""Privacy accounting with opacus' accountants; history kept as JSON (never pickle).

One ``step(noise_multiplier=σ, sample_rate=q)`` per condensation iteration; ε is
recomputable from (σ, q, T, δ) alone, which the manifest records.

References:
    Mironov, "Rényi Differential Privacy", CSF 2017, arXiv:1702.07476.
    Gopi, Lee & Wutschitz, "Numerical Composition of Differential Privacy" (PRV), NeurIPS 2021, arXiv:2106.02848.
"""

from __future__ import annotations

from typing import Any

from securedc.errors import PrivacyError
from securedc.privacy.calibration import epsilon_of

__all__ = ["PrivacyAccountant"]


class PrivacyAccountant:
    """Thin wrapper over an opacus accountant with JSON-serialisable history.

    Args:
        mechanism: ``"rdp"`` or ``"prv"``.
        delta: δ at which ε is reported.
    """

    def __init__(self, mechanism: str = "rdp", *, delta: float) -> None:
        self.mechanism = mechanism
        self.delta = float(delta)
        from opacus.accountants import create_accountant  # lazy: see securedc.privacy.rdp.rdp_orders

        self._acc = create_accountant(mechanism)

    def step(self, *, noise_multiplier: float, sample_rate: float) -> None:
        self._acc.step(noise_multiplier=noise_multiplier, sample_rate=sample_rate)

    @property
    def steps(self) -> int:
        return int(sum(n for _, _, n in self._acc.history))

    def epsilon(self) -> float:
        """ε spent so far at ``self.delta`` (0 before any step)."""
        # opacus' composition of the history (RDP: with memoised per-(σ, q) curves)
        return epsilon_of(self._acc.history, delta=self.delta, accountant=self.mechanism)

    def state_dict(self) -> dict[str, Any]:
        import opacus

        return {
            "mechanism": self.mechanism,
            "delta": self.delta,
            "history": [[float(s), float(q), int(n)] for s, q, n in self._acc.history],
            "opacus_version": opacus.__version__,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "PrivacyAccountant":
        try:
            acc = cls(state["mechanism"], delta=state["delta"])
            acc._acc.history = [(float(s), float(q), int(n)) for s, q, n in state["history"]]
        except (KeyError, TypeError, ValueError) as err:
            raise PrivacyError(f"invalid accountant state in checkpoint: {err}") from None
        return acc
