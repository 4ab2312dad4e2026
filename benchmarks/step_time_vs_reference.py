"""Seconds per condensation step, side by side: the reference DM loop vs securedc (bf16 and fp32 real side).

Fashion-MNIST, IPC 10, ConvNet-3, DSA, real init; ``--steps`` steps per measurement, the three
variants interleaved ``--reps`` times (so machine noise hits all of them alike); median and min
reported. Run it on an idle machine: the per-step ratio is what this measures.

Usage:
    python benchmarks/step_time_vs_reference.py --batch-real 64 256

Writes ``benchmarks/results/step_time_vs_reference.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from reference_dm import reference_dm  # noqa: E402

from securedc.condenser import Condenser  # noqa: E402
from securedc.config import CondenseConfig  # noqa: E402
from securedc.data import load_dataset  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-real", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    b = load_dataset("fashion-mnist")

    def ref(br: int) -> float:
        t = time.perf_counter()
        reference_dm(b.train_images, b.train_labels, num_classes=10, ipc=10, iterations=args.steps, batch_real=br,
                     mean=b.mean[0], std=b.std[0], lr_img=1.0)
        return (time.perf_counter() - t) / args.steps

    def ours(br: int, precision: str) -> float:
        cfg = CondenseConfig(ipc=10, iterations=args.steps, batch_real=br, init="real", real_precision=precision)
        c = Condenser(cfg, num_classes=10, image_shape=b.image_shape, mean=b.mean, std=b.std)
        m = c.make_mechanism(b.train_images, b.train_labels)
        t = time.perf_counter()
        c.fit(m)
        return (time.perf_counter() - t) / args.steps

    rows = []
    for br in args.batch_real:
        times: dict[str, list[float]] = {"reference DM loop": [], "securedc bf16": [], "securedc fp32": []}
        for _ in range(args.reps):
            times["reference DM loop"].append(ref(br))
            times["securedc bf16"].append(ours(br, "bf16"))
            times["securedc fp32"].append(ours(br, "fp32"))
        ref_med = statistics.median(times["reference DM loop"])
        for name, ts in times.items():
            med = statistics.median(ts)
            rows.append({"batch_real": br, "variant": name, "median_s": med, "min_s": min(ts), "all_s": ts,
                         "speedup_vs_reference": ref_med / med})
            print(f"batch {br} {name}: median {med:.3f} s/step ({ref_med / med:.2f}x)", flush=True)
    machine = f"{platform.machine()} {args.threads} threads, {platform.processor() or 'cpu'}"
    payload = {"machine": machine, "steps": args.steps, "reps": args.reps, "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "step_time_vs_reference.json").write_text(json.dumps(payload, indent=2))
    lines = ["| real/class | variant | median s/step | min s/step | speed-up vs reference |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['batch_real']} | {r['variant']} | {r['median_s']:.3f} | {r['min_s']:.3f} | "
                     f"{r['speedup_vs_reference']:.2f}x |")
    (RESULTS / "step_time_vs_reference.md").write_text(
        f"# Seconds per step vs the reference DM loop ({machine})\n\nFMNIST IPC 10, ConvNet-3, DSA, real init; "
        f"{args.steps} steps per measurement, variants interleaved {args.reps}x.\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
