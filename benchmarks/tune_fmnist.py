"""Pick condensation hyper-parameters on a *validation split of the training set* (never the test set).

Fashion-MNIST's 60 000 training images are split (seeded) into 55 000 to condense from and
5 000 validation images; each variant condenses with ``--set key=value`` overrides of
:class:`~securedc.config.CondenseConfig` and is scored at ``--snapshots`` by fresh ConvNet-3s
trained on the synthetic set and tested on the validation images. The winner then runs the
real benchmark (``condense_fmnist.py``) on the test set. Non-private: choosing on private data
in DP mode would need its own accounting (docs/privacy.md), so DP runs use these public choices.

Usage:
    python benchmarks/tune_fmnist.py --name sgd-lr1 --set optimizer=sgd lr_img=1.0
    python benchmarks/tune_fmnist.py --merge      # table of every variant run so far

Writes ``benchmarks/results/tune/<name>.json``; ``--merge`` writes ``results/tune_fmnist.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _overrides import parse_overrides  # noqa: E402

from securedc.condenser import Condenser  # noqa: E402
from securedc.config import CondenseConfig, EvalConfig  # noqa: E402
from securedc.data import load_dataset  # noqa: E402
from securedc.evaluate import evaluate_set  # noqa: E402

RESULTS = Path(__file__).parent / "results"
TUNE = RESULTS / "tune"


def merge() -> None:
    rows = [json.loads(p.read_text()) for p in sorted(TUNE.glob("*.json"))]
    snaps = sorted({int(s) for r in rows for s in r["val_acc"]})
    head = "| variant | overrides | s/iter | " + " | ".join(f"val acc @{s}" for s in snaps) + " |"
    lines = [head, "|" + "---|" * (3 + len(snaps))]
    for r in rows:
        accs = " | ".join(f"{100 * r['val_acc'][str(s)]:.1f}" if str(s) in r["val_acc"] else "" for s in snaps)
        lines.append(f"| {r['name']} | {r['overrides']} | {r['sec_per_iter']:.3f} | {accs} |")
    proto = rows[0]["protocol"] if rows else ""
    notes = [f"- {r['name']}: {r['note']}" for r in rows if r.get("note")]
    (RESULTS / "tune_fmnist.md").write_text(
        "# Hyper-parameter choice on a Fashion-MNIST validation split\n\n" + proto + "\n\n" + "\n".join(lines) + "\n"
        + ("\nNotes:\n\n" + "\n".join(notes) + "\n" if notes else "")
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name")
    ap.add_argument("--set", nargs="*", default=[])
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--snapshots", type=int, nargs="+", default=[100, 200, 300])
    ap.add_argument("--eval-models", type=int, default=1)
    ap.add_argument("--eval-epochs", type=int, default=100)
    ap.add_argument("--eval-dsa", default="color_crop_cutout_flip_scale_rotate",
                    help="augmentation of the evaluation models ('none' = the independent evaluator's plain protocol)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--merge", action="store_true")
    args = ap.parse_args()
    if args.merge:
        merge()
        return
    torch.set_num_threads(args.threads)
    b = load_dataset("fashion-mnist")
    perm = torch.randperm(b.train_labels.shape[0], generator=torch.Generator().manual_seed(2024))
    val, train = perm[:5000], perm[5000:]
    overrides = parse_overrides(args.set)
    base = dict(ipc=10, batch_real=64, init="real", real_precision="bf16")
    base.update(overrides)
    ec = EvalConfig(models=args.eval_models, epochs=args.eval_epochs, dsa=args.eval_dsa)
    val_acc, t_run = {}, 0.0
    ck = TUNE / f".ckpt-{args.name}.safetensors"
    done = 0
    for target in sorted(set(args.snapshots) | {args.iterations}):
        cfg = CondenseConfig(**{**base, "iterations": target, "checkpoint_every": target})
        c = Condenser(cfg, num_classes=10, image_shape=b.image_shape, mean=b.mean, std=b.std)
        m = c.make_mechanism(b.train_images[train], b.train_labels[train])
        t0 = time.perf_counter()
        r = c.fit(m, checkpoint_path=ck, resume_from=ck if done else None)
        t_run += time.perf_counter() - t0
        done = target
        res = evaluate_set(r.images, r.labels, b.train_images[val], b.train_labels[val], num_classes=10, mean=b.mean,
                           std=b.std, config=ec, seed=0)
        val_acc[str(target)] = res.mean
        print(f"{args.name} it{target}: val {100 * res.mean:.1f}", flush=True)
    ck.unlink(missing_ok=True)
    out = {"name": args.name, "overrides": " ".join(args.set), "config": base, "iterations": args.iterations,
           "sec_per_iter": t_run / args.iterations, "val_acc": val_acc, "threads": args.threads,
           "machine": f"{platform.machine()} {platform.processor() or 'cpu'}",
           "protocol": (f"Protocol: FMNIST IPC 10, 55k/5k seeded train/validation split, defaults "
                        f"{ {k: v for k, v in base.items() if k not in overrides} }, eval {args.eval_models} ConvNet-3 x "
                        f"{args.eval_epochs} epochs (augmentation {args.eval_dsa}) on the 5k validation images; {args.threads} thread(s) per run, "
                        "two runs side by side (s/iter comparable only within this table).")}
    (TUNE / f"{args.name}.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
