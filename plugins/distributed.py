"""Distributed condensation on ``torch.distributed``: classes split across ranks.

In the mean-embedding family every class's synthetic images depend only on that
class's real data, and securedc draws every step's randomness per class
(:func:`securedc.privacy.mechanism.class_generator`) or from the shared per-step seed
(network, DSA parameters). A rank that condenses a subset of the classes therefore
computes exactly the rows a single process computes for those classes, and the union
of the ranks' results is **bit-identical** to a single-process run with the same seed
(on the same device type and thread-independent kernels; verified on CPU by
``tests/test_distributed.py``).

Privacy: one training example belongs to one class, so the per-class Gaussian
mechanisms of different ranks act on disjoint data and compose in parallel. Every rank
builds its mechanism from the *full* training set, so σ, q (the rule's, capped by batch_real) and δ are
the single-process values, and rank 0's accountant is the single-process accountant:
the manifest's privacy section equals a single-process run's exactly.

Launch::

    torchrun --standalone --nproc-per-node 2 -m securedc condense --dataset fashion-mnist --ipc 10

or from a user script started with ``torchrun``::

    from securedc.plugins.distributed import fit_distributed
    result = fit_distributed(config, bundle)      # CondenseResult on rank 0, None elsewhere

References:
    Zhao & Bilen, "Dataset Condensation with Distribution Matching", WACV 2023 (per-class
    objective that makes the class split exact).
    Dwork & Roth, "The Algorithmic Foundations of Differential Privacy", FnT-TCS 2014
    (parallel composition over disjoint data).
"""

from __future__ import annotations

import atexit
import datetime
import logging
import os
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.distributed as dist

from securedc.condenser import Condenser, CondenseResult, ProgressEvent
from securedc.config import CondenseConfig
from securedc.data import DatasetBundle
from securedc.errors import ConfigError, SecuredcError

__all__ = [
    "launched_distributed",
    "world_info",
    "split_classes",
    "separability_problems",
    "rank_checkpoint_path",
    "fit_distributed",
    "cleanup_rank_checkpoints",
    "describe_split",
]

logger = logging.getLogger(__name__)

EXIT_BARRIER_TIMEOUT_S = 60.0
"""How long a rank waits at interpreter exit for the others before destroying the group."""


def launched_distributed() -> bool:
    """True when started by ``torchrun`` (or another launcher) with ``WORLD_SIZE > 1``.

    Example:
        >>> launched_distributed() in (True, False)
        True
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def world_info() -> tuple[int, int, int]:
    """``(rank, world_size, local_world_size)`` of this process (``(0, 1, 1)`` when alone)."""
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    return rank, world, local_world


def split_classes(num_classes: int, world_size: int, rank: int) -> list[int]:
    """Classes owned by ``rank``: round-robin ``rank, rank + W, rank + 2W, …``.

    Every class costs the same per step (``batch_real`` real images, ``ipc`` synthetic
    ones), so round-robin balances the ranks to within one class.

    Example:
        >>> split_classes(10, 3, 0), split_classes(10, 3, 2)
        ([0, 3, 6, 9], [2, 5, 8])
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} is not within a world of size {world_size}")
    return list(range(rank, num_classes, world_size))


def separability_problems(config: CondenseConfig) -> list[str]:
    """Options that couple the classes, so a class split would change the result.

    Example:
        >>> separability_problems(CondenseConfig(learn_lr=True))[0].startswith("--learn-lr")
        True
    """
    out = []
    if config.learn_lr:
        out.append("--learn-lr adapts one learning rate from the gradient of all classes together")
    adv = config.adversarial
    if adv.enabled and adv.attack_network == "synthetic":
        out.append("--adv-network synthetic trains the attack network on the synthetic images of all classes")
    if adv.enabled and adv.weight > 0 and adv.mode == "robust-features" and adv.robust_extractor is None:
        out.append("--adv-eps trains the robust extractor on the synthetic images of all classes; give "
                   "--robust-extractor FILE or --adv-weight 0")
    return out


def rank_checkpoint_path(path: str | Path | None, rank: int, world_size: int) -> Path | None:
    """Per-rank checkpoint file: ``NAME.rankR-of-W.safetensors`` next to ``path``.

    Example:
        >>> rank_checkpoint_path("out/x.ckpt.safetensors", 1, 2).name
        'x.ckpt.rank1-of-2.safetensors'
    """
    if path is None:
        return None
    p = Path(path)
    stem = p.name[: -len(".safetensors")] if p.name.endswith(".safetensors") else p.name
    return p.with_name(f"{stem}.rank{rank}-of-{world_size}.safetensors")


def _default_threads(local_world_size: int) -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, local_world_size))


def _init_group(backend: str | None, timeout_s: float) -> tuple[bool, str]:
    """Initialise the default process group from the launcher's env (``env://``) if needed."""
    if dist.is_initialized():
        return False, dist.get_backend()
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ConfigError(
            f"distributed condensation needs the launcher variables {missing}; start with "
            "`torchrun --nproc-per-node N ...` or call torch.distributed.init_process_group first"
        )
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return True, backend


def fit_distributed(
    config: CondenseConfig,
    bundle: DatasetBundle,
    *,
    callback: Callable[[ProgressEvent], None] | None = None,
    checkpoint_path: str | Path | None = None,
    resume_from: str | Path | None = None,
    noise_seed: int | None = None,
    backend: str | None = None,
    num_threads: int | None = None,
    timeout_s: float = 1800.0,
) -> CondenseResult | None:
    """Condense ``bundle`` with the classes split across the ranks of a process group.

    Every rank must call this with the same ``config`` and the same ``bundle`` (each
    rank loads the data itself). Outside a distributed launch (``WORLD_SIZE`` unset or 1
    and no process group) it runs one :class:`~securedc.condenser.Condenser` in-process.

    Args:
        config: the run configuration (validated here).
        bundle: the full dataset; each rank builds its mechanism on the full training set
            so σ, q and δ equal the single-process values.
        callback: progress callback (e.g. the ``progress`` of :func:`securedc.release`, which runs
            this under ``torchrun``), called on rank 0 only; during the loop its ``loss``
            is rank 0's share (the sum over rank 0's classes). The returned
            ``CondenseResult.losses`` are the per-step sums over all ranks.
        checkpoint_path: base checkpoint path; each rank writes
            :func:`rank_checkpoint_path` (resume with the same world size).
        resume_from: base path given as ``checkpoint_path`` to an earlier run.
        backend: ``"gloo"`` / ``"nccl"``; default nccl when CUDA is available, else gloo.
            Ignored when a process group is already initialised.
        num_threads: intra-op threads per rank; default ``cores // local_world_size``.
            Set only when this call creates the process group or is given explicitly.
        noise_seed: DP only: the SECRET seed of Poisson sampling and noise
            (:class:`~securedc.privacy.GaussianMechanism`). ``None`` (default): rank 0 draws
            one from the OS CSPRNG and broadcasts it to the other ranks (in memory, over the
            process group's transport; it is never written to the manifest), so every
            rank draws the noise of its classes exactly as one process would. Give it only
            for reproducible tests, and never publish it.
        timeout_s: collective timeout.

    Returns:
        On rank 0 the full :class:`CondenseResult` (images in class order, rank 0's privacy
        section, which is the single-process one); ``None`` on the other ranks.

    Raises:
        ConfigError: options that couple classes (:func:`separability_problems`), or a
            missing launcher environment.
        SecuredcError: another rank failed (its error is re-raised on that rank).
    """
    config = config.validate()
    if not launched_distributed():
        condenser = Condenser(
            config, num_classes=bundle.num_classes, image_shape=bundle.image_shape, mean=bundle.mean, std=bundle.std
        )
        mechanism = condenser.make_mechanism(bundle.train_images, bundle.train_labels, noise_seed=noise_seed)
        return condenser.fit(mechanism, callback=callback, checkpoint_path=checkpoint_path, resume_from=resume_from)

    problems = separability_problems(config)
    if problems:
        raise ConfigError(
            "cannot split the classes across ranks: " + "; ".join(problems) + ". Run in one process or drop the option"
        )
    created, backend = _init_group(backend, timeout_s)
    rank, world, local_world = world_info()
    if created or num_threads is not None:
        torch.set_num_threads(num_threads or _default_threads(local_world))
    comm_device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    drawn = False
    if config.privacy.private and noise_seed is None:
        # one secret key for all ranks: per-class generators keyed by it reproduce one process
        noise_seed, drawn = _broadcast_key(secrets.randbits(128) if rank == 0 else 0, comm_device), True
    try:
        return _fit_rank(
            config, bundle, rank, world, comm_device, callback, checkpoint_path, resume_from, noise_seed, drawn
        )
    finally:
        if created:
            dist.barrier()
            # Keep the group for later calls in this process: re-initialising on the launcher's
            # store (same MASTER_PORT, stale rank keys) can deadlock in gloo's rendezvous.
            atexit.register(_destroy_group)


def _broadcast_key(key: int, device: torch.device) -> int:
    """Rank 0's 128-bit secret key on every rank: sent as four 32-bit limbs (int64 holds 63 bits)."""
    limbs = torch.tensor([(key >> (32 * i)) & 0xFFFFFFFF for i in range(4)], dtype=torch.int64, device=device)
    dist.broadcast(limbs, src=0)
    return sum(int(v) << (32 * i) for i, v in enumerate(limbs.tolist()))


def _destroy_group() -> None:
    """At interpreter exit: wait for every rank, then tear the group down.

    Without the barrier a rank that finishes first closes its gloo pairs while a
    slower rank is still tearing its own down, and the slower rank's transport
    thread aborts the process ("terminate called without an active exception").
    A peer that already died must not hang the exit, so gloo waits at most
    :data:`EXIT_BARRIER_TIMEOUT_S`.
    """
    if not dist.is_initialized():
        return
    try:
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=datetime.timedelta(seconds=EXIT_BARRIER_TIMEOUT_S))
        else:
            dist.barrier()
    except RuntimeError as err:  # a peer failed or left: tear down anyway
        logger.warning("exit barrier failed (%s); destroying the process group", err)
    dist.destroy_process_group()


def _fit_rank(
    config: CondenseConfig,
    bundle: DatasetBundle,
    rank: int,
    world: int,
    comm_device: torch.device,
    callback: Callable[[ProgressEvent], None] | None,
    checkpoint_path: str | Path | None,
    resume_from: str | Path | None,
    noise_seed: int | None,
    drawn: bool,
) -> CondenseResult | None:
    num_classes, ipc = bundle.num_classes, config.ipc
    mine = split_classes(num_classes, world, rank)
    logger.info("rank %d/%d condenses classes %s with %d threads", rank, world, mine, torch.get_num_threads())
    result: CondenseResult | None = None
    error: BaseException | None = None
    try:
        if mine:
            condenser = Condenser(
                config,
                num_classes=num_classes,
                image_shape=bundle.image_shape,
                mean=bundle.mean,
                std=bundle.std,
                classes=mine,
            )
            mechanism = condenser.make_mechanism(bundle.train_images, bundle.train_labels, noise_seed=noise_seed)
            if drawn and hasattr(mechanism, "streams"):
                mechanism.streams.given = False  # drawn from the OS CSPRNG (on rank 0), as in one process
            result = condenser.fit(
                mechanism,
                callback=callback if rank == 0 else None,
                checkpoint_path=rank_checkpoint_path(checkpoint_path, rank, world),
                resume_from=rank_checkpoint_path(resume_from, rank, world),
            )
    except Exception as err:  # reported to every rank below, then re-raised here
        error = err
    status = torch.tensor([0 if error is None else 1], dtype=torch.int64, device=comm_device)
    flags = [torch.zeros_like(status) for _ in range(world)]
    dist.all_gather(flags, status)
    if error is not None:
        raise error
    failed = [r for r, f in enumerate(flags) if int(f.item())]
    if failed:
        raise SecuredcError(f"distributed condensation failed on rank(s) {failed}; see their error messages")

    # gather images (padded to the largest share) and per-step losses on every rank
    per_rank = [len(split_classes(num_classes, world, r)) * ipc for r in range(world)]
    width = max(per_rank)
    pad = torch.zeros((width, *bundle.image_shape), dtype=torch.float32, device=comm_device)
    steps = config.iterations
    losses = torch.zeros(steps, dtype=torch.float64, device=comm_device)
    if result is not None:
        pad[: per_rank[rank]] = result.images.to(comm_device)
        losses[: len(result.losses)] = torch.tensor(result.losses, dtype=torch.float64)
    images_all = [torch.empty_like(pad) for _ in range(world)]
    losses_all = [torch.empty_like(losses) for _ in range(world)]
    dist.all_gather(images_all, pad)
    dist.all_gather(losses_all, losses)
    if rank != 0:
        return None
    assert result is not None  # rank 0 always owns class 0
    images = torch.empty((num_classes * ipc, *bundle.image_shape), dtype=torch.float32)
    for r in range(world):
        block = images_all[r][: per_rank[r]].cpu()
        for j, c in enumerate(split_classes(num_classes, world, r)):
            images[c * ipc : (c + 1) * ipc] = block[j * ipc : (j + 1) * ipc]
    total = torch.stack(losses_all).sum(0).cpu()
    return CondenseResult(
        images=images,
        labels=torch.arange(num_classes, dtype=torch.int64).repeat_interleave(ipc),
        steps_done=result.steps_done,
        losses=[float(v) for v in total[: len(result.losses)]],
        seconds=result.seconds,
        privacy=result.privacy,
        terms=result.terms,
        epsilon_history=result.epsilon_history,
        lr_img=result.lr_img,
    )


def cleanup_rank_checkpoints(path: str | Path, world_size: int) -> None:
    """Delete the per-rank checkpoint files of a finished run (CLI without ``--checkpoint-every``)."""
    for r in range(world_size):
        p = rank_checkpoint_path(path, r, world_size)
        if p is not None and p.exists():
            p.unlink()


def describe_split(num_classes: int, world_size: int) -> Sequence[list[int]]:
    """Class lists of all ranks (for logs and the manifest)."""
    return [split_classes(num_classes, world_size, r) for r in range(world_size)]
