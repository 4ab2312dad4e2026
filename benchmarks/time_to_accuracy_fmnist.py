"""Side by side: time-to-accuracy of securedc vs the reference DM loop on Fashion-MNIST IPC 10.

Protocol (docs/benchmarks.md, the reference DM code on CPU): ConvNet-3, DSA, real-image init, ``--batch-real`` real images
per class per step; each snapshot is scored by ``--eval-models`` fresh ConvNet-3s trained
``--eval-epochs`` epochs on the synthetic set (SGD 0.01/0.9/5e-4, batch 256, DSA, lr x0.1 at half)
and tested on the 10 000 test images. Phase 1 runs the condensations one after the other with
``--threads`` threads on an otherwise idle machine (the wall-clock columns); phase 2 evaluates the
saved snapshots, ``--eval-jobs`` processes at a time (accuracy does not depend on timing).

Usage:
    python benchmarks/time_to_accuracy_fmnist.py --ref-snapshots 200 1000 --ours-snapshots 100 200 300

Writes ``benchmarks/results/time_to_accuracy_fmnist.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).parent))
from _overrides import parse_overrides  # noqa: E402
from reference_dm import reference_dm  # noqa: E402

from securedc.condenser import Condenser  # noqa: E402
from securedc.config import CondenseConfig, EvalConfig  # noqa: E402
from securedc.data import load_dataset  # noqa: E402
from securedc.evaluate import evaluate_set, random_subset  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SNAPS = RESULTS / ".tta-snapshots"


def run_reference(b, snapshots: list[int], batch_real: int) -> list[dict]:
    rows, wanted = [], set(snapshots)

    def cb(step: int, x: torch.Tensor, secs: float) -> None:
        if step in wanted:
            path = SNAPS / f"reference-{step}.safetensors"
            save_file({"images": x.contiguous()}, str(path))
            rows.append({"method": "reference DM loop", "iterations": step, "seconds": secs, "file": path.name})
            print(f"reference step {step}: {secs:.1f} s", flush=True)

    reference_dm(b.train_images, b.train_labels, num_classes=10, ipc=10, iterations=max(snapshots),
                 batch_real=batch_real, mean=b.mean[0], std=b.std[0], seed=0, callback=cb)
    return rows


def run_ours(b, snapshots: list[int], overrides: dict, label: str) -> list[dict]:
    rows, wanted = [], set(snapshots)
    cfg = CondenseConfig(**{"ipc": 10, "iterations": max(snapshots), "init": "real", **overrides})
    c = Condenser(cfg, num_classes=10, image_shape=b.image_shape, mean=b.mean, std=b.std)
    # the snapshot hook copies images inside the callback; its cost is excluded from the clock
    state = {"excluded": 0.0}

    def cb(ev) -> None:
        if ev.step in wanted:
            t = time.perf_counter()
            path = SNAPS / f"{label}-{ev.step}.safetensors"
            save_file({"images": ev.images.clamp(0, 1).contiguous()}, str(path))
            rows.append({"method": label, "iterations": ev.step, "seconds": ev.seconds - state["excluded"],
                         "file": path.name, "config": {k: v for k, v in cfg.to_dict().items()
                                                       if k in ("lr_img", "momentum", "optimizer", "batch_real",
                                                                "real_precision", "real_chunk")}})
            print(f"{label} step {ev.step}: {ev.seconds - state['excluded']:.1f} s", flush=True)
            state["excluded"] += time.perf_counter() - t

    c.fit(c.make_mechanism(b.train_images, b.train_labels), callback=cb)
    return rows


def _evaluate(job: tuple[str, int, int]) -> tuple[str, float, float, list[float]]:
    name, models, epochs = job
    torch.set_num_threads(1)
    b = load_dataset("fashion-mnist")
    if name == "random":
        x, y = random_subset(b.train_images, b.train_labels, 10, seed=0)
    else:
        x = load_file(str(SNAPS / name))["images"]
        y = torch.arange(10).repeat_interleave(10)
    r = evaluate_set(x, y, b.test_images, b.test_labels, num_classes=10, mean=b.mean, std=b.std,
                     config=EvalConfig(models=models, epochs=epochs), seed=0)
    return name, r.mean, r.std, r.accuracies


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ref-snapshots", type=int, nargs="*", default=[200, 1000])
    ap.add_argument("--ours-snapshots", type=int, nargs="*", default=[100, 200, 300])
    ap.add_argument("--ours-set", nargs="*", default=["lr_img=0.125", "real_precision=bf16"],
                    help="CondenseConfig overrides key=value for securedc")
    ap.add_argument("--batch-real", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-models", type=int, default=3)
    ap.add_argument("--eval-epochs", type=int, default=300)
    ap.add_argument("--eval-jobs", type=int, default=2)
    ap.add_argument("--skip-condense", action="store_true", help="re-evaluate the saved snapshots only")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    SNAPS.mkdir(parents=True, exist_ok=True)
    out_json = RESULTS / "time_to_accuracy_fmnist.json"
    b = load_dataset("fashion-mnist")
    overrides = {"batch_real": args.batch_real, **parse_overrides(args.ours_set)}
    if args.skip_condense:
        rows = json.loads(out_json.read_text())["rows"]
    else:
        rows = []
        if args.ref_snapshots:
            rows += run_reference(b, args.ref_snapshots, args.batch_real)
        if args.ours_snapshots:
            rows += run_ours(b, args.ours_snapshots, overrides, "securedc")
    jobs = [("random", args.eval_models, args.eval_epochs)] + [(r["file"], args.eval_models, args.eval_epochs)
                                                              for r in rows]
    with mp.get_context("spawn").Pool(args.eval_jobs) as pool:
        results = {name: (m, s, accs) for name, m, s, accs in pool.map(_evaluate, jobs)}
    rows = [r for r in rows if r.get("method") != "random subset"]
    m, s, accs = results["random"]
    rows.insert(0, {"method": "random subset", "iterations": 0, "seconds": 0.0, "file": "random"})
    for r in rows:
        r["acc_mean"], r["acc_std"], r["accuracies"] = results[r["file"]]
    machine = f"{platform.machine()}, {args.threads} threads, {platform.processor() or 'cpu'}"
    protocol = (f"FMNIST IPC 10, ConvNet-3, DSA, real init, {args.batch_real} real/class/step; eval {args.eval_models} "
                f"ConvNet-3 x {args.eval_epochs} epochs on the 10k test set; securedc overrides {overrides}")
    out_json.write_text(json.dumps({"machine": machine, "protocol": protocol, "rows": rows}, indent=2))
    lines = ["| method | iterations | condensation time (s) | s/iter | test acc (%) |", "|---|---|---|---|---|"]
    for r in rows:
        spi = f"{r['seconds'] / r['iterations']:.3f}" if r["iterations"] else ""
        lines.append(f"| {r['method']} | {r['iterations']} | {r['seconds']:.0f} | {spi} | "
                     f"{100 * r['acc_mean']:.1f} ± {100 * r['acc_std']:.1f} |")
    (RESULTS / "time_to_accuracy_fmnist.md").write_text(
        f"# Time to accuracy, Fashion-MNIST IPC 10 ({machine})\n\n{protocol}\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
