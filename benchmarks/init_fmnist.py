"""Initialisation of S at equal steps, non-private, Fashion-MNIST IPC 10: ``kmeans`` vs ``mix`` vs ``real``.

Each variant runs the product's defaults (``CondenseConfig()``: image lr ``std²`` in pixel units,
reuse 4) with ``init`` and ``batch_real`` set, for ``--steps`` optimisation steps, one after the
other on an otherwise idle machine (clock from before the ``Condenser`` is built: setup and init
count). ``--with-init`` also scores each initial set alone (step 0). Every set is scored by the
independent protocol: 3 fresh ConvNet-3 (GroupNorm) × 300 epochs, SGD lr 0.01 (momentum 0.9,
wd 5e-4, batch 256, lr × 0.1 at half), no augmentation, 10 000 test images, ``--eval-jobs``
processes of 1 thread.

Writes ``benchmarks/results/init_fmnist.{json,md}``; sets go to
``benchmarks/results/.init-snapshots/`` (not committed).

Example::

    python benchmarks/init_fmnist.py --inits kmeans mix real --steps 300 --with-init
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from securedc.condenser import Condenser
from securedc.config import CondenseConfig
from securedc.data import load_dataset

sys.path.insert(0, str(Path(__file__).parent))
from _scoring import PLAIN, PROTOCOL_MD, machine_line, score_rows, write_results  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SNAPS = RESULTS / ".init-snapshots"


def condense(init: str, *, steps: int, batch_real: int, with_init: bool) -> list[dict]:
    """Run the defaults from ``init`` for ``steps`` steps; save the final set (and the initial one)."""
    b = load_dataset("fashion-mnist")
    t0 = time.perf_counter()
    cfg = CondenseConfig(init=init, batch_real=batch_real, iterations=steps)
    c = Condenser(cfg, num_classes=10, image_shape=b.image_shape, mean=b.mean, std=b.std)
    res = c.fit(c.make_mechanism(b.train_images, b.train_labels))
    seconds = time.perf_counter() - t0
    rows = [{"init": init, "steps": steps, "seconds": seconds, "file": f"{init}-{steps}.safetensors"}]
    save_file({"images": res.images.contiguous(), "labels": res.labels.contiguous()}, str(SNAPS / rows[0]["file"]))
    if with_init:
        start = Condenser(CondenseConfig(init=init, batch_real=batch_real, iterations=0), num_classes=10,
                          image_shape=b.image_shape, mean=b.mean, std=b.std)
        x = start.fit(start.make_mechanism(b.train_images, b.train_labels)).images
        rows.insert(0, {"init": init, "steps": 0, "seconds": 0.0, "file": f"{init}-0.safetensors"})
        save_file({"images": x.contiguous(), "labels": res.labels.contiguous()}, str(SNAPS / rows[0]["file"]))
    print(f"{init}: {steps} steps in {seconds:.1f} s", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--inits", nargs="+", default=["kmeans", "mix", "real"])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-real", type=int, default=64)
    ap.add_argument("--with-init", action="store_true", help="also score each initial set alone")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-jobs", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    SNAPS.mkdir(parents=True, exist_ok=True)
    rows = [r for init in args.inits
            for r in condense(init, steps=args.steps, batch_real=args.batch_real, with_init=args.with_init)]
    score_rows(rows, SNAPS, jobs=args.eval_jobs)
    machine = machine_line(args.threads)
    command = (f"python benchmarks/init_fmnist.py --inits {' '.join(args.inits)} --steps {args.steps} "
               f"--batch-real {args.batch_real}" + (" --with-init" if args.with_init else ""))
    doc = {"machine": machine, "command": command, "protocol": {**PLAIN, "lr": 0.01, "test_images": 10000},
           "condense": f"CondenseConfig defaults, batch_real={args.batch_real}, init=variant", "rows": rows}
    lines = ["# Initialisation of S at equal steps, Fashion-MNIST IPC 10 (non-private)", "",
             f"Machine: {machine}. Condensation: `CondenseConfig` defaults with `init` and "
             f"`batch_real={args.batch_real}` set, one variant after the other (setup and init counted). "
             + PROTOCOL_MD + " Step 0 = the initial set alone.", "",
             "| init | steps | condensation s | test acc % |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['init']} | {r['steps']} | {r['seconds']:.1f} | "
                     f"{100 * r['acc_mean']:.2f} ± {100 * r['acc_std']:.2f} |")
    lines += ["", f"Command: `{command}`"]
    write_results(RESULTS / "init_fmnist", doc, lines)


if __name__ == "__main__":
    main()
