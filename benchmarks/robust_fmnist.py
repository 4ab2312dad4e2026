"""Robustness benchmark: Fashion-MNIST IPC 10, mean-embedding (DM) with and without the adversarial term.

CPU-sized protocol (the machine is a shared 2-core CPU; see the printed/JSON ``protocol``):
condense IPC 10 from the full 60k training set for ``--iterations`` steps (real init, DSA,
``--batch-real`` real images per class per step, a fresh random ConvNet-3 per step); train
``--models`` fresh ConvNet-3 per set for ``--epochs`` epochs (DSA, SGD lr 0.01); attack the
first ``--test`` test images with PGD-20 (eps/4 steps, random start) and quick AutoAttack
(APGD-CE -> APGD-T -> FAB-T -> Square at reduced budgets, see ``protocol.autoattack``) at
eps 8/255 and 0.1. Sets: plain DM, DM + adversarial term (random attack network), DM +
adversarial term (network trained on S), and the random real subset.

    /work/venv/bin/python benchmarks/robust_fmnist.py --out benchmarks/results/robust_fmnist
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from securedc.audits.robustness import AttackSettings, _autoattack, _correct, _pgd_acc
from securedc.condenser import Condenser
from securedc.config import AdversarialConfig, CondenseConfig, EvalConfig
from securedc.data import load_dataset
from securedc.evaluate import random_subset, train_model

EPS = {"8/255": 8 / 255, "0.1": 0.1}


def attack_scores(model, x, y, *, settings: AttackSettings, seed: int) -> dict[str, float]:
    clean = _correct(model, x, y, batch_size=250)
    out = {"clean": float(clean.float().mean())}
    for label, eps in EPS.items():
        out[f"pgd20@{label}"] = _pgd_acc(model, x, y, clean, eps=eps, steps=20, restarts=1, seed=seed, batch_size=250)
        out[f"autoattack@{label}"], _ = _autoattack(model, x, y, clean, eps=eps, num_classes=10, settings=settings,
                                                   seed=seed, batch_size=250)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=60)
    ap.add_argument("--batch-real", type=int, default=32)
    ap.add_argument("--adv-eps", type=float, default=0.1)
    ap.add_argument("--adv-steps", type=int, default=3)
    ap.add_argument("--adv-weight", type=float, default=1.0)
    ap.add_argument("--models", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--test", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--aa-steps", type=int, default=25)
    ap.add_argument("--square-queries", type=int, default=500)
    ap.add_argument("--out", default="benchmarks/results/robust_fmnist")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_all = time.perf_counter()
    b = load_dataset("fashion-mnist")
    tx, ty = b.test_images[: args.test], b.test_labels[: args.test]
    settings = AttackSettings(pgd_restarts=1, apgd_steps=args.aa_steps, target_classes=3, fab_steps=args.aa_steps,
                              square_queries=args.square_queries)
    eval_cfg = EvalConfig(models=args.models, epochs=args.epochs)
    adv = dict(eps=args.adv_eps, steps=args.adv_steps, alpha=args.adv_eps / 2, weight=args.adv_weight)
    variants = {
        "dm": AdversarialConfig(),
        "dm+adv(random)": AdversarialConfig(**adv, attack_network="random"),
        "dm+adv(synthetic)": AdversarialConfig(**adv, attack_network="synthetic"),
    }
    sets = {name: None for name in variants} | {"random subset": random_subset(b.train_images, b.train_labels, 10, seed=1)}
    timing, results = {}, {}
    for name in sets:
        if name in variants:
            cfg = CondenseConfig(ipc=10, iterations=args.iterations, batch_real=args.batch_real, seed=0,
                                 adversarial=variants[name])
            c = Condenser(cfg, num_classes=10, image_shape=b.image_shape, mean=b.mean, std=b.std)
            r = c.fit(c.make_mechanism(b.train_images, b.train_labels))
            sets[name] = (r.images, r.labels)
            timing[name] = r.seconds / max(1, r.steps_done)
            print(f"{name}: {timing[name]:.2f} s/iteration", flush=True)
        x, y = sets[name]
        per = []
        for k in range(args.models):
            model = train_model(x, y, num_classes=10, mean=b.mean, std=b.std, config=eval_cfg, seed=k)
            per.append(attack_scores(model, tx, ty, settings=settings, seed=k))
        results[name] = {key: statistics.fmean(p[key] for p in per) for key in per[0]}
        results[name]["per_model"] = per
        print(name, {k: round(v, 4) for k, v in results[name].items() if k != "per_model"}, flush=True)
    out = {
        "protocol": {
            "dataset": "fashion-mnist (60000 train; first %d test images attacked)" % args.test,
            "ipc": 10, "iterations": args.iterations, "batch_real_per_class": args.batch_real,
            "condense": "mean-embedding, real init, DSA, fresh random ConvNet-3 per step, SGD lr 1 momentum 0.5",
            "adversarial_term": {**adv, "retrain_every": 50, "retrain_epochs": 50, "note": "synthetic net trained once on the initial S when iterations < 50"},
            "eval": {"models": args.models, "epochs": args.epochs, "model": "convnet", "dsa": eval_cfg.dsa},
            "attacks": "PGD-20 (alpha eps/4, random start, 1 restart); AutoAttack quick: " + settings.describe(),
            "threads": args.threads,
        },
        "seconds_per_iteration": timing,
        "results": results,
        "total_seconds": time.perf_counter() - t_all,
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(out, indent=2))
    lines = ["| set | clean | PGD-20 @8/255 | AA @8/255 | PGD-20 @0.1 | AA @0.1 | s/iter |", "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {100*r['clean']:.1f} | {100*r['pgd20@8/255']:.1f} | {100*r['autoattack@8/255']:.1f} | "
                     f"{100*r['pgd20@0.1']:.1f} | {100*r['autoattack@0.1']:.1f} | {timing.get(name, 0):.2f} |")
    md = "# Robustness benchmark: Fashion-MNIST IPC 10\n\n" + "\n".join(lines) + "\n\nProtocol: ```" + json.dumps(out["protocol"], indent=1) + "```\n"
    path.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
