"""DP condensation of sklearn digits (IPC 10): prototype share, the DP prototype baseline, a random subset.

The members are a stratified-by-chance 80 % of the digits training split (what an audited
``securedc condense`` condenses from: 20 % are held out as non-members). Every row is evaluated with
the independent protocol: 3 fresh ConvNet-3 (GroupNorm) x 300 epochs, SGD lr 0.01, no augmentation,
on the real test set. Rows:

* the product's DP condensation at each ε for each ``--prototype-shares`` value (0 = noise
  initialisation, counts released with 10 % of ε);
* the DP prototype baseline of the same (ε, δ) (the utility gate's reference for private releases);
* a random real subset of the members (not private).

Usage::

    python benchmarks/dp_digits.py                       # writes benchmarks/results/dp_digits.{json,md}
    python benchmarks/dp_digits.py --epsilons 8 --prototype-shares 0.8 --iterations 300
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
from securedc.evaluate import evaluate_set, random_subset
from securedc.privacy.baseline import dp_prototype_baseline


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 8.0])
    ap.add_argument("--prototype-shares", type=float, nargs="+", default=[0.0, 0.5, 0.8])
    ap.add_argument("--delta", type=float, default=1e-5)
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--eval-models", type=int, default=3)
    ap.add_argument("--eval-epochs", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "dp_digits")
    args = ap.parse_args()
    torch.set_num_threads(1)
    d = load_dataset("digits")
    gen = torch.Generator().manual_seed(args.seed)
    keep = torch.randperm(d.train_labels.numel(), generator=gen)[: int(0.8 * d.train_labels.numel())]
    x, y = d.train_images[keep], d.train_labels[keep]
    ev = EvalConfig(models=args.eval_models, epochs=args.eval_epochs, dsa="none")
    common = dict(num_classes=d.num_classes, mean=d.mean, std=d.std, config=ev, seed=args.seed)

    def evaluate(images, labels) -> dict[str, float]:
        r = evaluate_set(images, labels, d.test_images, d.test_labels, **common)
        return {"accuracy_mean": r.mean, "accuracy_std": r.std}

    rows = []
    for eps in args.epsilons:
        for share in args.prototype_shares:
            cfg = CondenseConfig(ipc=args.ipc, iterations=args.iterations, seed=args.seed,
                                 privacy=PrivacyConfig(epsilon=eps, delta=args.delta, prototype_share=share))
            c = Condenser(cfg, num_classes=d.num_classes, image_shape=d.image_shape, mean=d.mean, std=d.std)
            t0 = time.perf_counter()
            res = c.fit(c.make_mechanism(x, y))
            seconds = time.perf_counter() - t0
            p = res.privacy
            rows.append({"row": "condensed", "epsilon": eps, "prototype_share": share, "epsilon_spent": p["epsilon"],
                         "q": p["sample_rate"], "sigma": p["noise_multiplier"], "releases": p["releases"],
                         "bank_snr": p.get("bank_snr"), "sigma_release": p.get("release_noise_multiplier"),
                         "sigma_top_up": p.get("top_up_noise_multiplier"),
                         "condense_seconds": round(seconds, 1), **evaluate(res.images, res.labels)})
            print(json.dumps(rows[-1]), flush=True)
        bx, by = dp_prototype_baseline(x, y, ipc=args.ipc, num_classes=d.num_classes, epsilon=eps, delta=args.delta)
        rows.append({"row": "DP prototype baseline", "epsilon": eps, **evaluate(bx, by)})
        print(json.dumps(rows[-1]), flush=True)
    rx, ry = random_subset(x, y, args.ipc, seed=args.seed + 1)
    rows.append({"row": "random real subset (not private)", **evaluate(rx, ry)})
    machine = f"{platform.machine()}, {torch.get_num_threads()} thread(s), CPU"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cmd = "python benchmarks/dp_digits.py " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in vars(args).items() if k != "out")
    args.out.with_suffix(".json").write_text(json.dumps({"machine": machine, "command": cmd, "rows": rows}, indent=2))
    lines = [f"# DP digits (IPC {args.ipc}, δ = {args.delta:g}, {args.iterations} steps)", "",
             f"Machine: {machine}. Members: 80 % of the digits training split (seed {args.seed}). Evaluation (the "
             f"independent protocol): {args.eval_models} ConvNet-3 × {args.eval_epochs} epochs, SGD lr 0.01, no "
             f"augmentation, real test set. Command: `{cmd}`", "",
             "σ = the accounted noise multiplier of the statistic releases; with a prototype top-up (bank SNR < "
             "4) they add σ' and a second prototype release σ_B (docs/privacy.md).", "",
             "| row | ε | prototype share | q | σ | bank SNR | top-up σ_B (σ') | condensation s | accuracy % |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        acc = f"{100 * r['accuracy_mean']:.1f} ± {100 * r['accuracy_std']:.1f}"
        if r["row"] == "condensed":
            snr = f"{r['bank_snr']:.2f}" if r.get("bank_snr") is not None else ""
            top = f"{r['sigma_top_up']:.2f} ({r['sigma_release']:.2f})" if r.get("sigma_top_up") else "no"
            lines.append(f"| condensed | {r['epsilon']:g} | {r['prototype_share']:g} | {r['q']:g} | {r['sigma']:.2f} | "
                         f"{snr} | {top} | {r['condense_seconds']} | {acc} |")
        else:
            lines.append(f"| {r['row']} | {r.get('epsilon', '')} | | | | | | | {acc} |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
