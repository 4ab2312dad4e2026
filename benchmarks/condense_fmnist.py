"""Foundation benchmark: Fashion-MNIST condensation with each discrepancy vs a random subset.

CPU protocol (state it with the numbers): ConvNet-3 (width 128, instance norm), DSA, the default
init (``auto`` = ``mix``: each image the mean of 4 real images of its class; ``--init real`` for DM's),
SGD on images (default lr: see ``CondenseConfig.lr_img``) momentum 0.5, ``--batch-real`` real images per
class per step, ``--iterations`` steps; evaluation = ``--eval-models`` fresh ConvNets trained ``--eval-epochs``
epochs (SGD 0.01, momentum 0.9, wd 5e-4, batch 256, DSA, lr × 0.1 at half) on the synthetic set,
tested on the full 10 000-image test set. Snapshots at ``--snapshots`` give time-to-accuracy.

Usage:
    python benchmarks/condense_fmnist.py --ipc 10 --discrepancies mean-embedding mmd characteristic \
        sliced-wasserstein --iterations 200 --snapshots 0 50 200

Writes ``benchmarks/results/condense_fmnist.json`` and ``.md`` (merged with earlier rows).
"""

from __future__ import annotations

import argparse
import dataclasses
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
from securedc.evaluate import evaluate_set, random_subset  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def step_time(bundle, *, ipc: int, batch_real: int, discrepancy: str, steps: int = 6, **overrides) -> float:
    """Seconds per step, excluding the first (warm-up) step."""
    cfg = CondenseConfig(ipc=ipc, iterations=steps, batch_real=batch_real, discrepancy=discrepancy, **overrides)
    c = Condenser(cfg, num_classes=10, image_shape=bundle.image_shape, mean=bundle.mean, std=bundle.std)
    times: list[float] = []
    c.fit(c.make_mechanism(bundle.train_images, bundle.train_labels), callback=lambda ev: times.append(ev.seconds))
    return (times[-1] - times[0]) / (steps - 1)


def fmt_lr(lr: float | None) -> str:
    return "" if lr is None else f"{lr:.3g}"



def render(payload: dict) -> None:
    """Write ``results/condense_fmnist.md`` from the JSON payload."""
    lines = ["| kind | discrepancy | IPC | iterations | batch_real | init | lr_img | real fwd | eval | threads | time (s) "
             "| s/iter | test acc (%) |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in payload["rows"]:
        acc = f"{100 * r['acc_mean']:.1f} ± {100 * r['acc_std']:.1f}" if "acc_mean" in r else ""
        spi = f"{r['sec_per_iter']:.3f}" if "sec_per_iter" in r else ""
        lines.append(f"| {r['kind']} | {r.get('discrepancy', '')} | {r['ipc']} | {r.get('iterations', '')} | "
                     f"{r.get('batch_real', '')} | {r.get('init', '')} | {fmt_lr(r.get('lr_img'))} | {r.get('real_precision', '')} | "
                     f"{r.get('eval', '')} | {r.get('threads', '')} | "
                     f"{r.get('seconds', 0):.0f} | {spi} | {acc} |")
    (RESULTS / "condense_fmnist.md").write_text(
        f"# Fashion-MNIST condensation ({payload['machine']})\n\nProtocol: {payload['protocol']}\n\n" + "\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ipc", type=int, nargs="+", default=[10])
    ap.add_argument("--discrepancies", nargs="+", default=["mean-embedding"])
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--snapshots", type=int, nargs="+", default=[0, 200])
    ap.add_argument("--batch-real", type=int, default=64)
    ap.add_argument("--eval-models", type=int, default=2)
    ap.add_argument("--eval-epochs", type=int, default=150)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--init", default="auto", help="auto (= mix), real, mix or noise")
    ap.add_argument("--set", nargs="*", default=[], help="CondenseConfig overrides key=value")
    ap.add_argument("--eval-dsa", default=None, help="evaluation augmentation: 'none' = the independent (plain) "
                    "protocol; default: EvalConfig's DSA")
    ap.add_argument("--no-random", action="store_true", help="skip the random-subset row")
    ap.add_argument("--timing-only", action="store_true", help="only seconds/iteration at batch 64 and 256")
    ap.add_argument("--render-only", action="store_true", help="rewrite the .md from the JSON")
    args = ap.parse_args()
    if args.render_only:
        render(json.loads((RESULTS / "condense_fmnist.json").read_text()))
        return
    torch.set_num_threads(args.threads)
    extra = parse_overrides(args.set)
    bundle = load_dataset("fashion-mnist")
    ec = EvalConfig(models=args.eval_models, epochs=args.eval_epochs,
                    **({"dsa": args.eval_dsa} if args.eval_dsa is not None else {}))
    eval_name = f"{args.eval_models}x{args.eval_epochs}ep" + (" no aug" if args.eval_dsa == "none" else "")
    out_json = RESULTS / "condense_fmnist.json"
    rows = json.loads(out_json.read_text())["rows"] if out_json.exists() else []
    machine = f"{platform.machine()} {torch.get_num_threads()} threads, {platform.processor() or 'cpu'}"

    if args.timing_only:
        for disc in args.discrepancies:
            for br in (64, 256):
                s = step_time(bundle, ipc=10, batch_real=br, discrepancy=disc, **extra)
                rows.append({"kind": "timing", "discrepancy": disc, "ipc": 10, "batch_real": br, "sec_per_iter": s,
                             "real_precision": extra.get("real_precision", "auto"), "threads": args.threads,
                             "set": " ".join(args.set)})
                print(f"timing {disc} ipc10 batch {br}: {s:.3f} s/it", flush=True)
    else:
        for ipc in args.ipc:
            if not args.no_random:
                rx, ry = random_subset(bundle.train_images, bundle.train_labels, ipc, seed=123)
                base = evaluate_set(rx, ry, bundle.test_images, bundle.test_labels, num_classes=10, mean=bundle.mean,
                                    std=bundle.std, config=ec, seed=0)
                rows.append({"kind": "random", "ipc": ipc, "acc_mean": base.mean, "acc_std": base.std,
                             "eval": eval_name, "threads": args.threads})
                print(f"random ipc{ipc}: {base}", flush=True)
            for disc in args.discrepancies:
                cfg = CondenseConfig(ipc=ipc, iterations=args.iterations, batch_real=args.batch_real, discrepancy=disc,
                                     init=args.init, **extra)
                c = Condenser(cfg, num_classes=10, image_shape=bundle.image_shape, mean=bundle.mean, std=bundle.std)
                snaps: dict[int, tuple[torch.Tensor, float]] = {}
                wanted = set(args.snapshots)
                t0 = time.perf_counter()
                # run segment by segment so snapshots are exact (resume is bit-identical)
                ck = RESULTS / f".ckpt-{disc}-{ipc}.safetensors"
                done = 0
                for target in sorted(wanted | {args.iterations}):
                    seg = dataclasses.replace(cfg, iterations=target, checkpoint_every=max(target, 1))
                    cs = Condenser(seg, num_classes=10, image_shape=bundle.image_shape, mean=bundle.mean, std=bundle.std)
                    ms = cs.make_mechanism(bundle.train_images, bundle.train_labels)
                    r = cs.fit(ms, checkpoint_path=ck if target else None, resume_from=ck if done else None)
                    done = target
                    snaps[target] = (r.images, time.perf_counter() - t0)
                ck.unlink(missing_ok=True)
                for it, (imgs, secs) in sorted(snaps.items()):
                    res = evaluate_set(imgs, c.labels, bundle.test_images, bundle.test_labels, num_classes=10,
                                       mean=bundle.mean, std=bundle.std, config=ec, seed=0)
                    rows.append({"kind": "condensed", "discrepancy": disc, "ipc": ipc, "iterations": it,
                                 "seconds": secs, "acc_mean": res.mean, "acc_std": res.std,
                                 "batch_real": args.batch_real, "init": cfg.resolved_init, "set": " ".join(args.set),
                                 "lr_img": c.lr_img, "real_precision": c.real_precision,
                                 "eval": eval_name, "threads": args.threads, "machine": machine})
                    print(f"{disc} ipc{ipc} it{it} ({secs:.0f}s): {res}", flush=True)
    payload = {"machine": machine, "protocol": "ConvNet-3, DSA, SGD momentum 0.5 on images (lr_img per row); eval = fresh "
               "ConvNet-3, SGD 0.01/0.9/5e-4, batch 256, DSA (none where the eval column says 'no aug': the independent "
               "protocol), lr x0.1 at half, full 10k test set; per-row settings below",
               "rows": rows}
    out_json.write_text(json.dumps(payload, indent=2))
    render(payload)
    print("written", out_json)


if __name__ == "__main__":
    main()
