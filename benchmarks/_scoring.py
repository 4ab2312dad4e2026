"""Scoring a saved synthetic set with the independent protocol (shared by the FMNIST benchmarks).

The protocol: 3 fresh ConvNet-3 (GroupNorm) × 300 epochs, SGD lr 0.01 (momentum 0.9, wd 5e-4,
batch 256, lr × 0.1 at half), no augmentation, the 10 000 Fashion-MNIST test images; one thread per
process so that several sets are scored side by side.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import platform
from pathlib import Path

import torch
from safetensors.torch import load_file

from securedc.config import EvalConfig
from securedc.data import load_dataset
from securedc.evaluate import evaluate_set

PLAIN = dict(models=3, epochs=300, dsa="none")


def score_file(path: str) -> tuple[str, dict]:
    """``(path, {acc_mean, acc_std, accuracies})`` of the set saved at ``path`` (``images``, ``labels``)."""
    torch.set_num_threads(1)
    b = load_dataset("fashion-mnist")
    d = load_file(path)
    r = evaluate_set(d["images"], d["labels"].long(), b.test_images, b.test_labels, num_classes=10, mean=b.mean,
                     std=b.std, config=EvalConfig(**PLAIN), seed=0)
    print(f"eval {path}: {100 * r.mean:.2f} ± {100 * r.std:.2f}", flush=True)
    return path, {"acc_mean": r.mean, "acc_std": r.std, "accuracies": r.accuracies}


#: how the tables state the protocol above.
PROTOCOL_MD = ("Evaluation (the independent protocol): 3 fresh ConvNet-3 × 300 epochs, SGD lr 0.01, no augmentation, "
               "10 000 test images.")


def score_rows(rows: list[dict], snaps: Path, *, jobs: int) -> None:
    """Score every row's saved set (``snaps / row["file"]``) in ``jobs`` processes; adds the scores to the rows."""
    with mp.get_context("spawn").Pool(jobs) as pool:
        scores = dict(pool.imap_unordered(score_file, [str(snaps / r["file"]) for r in rows]))
    for r in rows:
        r.update(scores[str(snaps / r["file"])])


def machine_line(threads: int) -> str:
    """The machine a table was measured on, as the tables state it."""
    return f"{platform.machine()}, {threads} threads, {platform.processor() or 'cpu'}, torch {torch.__version__}"


def write_results(path: Path, doc: dict, lines: list[str]) -> None:
    """Write ``path``.json (``doc``) and ``path``.md (``lines``)."""
    path.with_suffix(".json").write_text(json.dumps(doc, indent=2))
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
