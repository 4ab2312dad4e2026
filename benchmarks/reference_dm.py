"""The reference DM loop, re-expressed in plain PyTorch, for side-by-side timing with securedc.

This follows the structure of ``main_DM.py`` of Zhao & Bilen's public code (DatasetCondensation,
WACV'23 "Dataset Condensation with Distribution Matching") step for step, so that a time-to-accuracy
comparison runs both on the same machine, data and evaluation:

* images live in *normalised* space (``(x - mean) / std``), real-image init, SGD lr 1.0 momentum 0.5;
* every iteration: a fresh ConvNet-3 (``GroupNorm(128, 128)`` instance norm, ``nn.AvgPool2d``),
  then **a Python loop over classes**: sample ``batch_real`` real images of the class, apply DSA with
  one shared seed to the real and synthetic images, embed both (the real side under autograd and
  ``.detach()``-ed, as the original), add ``||mean f(real) - mean f(syn)||^2``;
* one backward and SGD step over all classes.

It is NOT the original file (no internet here): the network, DSA ops and sampling are securedc's
implementations of the same definitions (``securedc.augment.DSA``), wired the reference's way. The
output is returned in [0, 1] pixel space (``x * std + mean``, unclamped, as the reference keeps it).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from securedc.augment import DSA


def reference_convnet(in_channels: int, image_size: int, *, width: int = 128, depth: int = 3) -> nn.Sequential:
    """DC's ConvNet-3 embedding (conv3x3 -> instance norm -> ReLU -> AvgPool2d) on normalised input."""
    layers: list[nn.Module] = []
    c, s = in_channels, image_size
    pad = 3 if image_size == 28 else 1
    s = s + 2 * (pad - 1)
    for d in range(depth):
        layers += [nn.Conv2d(c, width, 3, padding=pad if d == 0 else 1), nn.GroupNorm(width, width, affine=True),
                   nn.ReLU(inplace=True), nn.AvgPool2d(2, 2)]
        c, s = width, s // 2
    layers.append(nn.Flatten())
    return nn.Sequential(*layers)


def reference_dm(
    images: Tensor,
    labels: Tensor,
    *,
    num_classes: int,
    ipc: int,
    iterations: int,
    batch_real: int,
    mean: float,
    std: float,
    seed: int = 0,
    lr_img: float = 1.0,
    flip: bool = False,
    callback: Callable[[int, Tensor, float], None] | None = None,
) -> Tensor:
    """Run the reference DM loop; ``callback(step, images_01, seconds)`` after each step."""
    g = torch.Generator().manual_seed(seed)
    xn = (images - mean) / std
    by_class = [torch.nonzero(labels == c).flatten() for c in range(num_classes)]
    init = [xn[idx[torch.randperm(idx.numel(), generator=g)[:ipc]]] for idx in by_class]
    syn = torch.cat(init).clone().requires_grad_(True)
    opt = torch.optim.SGD([syn], lr=lr_img, momentum=0.5)
    dsa = DSA("color_crop_cutout_flip_scale_rotate", flip=flip)
    shape = images.shape[1:]
    t0 = time.perf_counter()
    for it in range(iterations):
        torch.manual_seed(seed * 100_003 + it)
        net = reference_convnet(shape[0], shape[-1])
        net.train()
        for p in net.parameters():
            p.requires_grad = False
        loss = torch.zeros(())
        for c in range(num_classes):
            idx = by_class[c]
            img_real = xn[idx[torch.randperm(idx.numel(), generator=g)[:batch_real]]]
            img_syn = syn[c * ipc : (c + 1) * ipc]
            params = dsa.sample(1, generator=g)
            # securedc's DSA works on [0, 1] pixels; map there and back so the ops match
            img_real = (dsa(img_real * std + mean, params, torch.zeros(img_real.shape[0], dtype=torch.long)) - mean) / std
            img_syn = (dsa(img_syn * std + mean, params, torch.zeros(ipc, dtype=torch.long)) - mean) / std
            out_real = net(img_real).detach()
            out_syn = net(img_syn)
            loss = loss + ((out_real.mean(0) - out_syn.mean(0)) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if callback is not None:
            callback(it + 1, (syn.detach() * std + mean), time.perf_counter() - t0)
    return syn.detach() * std + mean
