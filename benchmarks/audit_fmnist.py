"""Audit benchmark: MIA + canary ε̂ on Fashion-MNIST, IPC 10, ε ∈ {1, 8, ∞}.

CPU-sized protocol (stated in the results): the condenser sees the first 50 000
training images (members); the last 10 000 are the audit's held-out non-members.
Condensation: DM (mean-embedding), IPC 10, ``--iterations`` steps (default 30),
``--batch-real`` real images per class per step (default 16), the product's default init
(``auto``: k-means centres when non-private since 2026-12-07, real images in the
``audit_fmnist.md`` runs before it; DP class prototypes under DP, δ = 1e-5). MIA: 500 member + 500 non-member
targets, attack models = ConvNet trained 50 epochs (no augmentation), 2 shadow
condensations (same config) for LiRA/RMIA. Canary: 100 mislabelled canaries on a
stratified 100-image training subset (+ included canaries), same condensation config.

Run: ``python benchmarks/audit_fmnist.py`` (writes benchmarks/results/audit_fmnist.{json,md}).
"""

from __future__ import annotations

import argparse
import logging
import dataclasses
import json
import math
import time
from pathlib import Path

import torch

from securedc.audits.base import json_ready
from securedc.audits.canary import run_canary_audit
from securedc.audits.mia import run_mia
from securedc.condenser import Condenser
from securedc.config import CondenseConfig, EvalConfig, PrivacyConfig
from securedc.data import load_dataset

OUT = Path(__file__).resolve().parent / "results"


def condense_fn_for(cfg: CondenseConfig, bundle):
    def fn(x: torch.Tensor, y: torch.Tensor, seed: int):
        c = dataclasses.replace(cfg, seed=seed)
        cond = Condenser(c, num_classes=bundle.num_classes, image_shape=tuple(x.shape[1:]), mean=bundle.mean, std=bundle.std)
        # fixed noise seed: reproducible benchmark only (a real release draws it from the OS)
        mech = cond.make_mechanism(x, y, noise_seed=seed + 1) if c.privacy.private else cond.make_mechanism(x, y)
        res = cond.fit(mech)
        return res.images, res.labels
    return fn


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--batch-real", type=int, default=16)
    ap.add_argument("--epsilons", default="1,8,inf")
    ap.add_argument("--shadows", type=int, default=2)
    ap.add_argument("--eval-epochs", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default="audit_fmnist", help="output stem (one process per ε can run in parallel)")
    ap.add_argument("--merge", nargs="*", default=None, help="merge these result stems into --name and exit")
    args = ap.parse_args()
    if args.merge is not None:
        rows = []
        for stem in args.merge:
            rows += json.loads((OUT / f"{stem}.json").read_text())["rows"]
        rows.sort(key=lambda r: float(r["epsilon"]))
        write(rows, args)
        return
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", force=True)
    logging.getLogger("securedc.condenser").setLevel(logging.WARNING)
    b = load_dataset("fashion-mnist")
    mx, my = b.train_images[:50000], b.train_labels[:50000]
    nx, ny = b.train_images[50000:], b.train_labels[50000:]
    eval_cfg = EvalConfig(models=1, epochs=args.eval_epochs, dsa="none")
    rows = []
    for eps_text in args.epsilons.split(","):
        eps = float(eps_text)
        delta = 1e-5
        cfg = CondenseConfig(ipc=10, iterations=args.iterations, batch_real=args.batch_real,
                             privacy=PrivacyConfig(epsilon=eps, delta=delta if math.isfinite(eps) else None)).validate()
        fn = condense_fn_for(cfg, b)
        t0 = time.perf_counter()
        syn_x, syn_y = fn(mx, my, 0)
        logging.info("eps=%s release condensed in %.1f s", eps, time.perf_counter() - t0)
        t_condense = time.perf_counter() - t0
        t1 = time.perf_counter()
        mia = run_mia(syn_x, syn_y, members=(mx, my), nonmembers=(nx, ny), num_classes=10, mean=b.mean, std=b.std,
                      shadow_fn=fn, shadows=args.shadows, eval_config=eval_cfg, seed=0, max_targets=500)
        t_mia = time.perf_counter() - t1
        t2 = time.perf_counter()
        can = run_canary_audit(mx, my, condense_fn=fn, num_classes=10, mean=b.mean, std=b.std, claimed_epsilon=eps,
                               delta=delta, num_canaries=100, seed=0, max_train=100)
        t_can = time.perf_counter() - t2
        row = {
            "epsilon": eps, "delta": delta if math.isfinite(eps) else None,
            "condense_seconds": t_condense, "mia_seconds": t_mia, "canary_seconds": t_can,
            "attacks": {k: {m: v[m] for m in ("auc", "auc_ci_low", "auc_ci_high", "balanced_accuracy",
                                              "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr", "tpr_at_1pct_fpr_ci_high")}
                        for k, v in mia.details["attacks"].items()},
            "mia_metrics": mia.metrics,
            "canary": can.metrics, "canary_passed": can.passed,
        }
        rows.append(row)
        print(json.dumps(json_ready(row))[:400], flush=True)
        write(rows, args)


def write(rows: list, args: argparse.Namespace) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    meta = {"protocol": __doc__, "args": vars(args), "torch_threads": args.threads, "rows": rows}
    (OUT / f"{args.name}.json").write_text(json.dumps(json_ready(meta), indent=1))
    lines = ["# Audit benchmark: Fashion-MNIST IPC 10", "", f"args: `{vars(args)}`", "",
             "| ε | attack | AUC [95% CI] | bal. acc | TPR@1%FPR | TPR@0.1%FPR |", "|---|---|---|---|---|---|"]
    for r in rows:
        for k, v in r["attacks"].items():
            lines.append(f"| {float(r['epsilon']):g} | {k} | {v['auc']:.3f} [{v['auc_ci_low']:.3f}, "
                         f"{v['auc_ci_high']:.3f}] | {v['balanced_accuracy']:.3f} | {v['tpr_at_1pct_fpr']:.3f} | "
                         f"{v['tpr_at_0.1pct_fpr']:.3f} |")
    lines += ["", "| ε | canary ε̂ (95%) | correct/guesses | passed | condense s | MIA s | canary s |",
              "|---|---|---|---|---|---|---|"]
    for r in rows:
        c = r["canary"]
        lines.append(f"| {float(r['epsilon']):g} | {c['epsilon_lower_bound']:.3f} | {int(c['correct'])}/"
                     f"{int(c['guesses'])} | {r['canary_passed']} | {r['condense_seconds']:.0f} | "
                     f"{r['mia_seconds']:.0f} | {r['canary_seconds']:.0f} |")
    (OUT / f"{args.name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
