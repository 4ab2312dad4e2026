"""Robustness benchmark: Fashion-MNIST IPC 10 — plain DM vs. robust-feature matching (issue 14).

For every seed, condenses the full training set (``--dataset``, default Fashion-MNIST: 60 000
images) with the product's defaults (``securedc condense --dataset fashion-mnist``; ``--epsilon``
for DP, default not private) and with the adversarial term
(``--adv-eps 8/255``: real features under an extractor adversarially trained on S, post-processing
only), optionally also with the robust teacher's soft labels (``--soft-labels``); draws a random
real subset of the same size; then trains models on each set under both training protocols and
attacks them with the robustness audit's attacks at its quick budgets (the headline attacks only:
no sanity-check suite, which the product's audit runs on every release):

- ``standard``: fresh ConvNet-3 trained on the set with the evaluation protocol given by
  ``--eval-epochs`` / ``--eval-dsa`` (default: the independent evaluator's — 300 epochs, SGD 0.01,
  no augmentation);
- ``adversarial``: one ConvNet-3 trained on the set with fast adversarial training (FGSM from a
  random start, the quick audit's recipe).

Attacks (pixel-space L∞, normalisation inside the model): PGD-20 with 2 restarts and AutoAttack
assembled from torchattacks (APGD-CE → APGD-T → FAB-T → Square, reduced budgets — the numbers are
upper bounds on robust accuracy), on the same ``--test`` real test images for every set.

    python benchmarks/robust_fmnist.py --seeds 0 1 2 --out benchmarks/results/robust_fmnist
    python benchmarks/robust_fmnist.py --dataset digits --epsilon 8 --out benchmarks/results/robust_digits_dp8
    python benchmarks/robust_fmnist.py --epsilon 8 --public-images 10000 --variants dm teacher \\
        --out benchmarks/results/robust_fmnist_dp8_public
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from securedc.audits.robustness import AttackSettings, attack_subsample, audit_model, autoattack_accuracy
from securedc.concurrency import run_concurrently
from securedc.condensation import run_condensation
from securedc.config import CondenseConfig, EvalConfig, parse_number
from securedc.data import DatasetBundle, load_dataset
from securedc.evaluate import random_subset, train_model
from securedc.public_extractor import fit_public_extractor
from securedc.robust import PGDRecipe

METRICS = ("clean_acc", "pgd20_acc", "autoattack_acc", "at_clean_acc", "at_pgd20_acc", "at_autoattack_acc")
PUBLIC_SPLIT_SEED = 12345
"""Seed of the permutation that picks the ``--public-images`` (independent of the run seeds)."""


def split_public(bundle: DatasetBundle, n: int) -> tuple[DatasetBundle, DatasetBundle]:
    """Split the training set in two disjoint parts: ``(private, public)``, ``n`` seeded images public.

    Both parts keep the real test split (used only to evaluate). The public part stands for data a user
    declares public (e.g. a licensed public set from the same domain); the private part is what is condensed.
    """
    idx = torch.randperm(bundle.train_images.shape[0], generator=torch.Generator().manual_seed(PUBLIC_SPLIT_SEED))
    parts = []
    for name, keep in (("private", idx[n:].sort().values), ("public", idx[:n].sort().values)):
        parts.append(dataclasses.replace(  # fingerprint "" = recomputed for the part
            bundle, name=f"{bundle.name}-{name}", train_images=bundle.train_images[keep],
            train_labels=bundle.train_labels[keep], fingerprint="",
            source=f"{bundle.source} (training images {name}: {keep.numel()} of a seeded split)"))
    return parts[0], parts[1]


def _config(variant: str, args: argparse.Namespace, seed: int) -> CondenseConfig:
    """``dm``: the product's defaults; ``term``: with ``--adv-eps`` (and the teacher's soft labels,
    post-processing of the same S, when ``term+soft`` is also benchmarked)."""
    options: dict = dict(ipc=args.ipc, iterations=args.iterations, seed=seed, epsilon=args.epsilon)
    if args.batch_real:
        options["batch_real"] = args.batch_real
    if variant == "term":
        options["adv_eps"] = args.eps
        options["soft_labels"] = "term+soft" in args.variants
    if variant == "teacher":  # DM plus soft labels of a robust teacher (non-private: trained on the real data)
        options.update(adv_eps=args.eps, adv_weight=0.0, soft_labels=True)
        if args.teacher_file:  # trained on the declared-public part (--public-images)
            options["robust_extractor"] = args.teacher_file
    return CondenseConfig.from_options(**options)


def _evaluate(sets: dict[str, tuple], bundle, *, eps: float, eval_config: EvalConfig, seed: int,
              test: int, protocols: tuple[str, ...] = ("standard", "adversarial"),
              aa_test: int = 0) -> dict[str, dict[str, float]]:
    """Every model of one seed trained side by side (standard protocol and fast AT), then attacked on
    the same seeded test subsample: PGD-20 with 2 restarts (keyed starts: side by side too) and the
    quick AutoAttack (its parts draw from the global RNG: one model at a time, under ``fork_rng``)."""
    tx, ty = attack_subsample(bundle.test_images, bundle.test_labels, test, seed)
    recipe, settings = PGDRecipe.fast(eps), AttackSettings.quick()
    jobs, slots = [], []
    for name, (images, labels, soft, _) in sets.items():
        for protocol in protocols:
            for k in range(eval_config.models if protocol == "standard" else 1):
                jobs.append(functools.partial(
                    train_model, images, labels, num_classes=bundle.num_classes, mean=bundle.mean, std=bundle.std,
                    config=eval_config, seed=seed * 1000 + k, soft_labels=soft,
                    adversarial=recipe if protocol == "adversarial" else None))
                slots.append((name, protocol))
    models = run_concurrently(jobs)
    with torch.random.fork_rng():
        heads = run_concurrently([functools.partial(audit_model, m, tx, ty, eps=eps, num_classes=bundle.num_classes,
                                                    seed=seed, settings=settings, sanity=False) for m in models])
        ax, ay = (tx[:aa_test], ty[:aa_test]) if aa_test else (tx, ty)
        auto = [autoattack_accuracy(m, ax, ay, eps=eps, num_classes=bundle.num_classes, settings=settings,
                                    seed=seed)[0] for m in models]
    out: dict[str, dict[str, list[float]]] = {}
    for (name, protocol), head, aa in zip(slots, heads, auto):
        prefix = "" if protocol == "standard" else "at_"
        row = out.setdefault(name, {})
        for key, value in (("clean_acc", head.metrics["clean_acc"]), ("pgd20_acc", head.metrics["pgd20_acc"]),
                           ("autoattack_acc", aa)):
            row.setdefault(prefix + key, []).append(float(value))
    return {name: {k: statistics.fmean(v) for k, v in row.items()} for name, row in out.items()}


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _ci95(values: list[float]) -> tuple[float, float] | None:
    """Mean and the half-width of its two-sided 95 % Student-t interval (``None`` for fewer than 2 values)."""
    from scipy.stats import t  # a dependency of scikit-learn, which securedc requires

    if len(values) < 2:
        return None
    mean, sd = _mean_sd(values)
    return mean, float(t.ppf(0.975, len(values) - 1)) * sd / len(values) ** 0.5


def _paired(rows: dict[str, list[dict]], base: str = "dm") -> dict[str, dict[str, tuple[float, float] | None]]:
    """Per metric, every set's difference to ``base`` on the same seed: mean and 95 % t half-width."""
    by_seed = {r["seed"]: r for r in rows.get(base, [])}
    out: dict[str, dict[str, tuple[float, float] | None]] = {}
    for name, rs in rows.items():
        if name == base or not by_seed:
            continue
        pairs = [(r, by_seed[r["seed"]]) for r in rs if r["seed"] in by_seed]
        out[name] = {k: _ci95([a[k] - b[k] for a, b in pairs]) for k in METRICS if pairs and k in pairs[0][0]}
    return out


def merge_rows(runs: list[dict[str, list[dict]]]) -> dict[str, list[dict]]:
    """Union of several runs' per-seed rows (e.g. one run per training protocol): one row per set and seed
    with every run's metrics; a metric measured twice keeps the first run's value."""
    out: dict[str, dict[int, dict]] = {}
    for rows in runs:
        for name, rs in rows.items():
            for r in rs:
                merged = out.setdefault(name, {}).setdefault(r["seed"], {})
                for key, value in r.items():
                    merged.setdefault(key, value)
    return {name: [by_seed[s] for s in sorted(by_seed)] for name, by_seed in out.items()}


def _write(rows: dict[str, list[dict]], args: argparse.Namespace, elapsed: float) -> str:
    """Write ``OUT.json`` and ``OUT.md`` from the rows measured so far; returns the Markdown."""
    measured = sorted({r["seed"] for rs in rows.values() for r in rs})
    summary = {name: {k: _mean_sd([r[k] for r in rs]) for k in (*METRICS, "condensation_seconds") if rs and k in rs[0]}
               for name, rs in rows.items()}
    protocol = {
        "dataset": f"{args.dataset} (full training split; {args.test} test images, a seeded subsample, attacked)",
        "epsilon": args.epsilon,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, cpu",
        "ipc": args.ipc, "iterations": args.iterations, "batch_real": args.batch_real or "product default",
        "condense": "product defaults (mean-embedding, statistics bank, DSA) at the given epsilon; variants add "
                    f"--adv-eps {args.eps} (term: robust-feature matching, extractor adversarially trained on S; "
                    "term+soft: the same S with that extractor's soft labels; teacher: plain DM, --adv-weight 0 "
                    "--soft-labels, soft labels of "
                    + ("the network adversarially trained on the declared-public split (public_teacher), given as "
                       "--robust-extractor; condensation seconds exclude its training" if args.public_images else
                       "a teacher adversarially trained (fast AT) on 10 000 real training images, which a "
                       "non-private run may use; condensation seconds include the teacher's training") + ")",
        "protocols": list(args.protocols),
        "standard_protocol": f"{args.eval_models} ConvNet-3 per set and seed x {args.eval_epochs} epochs, SGD lr 0.01, "
                             f"augmentation {args.eval_dsa}",
        "adversarial_protocol": "1 ConvNet-3 per set and seed, fast adversarial training (FGSM-RS, step 1.25 eps)",
        "attacks": f"pixel-space Linf eps {args.eps}: PGD-20 (2 restarts) and quick AutoAttack (APGD-CE, APGD-T, "
                   "FAB-T, Square at reduced budgets: upper bounds)"
                   + (f" on the first {args.aa_test} of the attacked images" if args.aa_test else ""),
        "seeds": measured,
    }
    if args.public_images:
        protocol["public_split"] = (
            f"{args.public_images} training images (seeded permutation, seed {PUBLIC_SPLIT_SEED}) declared public and "
            "removed from the condensed data; the teacher variant's soft labels come from a network adversarially "
            "trained on them (`securedc extractor` recipe, then --robust-extractor); dm, teacher and the random subset "
            "use only the private remainder")
        protocol["public_teacher"] = args.teacher_description
    paired = _paired(rows)
    out = {"protocol": protocol, "per_seed": rows, "summary": summary, "total_seconds": elapsed,
           "paired_vs_dm_ci95": paired}
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(out, indent=2))

    def cell(name: str, key: str) -> str:
        if key not in summary[name]:
            return ""
        m, s = summary[name][key]
        return f"{100 * m:.1f} ± {100 * s:.1f}"

    lines = [
        f"# Robustness benchmark: {args.dataset} IPC {args.ipc}, L∞ {args.eps}"
        + ("" if args.epsilon == "inf" else f", DP ε = {args.epsilon}"),
        "",
        f"Machine: {protocol['machine']}. Mean ± sd over seeds {measured} (of {args.seeds} asked). "
        + (f"Merged (`python benchmarks/robust_fmnist.py --merge {' '.join(args.merge)} --out {args.out}`) from runs "
           "with the same seeds and settings, one per training protocol; their commands are in the merged files' "
           "Markdown. Settings: " if args.merge else "Command: ")
        + f"`python benchmarks/robust_fmnist.py --dataset {args.dataset} --epsilon {args.epsilon} --seeds {' '.join(map(str, args.seeds))} --variants {' '.join(args.variants)} "
        f"--iterations {args.iterations} --batch-real {args.batch_real} --eps {args.eps} --eval-epochs {args.eval_epochs} "
        f"--eval-dsa {args.eval_dsa} --test {args.test} --aa-test {args.aa_test} --protocols {' '.join(args.protocols)} "
        f"--out {args.out}`",
        "",
        "| set | condensation s | clean | PGD-20 | AutoAttack | AT: clean | AT: PGD-20 | AT: AutoAttack |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in summary:
        secs = summary[name].get("condensation_seconds", (0.0, 0.0))[0]
        lines.append(f"| {name} | {secs:.0f} | " + " | ".join(cell(name, k) for k in METRICS) + " |")
    if any(v is not None for cells in paired.values() for v in cells.values()):
        keys = [k for k in METRICS if any(k in cells for cells in paired.values())]
        lines += ["", f"Paired differences against plain DM (same seed; mean and 95 % Student-t interval over "
                      f"{len(measured)} seeds, points):", "",
                  "| set | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
        for name, cells in paired.items():
            lines.append(f"| {name} | " + " | ".join(
                "" if cells.get(k) is None else f"{100 * cells[k][0]:+.1f} ± {100 * cells[k][1]:.1f}" for k in keys)
                + " |")
    lines += ["", "Protocol:", "", "```json", json.dumps(protocol, indent=1), "```", ""]
    md = "\n".join(lines)
    if path.with_suffix(".md").exists():  # keep the hand-written reading of an earlier write
        old = path.with_suffix(".md").read_text()
        if "\n## Reading" in old:
            md += old[old.index("\n## Reading"):]
    path.with_suffix(".md").write_text(md)
    return md


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", default=["dm", "teacher", "term", "term+soft"],
                    choices=["dm", "teacher", "term", "term+soft"])
    ap.add_argument("--protocols", nargs="+", default=["standard", "adversarial"], choices=["standard", "adversarial"],
                    help="training protocols of the models attacked")
    ap.add_argument("--aa-test", type=int, default=0, help="of the --test images, how many AutoAttack attacks (0 = all)")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--epsilon", default="inf", help="DP target of both condensations (inf = not private)")
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--iterations", type=int, default=300, help="condensation steps (product default 300)")
    ap.add_argument("--batch-real", type=int, default=0, help="real images per class per release (0 = product default)")
    ap.add_argument("--eps", default="8/255")
    ap.add_argument("--eval-models", type=int, default=1, help="standard-protocol models per set and seed")
    ap.add_argument("--eval-epochs", type=int, default=300)
    ap.add_argument("--eval-dsa", default="none", help="augmentation of the evaluation protocol ('none' = the evaluator's)")
    ap.add_argument("--test", type=int, default=500, help="real test images attacked (the same for every set)")
    ap.add_argument("--public-images", type=int, default=0,
                    help="declare this many training images public: the teacher variant's soft labels come from a "
                         "network adversarially trained on them, everything else uses the rest (DP with a public teacher)")
    ap.add_argument("--out", default="benchmarks/results/robust_fmnist")
    ap.add_argument("--merge", nargs="+", default=[], metavar="JSON",
                    help="write OUT from the per-seed rows of these earlier runs (same seeds and settings, e.g. one per "
                         "training protocol); runs nothing")
    ap.add_argument("--render", action="store_true",
                    help="rewrite OUT.md (and OUT.json's summaries) from OUT.json's per-seed rows; runs nothing")
    args = ap.parse_args()
    eps = parse_number(args.eps, name="--eps")
    if args.merge:
        saved = [json.loads(Path(p).read_text()) for p in args.merge]
        args.teacher_description = saved[0]["protocol"].get("public_teacher")
        args.protocols = list(dict.fromkeys(p for s in saved for p in s["protocol"]["protocols"]))
        print(_write(merge_rows([s["per_seed"] for s in saved]), args, sum(s["total_seconds"] for s in saved)))
        return
    if args.render:
        saved = json.loads(Path(args.out).with_suffix(".json").read_text())
        args.teacher_description = saved["protocol"].get("public_teacher")
        print(_write(saved["per_seed"], args, saved["total_seconds"]))
        return

    t_all = time.perf_counter()
    bundle = load_dataset(args.dataset)
    args.teacher_file, args.teacher_description = None, None
    workdir = tempfile.TemporaryDirectory(prefix="securedc-robust-")
    if args.public_images:
        bundle, public = split_public(bundle, args.public_images)
        teacher = fit_public_extractor(public, eps=eps, images=0, seed=0)
        args.teacher_file = str(Path(workdir.name) / "public_teacher.safetensors")
        teacher.save(args.teacher_file)
        args.teacher_description = teacher.description
        print(f"public teacher: {json.dumps(teacher.description)}", flush=True)
    eval_config = EvalConfig(models=args.eval_models, epochs=args.eval_epochs, dsa=args.eval_dsa)
    rows: dict[str, list[dict]] = {v: [] for v in [*args.variants, "random subset"]}
    for seed in args.seeds:
        sets: dict[str, tuple] = {}
        for variant in [v for v in ("dm", "term", "teacher")
                        if v in args.variants or (v == "term" and "term+soft" in args.variants)]:
            t0 = time.perf_counter()
            cond = run_condensation(_config(variant, args, seed), bundle)
            seconds = time.perf_counter() - t0
            print(f"seed {seed} {variant}: condensed in {seconds:.0f} s", flush=True)
            if variant == "teacher":
                sets[variant] = (cond.images, cond.labels, cond.soft_labels, seconds)
            elif variant in args.variants:
                sets[variant] = (cond.images, cond.labels, None, seconds)
            if variant == "term" and cond.soft_labels is not None:  # the same S, with the robust teacher's soft labels
                sets["term+soft"] = (cond.images, cond.labels, cond.soft_labels, seconds)
        x, y = random_subset(bundle.train_images, bundle.train_labels, args.ipc, seed=seed)
        sets["random subset"] = (x, y, None, 0.0)
        t0 = time.perf_counter()
        scores = _evaluate(sets, bundle, eps=eps, eval_config=eval_config, seed=seed, test=args.test,
                           protocols=tuple(args.protocols), aa_test=args.aa_test)
        for name, (_, _, _, seconds) in sets.items():
            row = dict(scores[name], seed=seed, condensation_seconds=seconds)
            rows[name].append(row)
            print(f"seed {seed} {name}: " + ", ".join(f"{k} {100 * row[k]:.1f}" for k in METRICS if k in row), flush=True)
        print(f"seed {seed}: evaluated in {time.perf_counter() - t0:.0f} s", flush=True)
        md = _write(rows, args, time.perf_counter() - t_all)  # after every seed: a long run leaves results
    workdir.cleanup()
    print(md)


if __name__ == "__main__":
    main()
