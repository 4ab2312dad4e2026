"""The statistics bank: sample once, optimise many.

Phase 1 (the only access to real data) makes R *releases*. Release r is fixed by a public
seed ``s_r``: the seed determines the random network θ_r, the DSA parameters a_r and every
term's random features, and the release stores the per-class statistic of every active
term (exact in non-private mode; noisy through the Gaussian mechanism in DP mode).
Phase 2 optimises the synthetic set for K ≥ R steps; each step takes one release from the
bank, regenerates θ_r and a_r from ``s_r``, applies a_r to S and minimises the discrepancy
to the stored statistic. Post-processing is free, so the accountant sees R releases, never K.

Releases are interleaved with optimisation (release r is made at step ``⌊r·K/R⌋``) so that
``R = K`` is exactly distribution matching with a fresh network per step, and terms that
post-process S (an extractor trained on S) see the current S when a release is made. Steps
without a new release draw one of the releases made so far uniformly, from a public
generator keyed by the step.

Memory: ``R × C × Σ_k d_k`` float32 values (d_k = width of term k's statistic; ConvNet-3 on
28×28 images: d = 1 152 for the distribution term, so R = 1 000 releases of 10 classes take
46 MB). A bank larger than ``max_bytes`` is refused up front.

A bank is itself a releasable artefact: :meth:`StatisticsBank.save` writes it as safetensors
with a JSON manifest (its privacy section included), and a bank loaded from disk re-condenses
at another IPC with no further access to real data.

References:
    Zhao & Bilen, "Dataset Condensation with Distribution Matching", WACV 2023, arXiv:2110.04181.
    Zheng et al., "Dosser: decoupled optimisation and sampling for DP dataset condensation", ICCV 2025, arXiv:2508.01749.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save
from torch import Tensor

from securedc.config import REAL_DATA_INITS
from securedc.errors import ConfigError, DataError
from securedc.io import atomic_write_bytes

__all__ = ["StatisticsBank", "release_step", "statistics_signature", "check_bank_matches", "config_for_bank", "BANK_KIND"]

BANK_KIND = "securedc-statistics-bank"


def release_step(release: int, *, releases: int, steps: int) -> int:
    """The optimisation step at which release ``release`` is made (``⌊r·K/R⌋``).

    Example:
        >>> [release_step(r, releases=3, steps=10) for r in range(3)]
        [0, 3, 6]
    """
    return (release * steps) // max(1, releases)


class StatisticsBank:
    """A growing store of R releases: public seeds and per-term class statistics.

    Args:
        capacity: R, the number of releases the run will make.
        num_classes: C.
        max_bytes: refuse a bank larger than this (checked when the widths are known).

    Example:
        >>> bank = StatisticsBank(capacity=2, num_classes=3)
        >>> bank.add(11, [torch.ones(3, 4)])
        0
        >>> len(bank), bank.seed(0), bank.statistics(0)[0].shape
        (1, 11, torch.Size([3, 4]))
    """

    def __init__(self, *, capacity: int, num_classes: int, max_bytes: int = 4 * 2**30) -> None:
        if capacity < 1:
            raise ConfigError(f"a statistics bank needs at least one release (got {capacity})")
        self.capacity = int(capacity)
        self.num_classes = int(num_classes)
        self.max_bytes = int(max_bytes)
        self.seeds: list[int] = []
        self._stats: list[Tensor] = []
        #: ``[C, *image_shape]`` DP class prototypes of the run's phase-0 release (initialise S), or None
        self.prototypes: Tensor | None = None
        #: ``[C, K, *image_shape]`` DP sub-class centres of the prototype rounds (initialise S), or None
        self.centres: Tensor | None = None
        #: ``[C]`` noise std per coordinate of the DP statistics (derived from released counts), or None
        self.noise_std: Tensor | None = None

    def __len__(self) -> int:
        return len(self.seeds)

    @property
    def full(self) -> bool:
        return len(self) >= self.capacity

    @property
    def widths(self) -> list[int]:
        return [int(s.shape[2]) for s in self._stats]

    def nbytes(self, widths: Sequence[int] | None = None) -> int:
        """Bytes of the full bank (R × C × Σ d_k float32)."""
        w = self.widths if widths is None else list(widths)
        return self.capacity * self.num_classes * sum(w) * 4

    def add(self, seed: int, stats: Sequence[Tensor]) -> int:
        """Store release ``len(self)`` (public ``seed``, one ``[C, d_k]`` statistic per term)."""
        if self.full:
            raise ConfigError(f"the statistics bank is full ({self.capacity} releases)")
        if not self._stats:
            widths = [int(s.shape[1]) for s in stats]
            if self.nbytes(widths) > self.max_bytes:
                raise ConfigError(
                    f"a bank of {self.capacity} releases x {self.num_classes} classes x {sum(widths)} floats needs "
                    f"{self.nbytes(widths) / 2**30:.2f} GiB (limit {self.max_bytes / 2**30:.2f} GiB); "
                    "lower --releases or raise --bank-memory"
                )
            self._stats = [
                torch.zeros(self.capacity, self.num_classes, w, dtype=torch.float32, device=s.device)
                for w, s in zip(widths, stats)
            ]
        if len(stats) != len(self._stats):
            raise DataError(f"release has {len(stats)} statistics, the bank holds {len(self._stats)} terms")
        r = len(self.seeds)
        for store, s in zip(self._stats, stats):
            store[r] = s.detach().to(store.device, torch.float32)
        self.seeds.append(int(seed))
        return r

    def released_images(self) -> Tensor | None:
        """The DP images of the run's phase 0, ``[n, *image_shape]``: the sub-class centres when the
        prototype rounds released them, else the class prototypes; ``None`` in a non-private run."""
        if self.centres is not None:
            return self.centres.flatten(0, 1)
        return self.prototypes

    def seed(self, release: int) -> int:
        return self.seeds[release]

    def statistics(self, release: int) -> list[Tensor]:
        """The stored ``[C, d_k]`` statistics of ``release``."""
        if not 0 <= release < len(self):
            raise IndexError(f"release {release} is not in the bank ({len(self)} made)")
        return [s[release] for s in self._stats]

    def to(self, device: torch.device | str) -> "StatisticsBank":
        self._stats = [s.to(device) for s in self._stats]
        return self

    # ------------------------------------------------------------------ files
    def tensors(self) -> dict[str, Tensor]:
        """The filled part of the bank as named CPU tensors."""
        n = len(self)
        out = {f"stat.{k}": s[:n].detach().cpu().contiguous() for k, s in enumerate(self._stats)}
        out["seeds"] = torch.tensor(self.seeds, dtype=torch.int64)
        for name in ("prototypes", "centres", "noise_std"):
            extra = getattr(self, name)
            if extra is not None:
                out[name] = extra.detach().cpu().float().contiguous()
        return out

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, Tensor], *, capacity: int, num_classes: int) -> "StatisticsBank":
        bank = cls(capacity=capacity, num_classes=num_classes, max_bytes=2**62)
        seeds = tensors["seeds"].tolist()
        stats = [tensors[f"stat.{k}"] for k in range(sum(1 for key in tensors if key.startswith("stat.")))]
        for r, seed in enumerate(seeds):
            bank.add(int(seed), [s[r] for s in stats])
        bank.prototypes, bank.noise_std = tensors.get("prototypes"), tensors.get("noise_std")
        bank.centres = tensors.get("centres")
        return bank

    def save(self, path: str | os.PathLike[str], manifest: Mapping[str, Any]) -> None:
        """Write the bank as safetensors with ``manifest`` (JSON) under the ``securedc_bank`` key (atomic)."""
        meta = dict(manifest, kind=BANK_KIND, releases=len(self), num_classes=self.num_classes, widths=self.widths,
                    prototypes=self.prototypes is not None)
        data = st_save(self.tensors(), metadata={"securedc_bank": json.dumps(meta, allow_nan=False)})
        atomic_write_bytes(Path(path), data)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> tuple["StatisticsBank", dict[str, Any]]:
        """Read a bank written by :meth:`save`; returns (bank, manifest).

        Raises:
            DataError: missing, corrupt or not a securedc bank.
        """
        path = Path(path)
        if not path.is_file():
            raise DataError(f"bank file {path} not found")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = json.loads((f.metadata() or {})["securedc_bank"])
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, KeyError, ValueError, OSError) as err:
            raise DataError(f"{path} is not a securedc statistics bank ({err}); give a file written by --save-bank") from None
        if meta.get("kind") != BANK_KIND or "seeds" not in tensors:
            raise DataError(f"{path} is not a securedc statistics bank; give a file written by --save-bank")
        n, c = int(meta["releases"]), int(meta["num_classes"])
        widths = [int(w) for w in meta["widths"]]
        shapes_ok = tensors["seeds"].shape == (n,) and all(
            tuple(tensors.get(f"stat.{k}", torch.empty(0)).shape) == (n, c, w) for k, w in enumerate(widths)
        )
        extras_ok = all(  # DP prototypes [C, *shape] and sub-class centres [C, K, *shape], when present
            t.dim() == dims and t.shape[0] == c and bool(torch.isfinite(t).all())
            for t, dims in ((tensors.get("prototypes"), 4), (tensors.get("centres"), 5)) if t is not None
        )
        if not shapes_ok or not extras_ok or n < 1:
            raise DataError(f"{path}: bank tensors do not match its manifest (corrupt file)")
        return cls.from_tensors(tensors, capacity=n, num_classes=c), meta


def statistics_signature(
    config: Any, *, image_shape: Sequence[int], num_classes: int, mean: Sequence[float], std: Sequence[float]
) -> dict[str, Any]:
    """What a bank's statistics depend on; a bank serves a run only if these agree.

    The IPC, the number of optimisation steps, the learning rate, the optimiser, the term
    weights and the master seed (release seeds are stored) are free.
    """
    from securedc.terms import build_terms

    cfg = config.to_dict()
    return {
        "model": cfg["model"],
        "discrepancy": cfg["discrepancy"],
        "discrepancy_kwargs": cfg["discrepancy_kwargs"],
        "dsa": cfg["dsa"],
        "flip": cfg["flip"],
        "terms": [t.name for t in build_terms(config)],
        "private": bool(config.privacy.private),
        "clip": cfg["privacy"]["clip"],
        "subspace": int(config.privacy.subspace),
        "adversarial": cfg["adversarial"] if config.adversarial.enabled else None,
        "image_shape": [int(v) for v in image_shape],
        "num_classes": int(num_classes),
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
    }


#: Signature fields added after the first banks were written, with the value an older bank implies.
SIGNATURE_DEFAULTS: Mapping[str, Any] = MappingProxyType({"subspace": 0})


def saved_signature(meta: Mapping[str, Any]) -> dict[str, Any]:
    """A loaded bank's signature, completed with :data:`SIGNATURE_DEFAULTS` for fields it predates."""
    return {**SIGNATURE_DEFAULTS, **(meta.get("signature") or {})}


def check_bank_matches(meta: Mapping[str, Any], signature: Mapping[str, Any], *, source: Any) -> None:
    """Raise :class:`DataError` naming every field where a loaded bank disagrees with the run."""
    saved = saved_signature(meta)
    differing = [k for k in signature if saved.get(k) != signature[k]]
    if differing:
        detail = ", ".join(f"{k}: bank {saved.get(k)!r} vs run {signature[k]!r}" for k in differing[:3])
        raise DataError(f"bank {source} does not match this run ({detail}); use the bank's settings")


def config_for_bank(config: Any, meta: Mapping[str, Any]) -> Any:
    """The run's configuration adjusted to a loaded bank: its privacy mode and subspace, and by
    default its DP class prototypes (or public noise when it has none) as initialisation.

    A DP bank makes the re-condensation use DP-mode terms (normalised features) and report the
    bank's privacy; initialisation from real images is impossible without the data.
    """
    privacy = meta.get("privacy") or {}
    epsilon = float(privacy.get("target_epsilon", math.inf)) if privacy.get("private") else math.inf
    init = ("prototype" if meta.get("prototypes") else "noise") if config.init == "auto" else config.init
    subspace = int(saved_signature(meta)["subspace"])
    if init in REAL_DATA_INITS:
        raise ConfigError("--from-bank cannot initialise from real images (the bank holds no images); use --init noise")
    return dataclasses.replace(
        config, init=init, privacy=dataclasses.replace(config.privacy, epsilon=epsilon, subspace=subspace), releases=None
    ).validate()
