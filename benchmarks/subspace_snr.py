"""Signal-to-noise of one DP distribution release with and without the subspace (securedc.subspace).

For random ConvNet-3 networks (the releases' networks) on Fashion-MNIST: the per-class means of the
DP-mode per-sample vectors (features minus the public centre, optionally projected on K principal
directions, unit-normalised), their between-class deviation (mean squared distance of a class mean to
the mean of the class means), and the noise energy ``width · τ²`` of one release with
``τ = σ / (q · N_c)`` (σ, q and N_c below: FMNIST at ε = 1 with the product's bank settings). The
subspace is spanned by either 100 k-means centres of the condensed part (10 per class; non-private
stand-ins for the DP sub-class centres the product uses) or 2 000 held-out training images (public
auxiliary data, as in Dosser). The ratio is a per-release diagnostic: the end-to-end effect on
accuracy is in ``dp_subspace_fmnist_eps1*.md`` (none).

Usage: ``python benchmarks/subspace_snr.py [--networks 2] [--out benchmarks/results/subspace_snr]``
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from securedc.batching import chunked
from securedc.data.registry import load_dataset
from securedc.discrepancy import create_discrepancy
from securedc.functional import class_means
from securedc.kmeans import kmeans_centres
from securedc.models.registry import create_model
from securedc.subspace import principal_basis
from securedc.terms.distribution import public_center

SIGMA, Q = 5.119, 0.1  # ε = 1, R = 50, δ = 1e-5 (dp_bank_fmnist_centres.md)


def _embed(net: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return chunked(net.embed, images, 1000).float()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", type=int, default=2)
    ap.add_argument("--members", type=int, default=20_000, help="condensed images whose class means are the signal")
    ap.add_argument("--dims", type=int, nargs="+", default=[16, 32, 64, 99])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "subspace_snr")
    args = ap.parse_args()
    bundle = load_dataset("fashion-mnist")
    perm = torch.randperm(len(bundle.train_images), generator=torch.Generator().manual_seed(12345))
    public, members = perm[:2000], perm[10_000:10_000 + args.members]
    x, y = bundle.train_images[members], bundle.train_labels[members]
    per_class = (len(bundle.train_images) - 10_000) / bundle.num_classes
    tau2 = (SIGMA / (Q * per_class)) ** 2
    centres = torch.cat([kmeans_centres(x[y == c], 10, generator=torch.Generator().manual_seed(c))
                         for c in range(bundle.num_classes)])
    rows = []
    for seed in range(args.networks):
        net = create_model("convnet", in_channels=1, num_classes=bundle.num_classes, image_size=(28, 28),
                           mean=bundle.mean, std=bundle.std, generator=torch.Generator().manual_seed(seed)).eval()
        features = _embed(net, x)
        # the DP-mode per-sample vectors exactly as the distribution term makes them (centre, basis, normalise)
        disc = create_discrepancy("mean-embedding", normalize=True)
        disc.center = public_center(net, bundle.image_shape, generator=torch.Generator().manual_seed(100 + seed))

        def snr(source: str, basis: torch.Tensor | None) -> dict:
            disc.basis = basis
            means = class_means(disc.real_vectors(features), y, bundle.num_classes)
            between = float((means - means.mean(0)).pow(2).sum(1).mean())
            width = means.shape[1]
            noise = width * tau2
            return {"network": seed, "source": source, "width": width, "between_class": round(between, 4),
                    "noise_energy": round(noise, 5), "ratio": round(between / noise, 1)}

        rows.append(snr("full features", None))
        for source, images in (("100 k-means centres", centres), ("2 000 held-out images", bundle.train_images[public])):
            feats = _embed(net, images)
            for k in args.dims:
                if k < len(images):
                    rows.append(snr(source, principal_basis(feats, k)))
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"machine": machine, "sigma": SIGMA, "q": Q,
                                                         "members_per_class": per_class, "rows": rows}, indent=1))
    lines = ["# Per-release signal-to-noise of the DP subspace (Fashion-MNIST, ConvNet-3)", "",
             f"Machine: {machine}. One ε = 1 release (σ = {SIGMA}, q = {Q}, {per_class:.0f} members per class); "
             f"between-class deviation of the unit-normalised class means of {args.members} images vs the "
             "noise energy width·τ². Command: `python benchmarks/subspace_snr.py`", "",
             "| network | subspace source | width | between-class | noise energy | ratio |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['network']} | {r['source']} | {r['width']} | {r['between_class']} | {r['noise_energy']} | {r['ratio']} |"
              for r in rows]
    lines += ["", "A per-release diagnostic only: end to end the subspace did not change accuracy "
              "(`dp_subspace_fmnist_eps1*.md`)."]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
