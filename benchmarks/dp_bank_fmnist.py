"""Benchmark: DP condensation of Fashion-MNIST (IPC 10) with the statistics bank, δ = 1e-5.

Protocol (fixed before looking at results; nothing tuned on the test set):
    * data: the full Fashion-MNIST training set (60 000, Debian ``dataset-fashion-mnist``) through
      ``load_dataset("fashion-mnist")``; accuracy on the full 10 000 test images.
    * condensation: product defaults in DP mode — ConvNet-3 random networks, mean-embedding on
      centred, unit-normalised features, noise init, SGD lr 1.0 momentum 0.5, DSA, clip C = 1,
      class counts released through the mechanism (10 % share), q from the signal-to-noise rule
      (or ``--sample-rate``, stated in the table);
      ``--releases`` R releases (the only real-data accesses) and ``--iterations`` K optimisation steps.
    * evaluation: the independent protocol — ``--eval-models`` fresh ConvNet-3 (GroupNorm),
      ``--eval-epochs`` epochs, SGD lr 0.01, no augmentation — mean ± std test accuracy.

Run:
    python benchmarks/dp_bank_fmnist.py --epsilons 1 8    # writes benchmarks/results/dp_bank_fmnist.{json,md}
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _overrides import parse_overrides  # noqa: E402

from securedc.condenser import Condenser
from securedc.config import CondenseConfig, EvalConfig, PrivacyConfig
from securedc.data import load_dataset
from securedc.evaluate import evaluate_set, random_subset

ANCHORS = {"PSG (ε≈1)": 68.5, "NDPDC (ε≈1)": 77.7, "Dosser (ε≈1)": 80.1, "Dosser (ε≈1, MNIST)": 96.4}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 8.0])
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--releases", type=int, default=100)
    ap.add_argument("--sample-rate", type=float, default=None, help="q of each release (default: the calibration rule)")
    ap.add_argument("--prototype-share", type=float, default=None,
                    help="share of epsilon for the DP class prototypes (default: the product's)")
    ap.add_argument("--prototype-clusters", default=None,
                    help="auto or K: sub-class centres the prototype rounds release (default: the product's)")
    ap.add_argument("--subspaces", type=int, nargs="+", default=[0],
                    help="privacy.subspace values to run at each epsilon (0 = full features)")
    ap.add_argument("--noise-seed", type=int, default=None,
                    help="fix the mechanism's secret key (pairs the subspace rows: same phase-0 centres); "
                         "default: fresh OS randomness")
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--batch-real", type=int, default=256,
                    help="caps the rule's q at batch_real / max class count (the product's default 256)")
    ap.add_argument("--eval-models", type=int, default=3)
    ap.add_argument("--eval-epochs", type=int, default=300)
    ap.add_argument("--random-baseline", action="store_true", help="also evaluate a random real subset")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--set", nargs="*", default=[], help="CondenseConfig overrides key=value (e.g. reuse=2)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "dp_bank_fmnist")
    args = ap.parse_args()
    bundle = load_dataset(args.dataset)
    ev = EvalConfig(models=args.eval_models, epochs=args.eval_epochs, dsa="none")
    rows = []
    for eps, subspace in [(e, k) for e in args.epsilons for k in args.subspaces]:
        cfg = CondenseConfig(
            ipc=args.ipc, iterations=args.iterations, releases=args.releases, device=args.device,
            batch_real=args.batch_real, **parse_overrides(args.set),
            privacy=PrivacyConfig(epsilon=eps, delta=1e-5, sample_rate=args.sample_rate, subspace=subspace,
                                  **({} if args.prototype_share is None else {"prototype_share": args.prototype_share}),
                                  **({} if args.prototype_clusters is None else {"prototype_clusters": (
                                      args.prototype_clusters if args.prototype_clusters == "auto"
                                      else int(args.prototype_clusters))})),
        )
        c = Condenser(cfg, num_classes=bundle.num_classes, image_shape=bundle.image_shape, mean=bundle.mean, std=bundle.std)
        t0 = time.perf_counter()
        mech = c.make_mechanism(bundle.train_images, bundle.train_labels, noise_seed=args.noise_seed)
        res = c.fit(mech)
        seconds = time.perf_counter() - t0
        acc = evaluate_set(res.images, res.labels, bundle.test_images, bundle.test_labels, num_classes=bundle.num_classes,
                           mean=bundle.mean, std=bundle.std, config=ev, seed=0, device=cfg.resolved_device)
        p = res.privacy
        rows.append({"epsilon_target": eps, "epsilon_spent": p["epsilon"], "delta": p["delta"], "sigma": p["noise_multiplier"],
                     "q": p["sample_rate"], "releases": p["releases"], "iterations": args.iterations,
                     "count_sigma": p["count_noise_multiplier"], "prototype_sigma": p.get("prototype_noise_multiplier"),
                     "prototype_share": cfg.privacy.prototype_share, "subspace": subspace,
                     "statistic_width": res.bank.widths[0],
                     "prototype_clusters": p.get("prototype_clusters"), "prototype_rounds": p.get("prototype_rounds"),
                     "condense_seconds": round(seconds, 1),
                     "accuracy_mean": acc.mean, "accuracy_std": acc.std})
        print(json.dumps(rows[-1]), flush=True)
    if args.random_baseline:
        rx, ry = random_subset(bundle.train_images, bundle.train_labels, args.ipc, seed=1)
        acc = evaluate_set(rx, ry, bundle.test_images, bundle.test_labels, num_classes=bundle.num_classes,
                           mean=bundle.mean, std=bundle.std, config=ev, seed=0, device=cfg.resolved_device)
        rows.append({"epsilon_target": "random real subset (not private)", "accuracy_mean": acc.mean, "accuracy_std": acc.std})
    machine = f"{platform.machine()} {torch.get_num_threads()} threads, device {args.device}"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"machine": machine, "args": {k: str(v) for k, v in vars(args).items()},
                                                         "rows": rows, "anchors": ANCHORS}, indent=2))
    lines = [f"# DP Fashion-MNIST with the statistics bank (IPC {args.ipc}, δ = 1e-5)", "",
             f"Machine: {machine}. Evaluation: {args.eval_models} ConvNet-3 × {args.eval_epochs} epochs, "
             "SGD lr 0.01, no augmentation, full test set. Command: `python benchmarks/dp_bank_fmnist.py "
             + " ".join(f"--{k.replace('_', '-')}" + ("" if v is True else
                                                       f" {' '.join(map(str, v)) if isinstance(v, list) else v}")
                      for k, v in vars(args).items() if k not in ("out",) and v is not None and v is not False and v != []) + "`", "",
             "| ε target | ε spent | prototype share | centres per class | subspace k (statistic width) | σ | q | R | K | "
             "condensation s | accuracy % |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "sigma" in r:
            lines.append(f"| {r['epsilon_target']:g} | {r['epsilon_spent']:.3f} | {r['prototype_share']:g} | "
                         f"{r.get('prototype_clusters') or '–'} | {r.get('subspace') or '–'} ({r.get('statistic_width', '?')}) | "
                         f"{r['sigma']:.3f} | "
                         f"{r['q']:g} | {r['releases']} | "
                         f"{r['iterations']} | {r['condense_seconds']} | {100*r['accuracy_mean']:.1f} ± {100*r['accuracy_std']:.1f} |")
        else:
            lines.append(f"| {r['epsilon_target']} | | | | | | | | | | {100*r['accuracy_mean']:.1f} ± {100*r['accuracy_std']:.1f} |")
    lines += ["", "Published (ε ≈ 1, IPC 10, their own protocols): " + ", ".join(f"{k} {v}" for k, v in ANCHORS.items())]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
