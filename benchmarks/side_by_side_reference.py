"""Side by side on one machine: securedc (defaults) vs the REAL reference DM code, Fashion-MNIST IPC 10.

Issue 13's target: securedc with its default settings (its default init included, ``mix``) and only
``batch_real=64`` set reaches the reference's 1000-step accuracy in at most 1/3 of the reference's
wall time.

The reference side is Zhao & Bilen's own ``main_DM.py`` (DatasetCondensation, WACV 2023), run
unmodified by ``benchmarks/reference_runner.py`` from a temp dir; this script contains none of its
code and only reads the runner's output (snapshots + ``timings.json``). To produce them:

1. Fetch https://github.com/VICO-UoE/DatasetCondensation (measured: commit 53f63a6) and copy
   ``main_DM.py``, ``utils.py``, ``networks.py`` into a temp dir, e.g. ``/tmp/refdm`` (never into
   this repository), e.g. ``git --git-dir=REPO.git show HEAD:main_DM.py > /tmp/refdm/main_DM.py``.
2. Offline data: torchvision's FashionMNIST reads ``ROOT/FashionMNIST/raw/`` (the four decompressed
   IDX files); ``for f in /usr/share/datasets/fashion-mnist/*.gz; do gunzip -c $f >
   /tmp/refdm/data/FashionMNIST/raw/$(basename $f .gz); done`` lets its ``download=True`` find them.
3. On an idle machine (nothing heavy in parallel), from ``/tmp/refdm``::

       python /path/to/securedc/benchmarks/reference_runner.py --ref /tmp/refdm --out /tmp/refdm/snaps \\
           --snapshots 200 500 1000 --threads 2 -- --dataset FashionMNIST --model ConvNet --ipc 10 \\
           --init real --Iteration 1000 --batch_real 64 --num_exp 1 --num_eval 0 \\
           --data_path /tmp/refdm/data --save_path /tmp/refdm/result

4. Then, right after it (one after the other, never concurrently)::

       python benchmarks/side_by_side_reference.py --ref-dir /tmp/refdm/snaps --ours-snapshots 100 200 300

Phase 1 times securedc's condensation (``CondenseConfig`` defaults, ``batch_real`` and
``iterations`` only; clock from before the ``Condenser`` is built, so its setup — mechanism,
``mix`` init — is counted; snapshot saving excluded). Phase 2 (untimed) scores every snapshot of
both sides with the same protocols, ``--eval-jobs`` processes of 1 thread:

* ``plain`` (the independent evaluator's protocol): ``EvalConfig(models=3, epochs=300, dsa="none")``
  — 3 fresh ConvNet-3 (GroupNorm), 300 epochs, SGD 0.01, no augmentation, 10 000 test images;
* ``dsa`` (the product's default ``EvalConfig``: the same with DSA), with ``--protocols plain dsa``.

The reference keeps its images in normalised space; they are mapped to pixel space exactly,
``x * std + mean`` with the shared public constants (0.2861, 0.3530), **unclamped** (securedc's
models normalise inside, so each model sees the reference's own tensor; ``evaluate_set`` accepts
values outside [0, 1]); ``--clamped`` also scores the last reference set clamped to [0, 1] (what an
image file would hold). securedc clamps to [0, 1] after every step, so its snapshots are its release.

Writes ``benchmarks/results/side_by_side_reference.{json,md}``; snapshots go to
``benchmarks/results/.side-by-side-snapshots/`` (not committed). ``--skip-condense`` re-scores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import platform
import shutil
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from securedc.condenser import Condenser
from securedc.config import CondenseConfig, EvalConfig
from securedc.data import load_dataset
from securedc.evaluate import evaluate_set, random_subset

RESULTS = Path(__file__).parent / "results"
SNAPS = RESULTS / ".side-by-side-snapshots"
REF_MEAN, REF_STD = 0.2861, 0.3530  # main_DM.py / utils.get_dataset('FashionMNIST')
PROTOCOLS = {
    "plain": dict(models=3, epochs=300, dsa="none"),
    "dsa": dict(models=3, epochs=300),
}


def run_ours(b, snapshots: list[int], batch_real: int) -> tuple[list[dict], dict]:
    rows, wanted = [], set(snapshots)
    state = {"excluded": 0.0}
    t_wall = time.perf_counter()
    cfg = CondenseConfig(batch_real=batch_real, iterations=max(snapshots))
    c = Condenser(cfg, num_classes=10, image_shape=b.image_shape, mean=b.mean, std=b.std)

    def cb(ev) -> None:
        if ev.step in wanted:
            t = time.perf_counter()
            path = SNAPS / f"securedc-{ev.step}.safetensors"
            save_file({"images": ev.images.detach().cpu().contiguous(),
                       "labels": c.labels.detach().cpu().contiguous()}, str(path))
            secs = t - t_wall - state["excluded"]
            rows.append({"side": "securedc", "iterations": ev.step, "seconds": secs,
                         "loop_seconds": ev.seconds - state["excluded"], "file": path.name})
            print(f"securedc step {ev.step}: {secs:.1f} s (loop {ev.seconds - state['excluded']:.1f} s)", flush=True)
            state["excluded"] += time.perf_counter() - t

    c.fit(c.make_mechanism(b.train_images, b.train_labels), callback=cb)
    resolved = {"init": cfg.resolved_init, "lr_img_pixel_units": c.lr_img, "real_precision": str(c.real_precision),
                "device": cfg.resolved_device, "overrides": {"batch_real": batch_real, "iterations": max(snapshots)},
                "config": cfg.to_dict()}
    return rows, resolved


def _load_set(kind: str, name: str, b) -> tuple[torch.Tensor, torch.Tensor]:
    if kind == "random":
        return random_subset(b.train_images, b.train_labels, 10, seed=0)
    d = load_file(str(SNAPS / name))
    if kind == "securedc":
        return d["images"], d["labels"].long()
    x = d["image_syn"] * REF_STD + REF_MEAN
    if kind == "reference-clamped":
        x = x.clamp(0, 1)
    return x, d["label_syn"].long()


def _evaluate(job: tuple[str, str, str, dict]) -> tuple[tuple[str, str, str], dict]:
    kind, name, protocol, spec = job
    torch.set_num_threads(1)
    b = load_dataset("fashion-mnist")
    x, y = _load_set(kind, name, b)
    r = evaluate_set(x, y, b.test_images, b.test_labels, num_classes=10, mean=b.mean, std=b.std,
                     config=EvalConfig(**spec), seed=0)
    out = {"acc_mean": r.mean, "acc_std": r.std, "accuracies": r.accuracies, "eval_seconds": r.seconds,
           "pixel_range": [float(x.min()), float(x.max())]}
    print(f"eval {kind} {name} {protocol}: {100 * r.mean:.2f} ± {100 * r.std:.2f} ({r.seconds:.0f} s)", flush=True)
    return (kind, name, protocol), out


def verdict(rows: list[dict], protocol: str) -> dict:
    def acc(r):
        return r["evals"].get(protocol)

    ref = [r for r in rows if r["side"] == "reference" and acc(r)]
    ours = sorted((r for r in rows if r["side"] == "securedc" and acc(r)), key=lambda r: r["iterations"])
    if not ref or not ours:
        return {"protocol": protocol, "verdict": "not evaluated"}
    target_row = max(ref, key=lambda r: r["iterations"])
    target, tol = acc(target_row)["acc_mean"], acc(target_row)["acc_std"]
    budget = target_row["seconds"] / 3
    hit = next((r for r in ours if acc(r)["acc_mean"] >= target - tol), None)
    out = {"protocol": protocol, "reference_iterations": target_row["iterations"],
           "reference_seconds": target_row["seconds"], "reference_acc": target, "reference_std": tol,
           "budget_seconds": budget}
    if hit is None:
        out.update(verdict="MISSED: no securedc snapshot reached the reference's accuracy within its std",
                   best_securedc_acc=max(acc(r)["acc_mean"] for r in ours))
    else:
        ok = hit["seconds"] <= budget
        out.update(first_iterations=hit["iterations"], first_seconds=hit["seconds"], first_acc=acc(hit)["acc_mean"],
                   time_ratio=hit["seconds"] / target_row["seconds"], met=ok,
                   verdict=("MET" if ok else "MISSED") + f": securedc step {hit['iterations']} "
                           f"({100 * acc(hit)['acc_mean']:.2f} %) after {hit['seconds']:.0f} s = "
                           f"{hit['seconds'] / target_row['seconds']:.2f} x the reference's "
                           f"{target_row['seconds']:.0f} s (target <= 1/3 = {budget:.0f} s)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ref-dir", required=True, help="reference_runner.py's --out (snapshots + timings.json)")
    ap.add_argument("--ours-snapshots", type=int, nargs="*", default=[100, 200, 300])
    ap.add_argument("--batch-real", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--protocols", nargs="+", default=["plain"], choices=sorted(PROTOCOLS))
    ap.add_argument("--random-baseline", action="store_true", help="also score a random real subset")
    ap.add_argument("--clamped", action="store_true", help="also score the reference's last snapshot clamped to [0, 1]")
    ap.add_argument("--eval-jobs", type=int, default=2)
    ap.add_argument("--eval-models", type=int, default=3)
    ap.add_argument("--eval-epochs", type=int, default=300)
    ap.add_argument("--note", action="append", default=[], help="a line for the results' notes (repeatable)")
    ap.add_argument("--skip-condense", action="store_true", help="re-score the saved snapshots only")
    args = ap.parse_args()
    for p in PROTOCOLS.values():
        p.update(models=args.eval_models, epochs=args.eval_epochs)
    torch.set_num_threads(args.threads)
    SNAPS.mkdir(parents=True, exist_ok=True)
    out_json = RESULTS / "side_by_side_reference.json"
    ref_dir = Path(args.ref_dir)
    timings = json.loads((ref_dir / "timings.json").read_text())
    prev = json.loads(out_json.read_text()) if out_json.exists() else {}
    if args.skip_condense:
        rows = [{k: v for k, v in r.items() if k != "evals"} for r in prev["rows"] if r["side"] == "securedc"]
        ours_cfg = prev["securedc"]
    else:
        b = load_dataset("fashion-mnist")
        assert b.mean == (REF_MEAN,) and b.std == (REF_STD,), (b.mean, b.std)
        rows, ours_cfg = run_ours(b, args.ours_snapshots, args.batch_real)
        del b
        # the timed phase's numbers are kept at once (phase 2 can be resumed with --skip-condense)
        out_json.write_text(json.dumps({"partial": "condensation done, scores pending", "securedc": ours_cfg,
                                        "rows": rows}, indent=2, default=str))
    for s in timings["snapshots"]:
        shutil.copyfile(ref_dir / s["file"], SNAPS / s["file"])
        rows.append({"side": "reference", "iterations": s["iterations"], "seconds": s["seconds"], "file": s["file"]})
    rows.sort(key=lambda r: (r["side"] != "reference", r["iterations"]))
    last_ref = max((r for r in rows if r["side"] == "reference"), key=lambda r: r["iterations"])
    if args.clamped:
        rows.append({"side": "reference, clamped to [0, 1]", "iterations": last_ref["iterations"],
                     "seconds": last_ref["seconds"], "file": last_ref["file"]})
    if args.random_baseline:
        rows.insert(0, {"side": "random real subset", "iterations": 0, "seconds": 0.0, "file": "random"})
    kinds = {"reference": "reference", "reference, clamped to [0, 1]": "reference-clamped",
             "securedc": "securedc", "random real subset": "random"}
    # every finished score is appended to the cache at once (an interrupted phase 2 resumes with
    # --skip-condense); a new condensation starts a new cache
    cache_file = SNAPS / "eval-cache.jsonl"
    if not args.skip_condense:
        cache_file.unlink(missing_ok=True)

    def key_of(kind: str, name: str, protocol: str) -> str:
        spec = PROTOCOLS[protocol]
        return f"{kind}|{name}|{protocol}|{spec['models']}x{spec['epochs']}"

    cache = {}
    if cache_file.exists():
        for line in cache_file.read_text().splitlines():
            k, v = json.loads(line)
            cache[k] = v

    def priority(r: dict) -> int:  # the verdict's rows first
        return 0 if r["side"] == "securedc" or r is last_ref else 1 if r["side"] == "reference" else 2

    jobs = [(kinds[r["side"]], r["file"], protocol, PROTOCOLS[protocol])
            for protocol in args.protocols for r in sorted(rows, key=priority)
            if key_of(kinds[r["side"]], r["file"], protocol) not in cache]
    if jobs:
        with mp.get_context("spawn").Pool(args.eval_jobs) as pool, cache_file.open("a") as fh:
            for (kind, name, protocol), out in pool.imap_unordered(_evaluate, jobs):
                cache[key_of(kind, name, protocol)] = out
                fh.write(json.dumps([key_of(kind, name, protocol), out]) + "\n")
                fh.flush()
    for r in rows:
        r["evals"] = {p: cache[key_of(kinds[r["side"]], r["file"], p)] for p in args.protocols
                      if key_of(kinds[r["side"]], r["file"], p) in cache}
    verdicts = [verdict(rows, p) for p in args.protocols]
    machine = (f"{platform.machine()}, {args.threads} threads ({torch.get_num_threads()} torch threads), "
               f"{platform.processor() or 'cpu'}, torch {torch.__version__}")
    commands = {
        "reference": "python benchmarks/reference_runner.py --ref /tmp/refdm --out /tmp/refdm/snaps "
                     + " ".join(["--snapshots", *(str(s["iterations"]) for s in timings["snapshots"]),
                                 "--threads", str(timings["threads"]), "--", *timings["main_dm_args"]]),
        "securedc": "python benchmarks/side_by_side_reference.py --ref-dir /tmp/refdm/snaps " + " ".join(
            ["--ours-snapshots", *(str(r["iterations"]) for r in rows if r["side"] == "securedc"),
             "--batch-real", str(args.batch_real), "--threads", str(args.threads), "--protocols", *args.protocols,
             "--eval-models", str(args.eval_models), "--eval-epochs", str(args.eval_epochs)]
            + (["--random-baseline"] if args.random_baseline else []) + (["--clamped"] if args.clamped else [])),
    }
    doc = {"machine": machine, "commands": commands, "reference": {k: v for k, v in timings.items() if k != "snapshots"},
           "securedc": ours_cfg,
           "protocols": {p: {**dataclasses.asdict(EvalConfig()), **PROTOCOLS[p]} for p in args.protocols},
           "clocks": {"reference": timings["clock"],
                      "securedc": "wall seconds from before the Condenser is built (setup and mix init counted); "
                                  "snapshot saving excluded; loop_seconds: the fit loop only"},
           "rows": rows, "verdicts": verdicts, "notes": args.note}
    out_json.write_text(json.dumps(doc, indent=2, default=str))
    head = "| side | iterations | condensation time (s) | s/iter | " + " | ".join(
        f"test acc % ({p})" for p in args.protocols) + " |"
    lines = [head, "|" + "---|" * (4 + len(args.protocols))]
    for r in rows:
        spi = f"{r['seconds'] / r['iterations']:.3f}" if r["iterations"] else ""
        accs = [f"{100 * r['evals'][p]['acc_mean']:.2f} ± {100 * r['evals'][p]['acc_std']:.2f}" if p in r["evals"]
                else "" for p in args.protocols]
        lines.append(f"| {r['side']} | {r['iterations']} | {r['seconds']:.0f} | {spi} | " + " | ".join(accs) + " |")
    md = [f"# securedc vs the reference DM code (main_DM.py), Fashion-MNIST IPC 10, same machine\n",
          f"Machine: {machine}. Reference: VICO-UoE/DatasetCondensation `main_DM.py` "
          f"(commit {timings.get('commit') or '?'}), run unmodified by `benchmarks/reference_runner.py` "
          f"(shim: {'; '.join(timings.get('shims', [])) or 'none'}); its evaluation switched off (`--num_eval 0`), "
          f"snapshots scored here. securedc: `CondenseConfig` defaults (init {ours_cfg['init']}, lr_img "
          f"{ours_cfg['lr_img_pixel_units']:.4g} pixel units, real side {ours_cfg['real_precision']}) with only "
          f"`batch_real={args.batch_real}` and the iteration count set. Both sides 64 real images per class per "
          f"step, {args.threads} threads, run one after the other on an otherwise idle machine.\n",
          "Protocols: " + "; ".join(
              f"`{p}` = {args.eval_models} fresh ConvNet-3 (GroupNorm) x {args.eval_epochs} epochs, SGD lr 0.01 (momentum 0.9, wd 5e-4, batch 256, "
              f"lr x0.1 at half), {'no augmentation (the independent protocol)' if p == 'plain' else 'DSA (EvalConfig default)'}"
              for p in args.protocols) + "; 10 000 test images. Reference images mapped to pixels as "
          "x * 0.3530 + 0.2861, unclamped" + (" (and clamped, last row)" if args.clamped else "") + ".\n",
          "Clocks: reference from the start of iteration 0 (after its data loading and real init); securedc from "
          "before the Condenser is built (setup and init counted); snapshot saving excluded on both sides.\n",
          "\n".join(lines) + "\n",
          "Verdict (first securedc snapshot with accuracy >= the reference's 1000-step mean - its std; "
          "target: its time <= 1/3 of the reference's):\n",
          "\n".join(f"- {v['protocol']}: {v['verdict']}" for v in verdicts) + "\n",
          *(["Notes:\n", "\n".join(f"- {n}" for n in args.note) + "\n"] if args.note else []),
          "Commands:\n\n```\n" + commands["reference"] + "\n" + commands["securedc"] + "\n```\n"]
    (RESULTS / "side_by_side_reference.md").write_text("\n".join(md))
    print("\n".join(lines))
    for v in verdicts:
        print(v["protocol"], v["verdict"])


if __name__ == "__main__":
    main()
