"""Benchmark: 2-process vs 1-process condensation of Fashion-MNIST (IPC 10) on CPU.

Usage::

    python benchmarks/distributed_fmnist.py [--iterations 30] [--batch-real 64] [--nproc 2]

The driver launches the same worker twice with ``torchrun --standalone``: once with one
process using all cores, once with ``--nproc`` processes using ``cores // nproc`` threads
each (classes split across ranks, gloo backend). It times the condensation loop (data
loading and process start excluded; reported separately as wall time), checks the two
synthetic sets are bit-identical, and writes ``benchmarks/results/distributed_fmnist.json``
and ``.md`` together with the machine load (``os.getloadavg``) before and after.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def worker(args: argparse.Namespace) -> None:
    import torch

    from securedc.config import CondenseConfig
    from securedc.data import load_dataset
    from securedc.plugins.distributed import fit_distributed, world_info

    rank, world, local_world = world_info()
    cores = len(os.sched_getaffinity(0))
    threads = max(1, cores // local_world)
    torch.set_num_threads(threads)
    bundle = load_dataset("fashion-mnist")
    config = CondenseConfig(ipc=args.ipc, iterations=args.iterations, batch_real=args.batch_real, seed=0)
    t0 = time.perf_counter()
    result = fit_distributed(config, bundle, num_threads=threads)
    seconds = time.perf_counter() - t0
    if result is not None:
        digest = hashlib.sha256(result.images.numpy().tobytes()).hexdigest()
        Path(args.out).write_text(json.dumps({
            "world_size": world, "threads_per_process": threads, "fit_seconds": seconds,
            "loop_seconds_rank0": result.seconds, "images_sha256": digest, "final_loss": result.losses[-1],
        }))


def launch(nproc: int, args: argparse.Namespace, out: Path) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           str(Path(__file__).resolve()), "--worker", "--out", str(out), "--ipc", str(args.ipc),
           "--iterations", str(args.iterations), "--batch-real", str(args.batch_real)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t0
    return {**json.loads(out.read_text()), "wall_seconds": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="")
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--batch-real", type=int, default=64)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--results", default=str(HERE / "results"))
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    tmp = Path(tempfile.mkdtemp())
    load_before = os.getloadavg()
    one = launch(1, args, tmp / "one.json")
    many = launch(args.nproc, args, tmp / "many.json")
    load_after = os.getloadavg()
    report = {
        "dataset": "fashion-mnist (60000 train)", "ipc": args.ipc, "iterations": args.iterations,
        "batch_real": args.batch_real, "cores": len(os.sched_getaffinity(0)),
        "single": one, "distributed": many,
        "speedup_fit": one["fit_seconds"] / many["fit_seconds"],
        "speedup_wall": one["wall_seconds"] / many["wall_seconds"],
        "bit_identical": one["images_sha256"] == many["images_sha256"],
        "loadavg_before": load_before, "loadavg_after": load_after,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    res = Path(args.results)
    res.mkdir(parents=True, exist_ok=True)
    (res / "distributed_fmnist.json").write_text(json.dumps(report, indent=2))
    md = [
        "# Distributed condensation: Fashion-MNIST IPC %d, %d iterations, batch_real %d" % (args.ipc, args.iterations, args.batch_real),
        "",
        "| processes | threads/process | condensation s | wall s (incl. start + data) |",
        "|---|---|---|---|",
        f"| 1 | {one['threads_per_process']} | {one['fit_seconds']:.1f} | {one['wall_seconds']:.1f} |",
        f"| {args.nproc} | {many['threads_per_process']} | {many['fit_seconds']:.1f} | {many['wall_seconds']:.1f} |",
        "",
        f"Speed-up (condensation): **{report['speedup_fit']:.2f}x**; wall: {report['speedup_wall']:.2f}x. "
        f"Bit-identical synthetic set: {report['bit_identical']}.",
        f"Load average (1/5/15 min) before {tuple(round(v, 2) for v in load_before)}, after "
        f"{tuple(round(v, 2) for v in load_after)} on a shared {report['cores']}-core machine; {report['date']}.",
    ]
    (res / "distributed_fmnist.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
