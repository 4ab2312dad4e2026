"""Secret random streams of the DP mechanism: one counter-based stream per (release, class).

The Poisson mask and the Gaussian noise of a release must (a) be unpredictable to anyone
who reads the manifest and (b) never repeat within a run: two releases sharing a stream
would share their noise, and the difference of their outputs would cancel it.
``torch.Generator.manual_seed`` is unsuitable for both: its CPU generator (mt19937) keeps
only 32 bits of the seed, so two of a run's (release, class) pairs collide with
probability about ``pairs² / 2³³`` and the whole secret has 32 bits of entropy.

Here the secret is a 128-bit key drawn from the operating system's CSPRNG
(:mod:`secrets`). The stream of release ``r`` and class ``c`` is NumPy's Philox-4x64
counter-based generator keyed by ``SeedSequence(key, spawn_key=(domain, r, c))``:
distinct (domain, release, class) tuples give statistically independent streams (the seed
sequence hashes the full-width integers), and nothing is ever re-seeded from a narrower
value.

Privacy:
    The key must stay secret (it is written only into private checkpoints, never into a
    release). Philox is not a cryptographic generator; see the privacy docs' "not covered".

References:
    Salmon et al., "Parallel Random Numbers: As Easy as 1, 2, 3", SC 2011 (Philox).
    O'Neill, "PCG: A Family of Simple Fast Space-Efficient Statistically Good Algorithms
    for Random Number Generation", 2014 (NumPy's SeedSequence).
"""

from __future__ import annotations

import secrets

import numpy as np
import torch
from torch import Tensor

__all__ = ["SecretStreams", "COUNTS_DOMAIN", "RELEASE_DOMAIN", "PROTOTYPES_DOMAIN", "CENTRES_DOMAIN"]

#: stream domain of the per-class count release (phase 0)
COUNTS_DOMAIN = 0
#: stream domain of the statistic releases (phase 1)
RELEASE_DOMAIN = 1
#: stream domain of the class-prototype release (phase 0 with prototypes)
PROTOTYPES_DOMAIN = 2
#: stream domain of the random directions that split a class mean into sub-class centres
CENTRES_DOMAIN = 3


class SecretStreams:
    """Factory of independent secret streams keyed by a wide secret key.

    Args:
        key: the secret key (an int below 2**128); ``None`` draws a fresh one from the OS
            CSPRNG. Give it only for reproducible tests or processes that must draw the same
            noise (class subsets of one run), and never publish it.

    Example:
        >>> s = SecretStreams(key=7)
        >>> bool((s.normal(1, 0, 3) == s.normal(1, 0, 3)).all()), bool((s.normal(1, 0, 3) == s.normal(2, 0, 3)).all())
        (True, False)
    """

    def __init__(self, key: int | None = None) -> None:
        self.given = key is not None
        self.key = int(key) if key is not None else secrets.randbits(128)
        if not 0 <= self.key < 2**128:
            raise ValueError("the secret key must be an integer in [0, 2**128)")

    def _generator(self, domain: int, release: int, cls: int, part: int) -> np.random.Generator:
        if release < 0 or cls < 0:
            raise ValueError(f"stream indices must be >= 0 (release={release}, class={cls})")
        seq = np.random.SeedSequence(self.key, spawn_key=(domain, release, cls, part))
        return np.random.Generator(np.random.Philox(seq))

    def uniform(self, release: int, cls: int, n: int, *, domain: int = RELEASE_DOMAIN) -> Tensor:
        """``n`` uniforms in [0, 1) of stream (release, class): the Poisson-sampling coins."""
        return torch.from_numpy(self._generator(domain, release, cls, 0).random(n))

    def normal(self, release: int, cls: int, n: int, *, domain: int = RELEASE_DOMAIN) -> Tensor:
        """``n`` standard normals (float64) of stream (release, class): the Gaussian noise."""
        return torch.from_numpy(self._generator(domain, release, cls, 1).standard_normal(n))

    def state_dict(self) -> dict[str, str]:
        """The SECRET key, for private checkpoints only."""
        return {"key": format(self.key, "032x")}

    @classmethod
    def from_state_dict(cls, state: dict[str, str]) -> "SecretStreams":
        return cls(key=int(state["key"], 16))
