"""Scoring a saved synthetic set with the independent protocol (shared by the FMNIST benchmarks).

The protocol: 3 fresh ConvNet-3 (GroupNorm) × 300 epochs, SGD lr 0.01 (momentum 0.9, wd 5e-4,
batch 256, lr × 0.1 at half), no augmentation, the 10 000 Fashion-MNIST test images; one thread per
process so that several sets are scored side by side.
"""

from __future__ import annotations

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
