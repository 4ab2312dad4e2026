"""Non-private statistics bank at equal wall time: ``reuse`` m = 1 (DM) vs m > 1, Fashion-MNIST IPC 10.

Issue 13's target: non-private condensation with the bank (each release — a fresh network and a
real batch — serves ``reuse`` optimisation steps) must not lose accuracy against ``--reuse 1`` at
equal wall time, and the default ``reuse`` is the one with the best time to accuracy.

Each variant runs the product's defaults (``CondenseConfig()``: ``mix`` init, its default image
step) with ``batch_real`` and ``reuse`` set, for ``--budget`` wall seconds (clock from before the
``Condenser`` is built, so setup and init count; the set reached when the budget runs out is the
snapshot; saving excluded), one after the other on an otherwise idle machine. Then every snapshot is
scored by the independent protocol: 3 fresh ConvNet-3 (GroupNorm) × 300 epochs, SGD lr 0.01
(momentum 0.9, wd 5e-4, batch 256, lr × 0.1 at half), no augmentation, 10 000 test images,
``--eval-jobs`` processes of 1 thread.

With ``--seeds`` every variant runs once per condensation seed (the public seed of networks, DSA and
init) and the table adds the mean and spread over seeds: one draw per variant cannot separate
differences of a few tenths of a point.

Writes ``benchmarks/results/<--name>.{json,md}`` (default ``reuse_fmnist``); snapshots go to
``benchmarks/results/.reuse-snapshots/`` (not committed).

Example::

    python benchmarks/reuse_fmnist.py --reuse 1 2 4 --budget 300 --batch-real 64
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
SNAPS = RESULTS / ".reuse-snapshots"


class _BudgetSpent(Exception):
    """Raised by the progress callback when the wall-clock budget is used up."""


def condense_for(budget: float, *, reuse: int, batch_real: int, max_steps: int, seed: int = 0) -> dict:
    """Run the defaults with ``reuse`` until ``budget`` seconds have passed; save the set reached."""
    b = load_dataset("fashion-mnist")
    t0 = time.perf_counter()
    cfg = CondenseConfig(batch_real=batch_real, reuse=reuse, iterations=max_steps, seed=seed)
    c = Condenser(cfg, num_classes=10, image_shape=b.image_shape, mean=b.mean, std=b.std)
    path = SNAPS / f"reuse{reuse}_seed{seed}.safetensors"
    row: dict = {"reuse": reuse, "seed": seed, "file": path.name, "lr_img": c.lr_img, "init": cfg.resolved_init}

    def cb(ev) -> None:
        elapsed = time.perf_counter() - t0
        if elapsed >= budget or ev.step == max_steps:
            save_file({"images": ev.images.detach().cpu().contiguous(),
                       "labels": c.labels.detach().cpu().contiguous()}, str(path))
            row.update(steps=ev.step, seconds=elapsed, releases=ev.releases, s_per_step=elapsed / ev.step)
            raise _BudgetSpent

    try:
        c.fit(c.make_mechanism(b.train_images, b.train_labels), callback=cb)
    except _BudgetSpent:
        pass
    print(f"reuse {reuse} seed {seed}: {row['steps']} steps, {row['releases']} releases in {row['seconds']:.0f} s", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reuse", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--budget", type=float, default=300.0, help="wall seconds of condensation per variant")
    ap.add_argument("--batch-real", type=int, default=64)
    ap.add_argument("--max-steps", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-jobs", type=int, default=2)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="condensation seeds per variant")
    ap.add_argument("--name", default="reuse_fmnist", help="results file name under benchmarks/results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    SNAPS.mkdir(parents=True, exist_ok=True)
    rows = [condense_for(args.budget, reuse=m, batch_real=args.batch_real, max_steps=args.max_steps, seed=s)
            for s in args.seeds for m in args.reuse]
    score_rows(rows, SNAPS, jobs=args.eval_jobs)
    machine = machine_line(args.threads)
    command = ("python benchmarks/reuse_fmnist.py --reuse " + " ".join(map(str, args.reuse))
               + f" --budget {args.budget:g} --batch-real {args.batch_real}"
               + (f" --seeds {' '.join(map(str, args.seeds))}" if args.seeds != [0] else "")
               + (f" --name {args.name}" if args.name != "reuse_fmnist" else ""))
    doc = {"machine": machine, "command": command, "budget_seconds": args.budget,
           "protocol": {**PLAIN, "lr": 0.01, "test_images": 10000},
           "condense": f"CondenseConfig defaults, batch_real={args.batch_real}, reuse=m", "rows": rows}
    lines = [f"# Non-private statistics bank at equal wall time, Fashion-MNIST IPC 10 ({args.budget:g} s each)", "",
             f"Machine: {machine}. Condensation: `CondenseConfig` defaults (init {rows[0]['init']}, "
             f"image lr {rows[0]['lr_img']:.4g} in pixel units) with `batch_real={args.batch_real}` and `reuse=m`; "
             "each variant runs until its wall-clock budget is spent (setup counted), one after the other. "
             + PROTOCOL_MD, "",
             "| reuse m | seed | steps | releases (real passes) | s/step | test acc % |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['reuse']} | {r['seed']} | {r['steps']} | {r['releases']} | {r['s_per_step']:.3f} | "
                     f"{100 * r['acc_mean']:.2f} ± {100 * r['acc_std']:.2f} |")
    if len(args.seeds) > 1:
        lines += ["", "Over condensation seeds (mean of the per-seed means ± their std; paired difference to m = "
                  f"{args.reuse[0]} per seed):", "", "| reuse m | seeds | test acc % | paired difference, points |",
                  "|---|---|---|---|"]
        doc["summary"] = []
        for m in args.reuse:
            accs = torch.tensor([r["acc_mean"] for r in rows if r["reuse"] == m], dtype=torch.float64)
            base = torch.tensor([r["acc_mean"] for r in rows if r["reuse"] == args.reuse[0]], dtype=torch.float64)
            diff = 100 * (accs - base)
            doc["summary"].append({"reuse": m, "seeds": len(accs), "acc_mean": float(accs.mean()),
                                   "acc_std": float(accs.std()), "paired_diff_mean": float(diff.mean()),
                                   "paired_diff_std": float(diff.std())})
            lines.append(f"| {m} | {len(accs)} | {100 * accs.mean():.2f} ± {100 * accs.std():.2f} | "
                         f"{diff.mean():+.2f} ± {diff.std():.2f} |")
    lines += ["", f"Command: `{command}`"]
    write_results(RESULTS / args.name, doc, lines)


if __name__ == "__main__":
    main()
