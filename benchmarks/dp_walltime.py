"""Benchmark: wall time of a DP condensation against a non-private one with the same K steps.

The statistics bank runs the real side R times only (the releases) and optimises S for K steps
against stored statistics, so a private run should cost no more wall time than a non-private
one with the same K. This script times both with the product's defaults, one after the other
on the same machine, and counts the real images each run pushes through the network
(instrumented mechanism).

Protocol (fixed before looking at results):
    * data: ``--dataset`` through ``load_dataset`` (digits: 1 347 training images; Fashion-MNIST:
      60 000).
    * runs: ``CondenseConfig`` defaults with ``--iterations`` K and ``--batch-real``; the private run
      adds ``--epsilon`` (δ, q, σ, R and the prototypes from the product's rules). Setup (the
      privacy plan included) is inside the clock; data loading is not.
    * evaluation (``--eval-models`` > 0): the independent protocol — fresh ConvNet-3 (GroupNorm)
      × ``--eval-epochs``, SGD lr 0.01, no augmentation, real test set.

Run:
    python benchmarks/dp_walltime.py --dataset digits --iterations 300 --epsilon 8
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from securedc.condenser import Condenser
from securedc.config import CondenseConfig, EvalConfig, PrivacyConfig
from securedc.data import load_dataset
from securedc.evaluate import evaluate_set


def _run(bundle, *, epsilon: float, args: argparse.Namespace) -> dict:
    privacy = PrivacyConfig(epsilon=epsilon) if epsilon != float("inf") else PrivacyConfig()
    cfg = CondenseConfig(iterations=args.iterations, batch_real=args.batch_real, device=args.device, privacy=privacy,
                         seed=args.seed).validate()
    seen = [0]
    t0 = time.perf_counter()
    c = Condenser(cfg, num_classes=bundle.num_classes, image_shape=bundle.image_shape, mean=bundle.mean, std=bundle.std)
    mech = c.make_mechanism(bundle.train_images, bundle.train_labels)
    release = mech.release

    def counted(vector_fn, **kwargs):  # the real images of every release, whatever the mechanism
        def vf(x, y):
            seen[0] += int(x.shape[0])
            return vector_fn(x, y)

        return release(vf, **kwargs)

    mech.release = counted
    res = c.fit(mech)
    seconds = time.perf_counter() - t0
    row = {"mode": "non-private" if epsilon == float("inf") else f"DP ε = {epsilon:g}",
           "iterations": args.iterations, "releases": cfg.resolved_releases, "real_images": seen[0],
           "seconds": round(seconds, 1)}
    if cfg.privacy.private:
        p = res.privacy
        row.update(epsilon_spent=p["epsilon"], q=p["sample_rate"], sigma=p["noise_multiplier"])
    if args.eval_models:
        ev = EvalConfig(models=args.eval_models, epochs=args.eval_epochs, dsa="none")
        acc = evaluate_set(res.images, res.labels, bundle.test_images, bundle.test_labels,
                           num_classes=bundle.num_classes, mean=bundle.mean, std=bundle.std, config=ev, seed=0,
                           device=cfg.resolved_device)
        row.update(accuracy_mean=acc.mean, accuracy_std=acc.std)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--batch-real", type=int, default=256)
    ap.add_argument("--epsilon", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-models", type=int, default=0)
    ap.add_argument("--eval-epochs", type=int, default=300)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    out = args.out or Path(__file__).parent / "results" / f"dp_walltime_{args.dataset.replace('-', '_')}"
    bundle = load_dataset(args.dataset)
    rows = [_run(bundle, epsilon=float("inf"), args=args), _run(bundle, epsilon=args.epsilon, args=args)]
    for row in rows:
        print(json.dumps(row), flush=True)
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"machine": machine, "args": vars(args) | {"out": str(out)},
                                                    "rows": rows}, indent=2, default=str))
    lines = [f"# DP vs non-private wall time at the same K ({args.dataset}, IPC 10)", "",
             f"Machine: {machine}. `CondenseConfig` defaults, K = {args.iterations}, batch_real = {args.batch_real}, "
             "run one after the other; setup and the privacy plan inside the clock. Real images = images pushed "
             "through the network by the releases (instrumented mechanism).", "",
             "| mode | K | releases R | real images | q | σ | seconds | accuracy % |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        acc = f"{100 * r['accuracy_mean']:.1f} ± {100 * r['accuracy_std']:.1f}" if "accuracy_mean" in r else "–"
        lines.append(f"| {r['mode']} | {r['iterations']} | {r['releases']} | {r['real_images']} | {round(r['q'], 4) if 'q' in r else '–'} | "
                     f"{round(r['sigma'], 3) if 'sigma' in r else '–'} | {r['seconds']} | {acc} |")
    if args.eval_models:
        lines += ["", f"Accuracy: {args.eval_models} fresh ConvNet-3 × {args.eval_epochs} epochs, SGD lr 0.01, "
                      "no augmentation, real test set (the independent protocol)."]
    lines += ["", "Command: `python benchmarks/dp_walltime.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("out", "device")) + "`"]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
