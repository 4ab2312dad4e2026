"""An ordinary PyTorch training loop on sklearn digits, switched to a condensed set by two lines.

Run::

    python examples/plain_pytorch.py                 # trains on the 1347 real training images
    python examples/plain_pytorch.py --condensed     # trains on 10 condensed images per class

The switch is this diff (the condense call is one statement; everything else is unchanged)::

    -    loader = DataLoader(train_set, batch_size=64, shuffle=True)
    +    train_set = condense(train_set, ipc=args.ipc, iterations=args.iterations, batch_real=args.batch_real,
    +                         cache_dir=args.cache_dir)
    +    loader = condensed_loader(train_set, batch_size=64)

The second run with ``--condensed`` loads the cached file (~/.cache/securedc/condensed by
default) instead of condensing again. Small settings (``--iterations 50 --epochs 30``) run
in well under a minute on two CPU cores.
"""

from __future__ import annotations

import argparse
import time

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from securedc.plugins.torch import condense, condensed_loader


def digits() -> tuple[TensorDataset, TensorDataset]:
    """sklearn digits as [N, 1, 8, 8] float tensors in [0, 1]; a fixed 75/25 split."""
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    cut = int(0.75 * len(y))
    return TensorDataset(x[perm[:cut]], y[perm[:cut]]), TensorDataset(x[perm[cut:]], y[perm[cut:]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--condensed", action="store_true", help="train on a condensed set instead")
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=200, help="condensation steps")
    parser.add_argument("--batch-real", type=int, default=64, help="real images per class per condensation step")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)

    train_set, test_set = digits()
    if args.condensed:
        train_set = condense(train_set, ipc=args.ipc, iterations=args.iterations, batch_real=args.batch_real,
                             cache_dir=args.cache_dir)
        loader = condensed_loader(train_set, batch_size=64)
    else:
        loader = DataLoader(train_set, batch_size=64, shuffle=True)

    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    t0 = time.perf_counter()
    for _ in range(args.epochs):
        for x, y in loader:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    x_test, y_test = test_set.tensors
    with torch.no_grad():
        acc = (model(x_test).argmax(1) == y_test).float().mean().item()
    source = f"condensed ({len(train_set)} images)" if args.condensed else f"real ({len(train_set)} images)"
    print(f"train set: {source}; test accuracy {acc:.3f}; training {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
