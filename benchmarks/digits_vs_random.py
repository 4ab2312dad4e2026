"""Digits IPC 10: each privatisable discrepancy vs a random real subset of the same size, 3 seeds.

Protocol: ConvNet-3, DSA, real init, SGD lr 1 momentum 0.5, ``batch_real`` 128 per class, ITERATIONS
steps; evaluation = 2 fresh ConvNets x 300 epochs (reference protocol) on the 450-image test split;
the random baseline is a different seeded subset of 10 images per class (seed + 100).

Usage: python benchmarks/digits_vs_random.py DISCREPANCY ITERATIONS
Appends to benchmarks/results/digits_vs_random.json and rewrites the .md table.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch

import securedc
from securedc.config import EvalConfig
from securedc.data import load_dataset
from securedc.evaluate import evaluate_set, random_subset

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] in ("-h", "--help") or not sys.argv[2].isdigit():
        raise SystemExit("usage: python benchmarks/digits_vs_random.py DISCREPANCY ITERATIONS "
                         "(e.g. mean-embedding 300)")
    torch.set_num_threads(1)
    disc, iters = sys.argv[1], int(sys.argv[2])
    b = load_dataset("digits")
    ec = EvalConfig(models=2, epochs=300)
    seeds = []
    for seed in range(3):
        t = time.perf_counter()
        out = securedc.condense(b, ipc=10, iterations=iters, discrepancy=disc, seed=seed, batch_real=128, init="real")
        tc = time.perf_counter() - t
        e = evaluate_set(out.images, out.labels, b.test_images, b.test_labels, num_classes=10, mean=b.mean,
                         std=b.std, config=ec, seed=seed)
        rx, ry = random_subset(b.train_images, b.train_labels, 10, seed=seed + 100)
        r = evaluate_set(rx, ry, b.test_images, b.test_labels, num_classes=10, mean=b.mean, std=b.std, config=ec,
                         seed=seed)
        seeds.append({"seed": seed, "condensed": e.mean, "random": r.mean, "condense_seconds": tc})
        print(disc, seed, seeds[-1], flush=True)
    path = RESULTS / "digits_vs_random.json"
    rows = json.loads(path.read_text()) if path.exists() else []
    rows = [r for r in rows if not (r["discrepancy"] == disc and r["iterations"] == iters)]
    rows.append({"discrepancy": disc, "iterations": iters, "seeds": seeds,
                 "condensed_mean": statistics.mean(s["condensed"] for s in seeds),
                 "random_mean": statistics.mean(s["random"] for s in seeds)})
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(rows, indent=2))
    lines = ["| discrepancy | iterations | condensed (mean of 3 seeds) | random subset | per-seed condensed / random |",
             "|---|---|---|---|---|"]
    for r in rows:
        per = ", ".join(f"{100 * s['condensed']:.1f}/{100 * s['random']:.1f}" for s in r["seeds"])
        lines.append(f"| {r['discrepancy']} | {r['iterations']} | {100 * r['condensed_mean']:.1f} | "
                     f"{100 * r['random_mean']:.1f} | {per} |")
    (RESULTS / "digits_vs_random.md").write_text("# Digits IPC 10 vs random subset\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
