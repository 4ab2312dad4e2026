"""Tests for securedc.augment (DSA with per-group siamese parameters) on real images."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from securedc.augment import DSA, OPS
from securedc.errors import ConfigError, DataError

torch.set_num_threads(2)

FMNIST_TEST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


def _digits(n: int = 12) -> torch.Tensor:
    from sklearn.datasets import load_digits

    return torch.as_tensor(load_digits().images[:n], dtype=torch.float32).unsqueeze(1) / 16.0


def _fmnist(n: int) -> torch.Tensor:
    if not FMNIST_TEST.exists():
        pytest.skip("Fashion-MNIST IDX files not found")
    with gzip.open(FMNIST_TEST, "rb") as fh:
        raw = np.frombuffer(fh.read(), dtype=np.uint8, offset=16)
    return torch.from_numpy(raw[: n * 784].copy()).view(n, 1, 28, 28).float() / 255.0


def _images(geometry: str) -> torch.Tensor:
    if geometry == "8x8x1":
        return _digits()
    if geometry == "28x28x1":
        return _fmnist(12)
    gray = F.interpolate(_fmnist(12), size=(32, 32), mode="bilinear", align_corners=False)
    return torch.cat([gray, gray.flip(3), 1 - gray], dim=1).clamp(0, 1)  # 3 distinct channels


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


GROUPS12 = torch.arange(12) % 3


@pytest.mark.parametrize("geometry", ["8x8x1", "28x28x1", "32x32x3"])
@pytest.mark.parametrize("mode", ["single", "multiple"])
def test_shapes_determinism_and_seed_dependence(geometry: str, mode: str) -> None:
    x = _images(geometry)
    dsa = DSA(mode=mode)
    p = dsa.sample(3, generator=_gen(0))
    y1, y2 = dsa(x, p, GROUPS12), dsa(x, dsa.sample(3, generator=_gen(0)), GROUPS12)
    assert y1.shape == x.shape and y1.dtype == x.dtype
    assert torch.equal(y1, y2)
    y3 = dsa(x, dsa.sample(3, generator=_gen(1)), GROUPS12)
    assert not torch.equal(y1, y3)


def test_siamese_real_and_synthetic_copy_match_within_group() -> None:
    real = _fmnist(6)
    syn = real.clone().requires_grad_(True)  # "synthetic" copy initialised from the real images
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    dsa = DSA(mode="multiple")  # every op active: the strongest check
    p = dsa.sample(3, generator=_gen(7))
    out_real = dsa(real, p, labels)
    out_syn = dsa(syn, p, labels)
    torch.testing.assert_close(out_syn, out_real, rtol=0, atol=0)
    # one image placed in two different groups sees two different transforms
    pair = dsa(real[:1].expand(2, -1, -1, -1), p, torch.tensor([0, 1]))
    assert not torch.equal(pair[0], pair[1])
    # a batch holding the same image twice in one group gives identical outputs (shared params)
    twin = dsa(real[:1].expand(2, -1, -1, -1), p, torch.tensor([2, 2]))
    assert torch.equal(twin[0], twin[1])


@pytest.mark.parametrize("mode", ["single", "multiple"])
def test_gradient_reaches_input(mode: str) -> None:
    x = _fmnist(6).requires_grad_(True)
    dsa = DSA(mode=mode)
    y = dsa(x, dsa.sample(3, generator=_gen(2)), torch.tensor([0, 0, 1, 1, 2, 2]))
    (y**2).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert (x.grad.flatten(1).abs().sum(1) > 0).all()  # every sample gets gradient


@pytest.mark.parametrize("op", OPS)
def test_each_op_changes_the_image(op: str) -> None:
    x = _fmnist(8)
    dsa = DSA(op, mode="multiple")
    groups = torch.arange(8)
    y = dsa(x, dsa.sample(8, generator=_gen(3)), groups)
    changed = (y - x).flatten(1).abs().amax(1) > 1e-4
    assert changed.sum() >= 2, f"{op} left {int((~changed).sum())}/8 images unchanged"
    assert y.shape == x.shape


def test_single_mode_applies_exactly_one_op_per_group_and_passes_identity_through() -> None:
    dsa = DSA()
    p = dsa.sample(64, generator=_gen(4))
    assert p.active.shape == (64, len(OPS)) and (p.active.sum(1) == 1).all()
    assert set(p.active.float().argmax(1).tolist()) == set(range(len(OPS)))  # all ops are drawn
    x = _fmnist(64)
    y = dsa(x, p, torch.arange(64))
    flip_col = OPS.index("flip")
    idle = p.active[:, flip_col] & ~p.flip  # groups whose only op is a flip that did not happen
    assert idle.any() and torch.equal(y[idle], x[idle])
    flipped = p.active[:, flip_col] & p.flip
    torch.testing.assert_close(y[flipped], x[flipped].flip(3), rtol=0, atol=1e-5)


def test_crop_is_an_integer_zero_padded_shift_and_fuses_with_flip() -> None:
    x = _fmnist(4)
    dsa = DSA("crop", mode="multiple")
    p = dsa.sample(4, generator=_gen(5))
    y = dsa(x, p, torch.arange(4))
    shift = int(28 * 0.125 + 0.5)
    for i in range(4):
        dy = int((p.crop[i, 0] * (2 * shift + 1)).floor()) - shift
        dx = int((p.crop[i, 1] * (2 * shift + 1)).floor()) - shift
        padded = F.pad(x[i], (shift, shift, shift, shift))
        expected = padded[:, shift + dy : shift + dy + 28, shift + dx : shift + dx + 28]  # out[r, c] = x[r+dy, c+dx]
        torch.testing.assert_close(y[i], expected, rtol=0, atol=1e-5)
    # "crop_flip" fused into one warp equals crop followed by an exact flip
    both = DSA("crop_flip", mode="multiple")
    pb = both.sample(4, generator=_gen(5))
    yb = both(x, pb, torch.arange(4))
    only_crop = DSA("crop", mode="multiple")(x, _as(pb, ("crop",)), torch.arange(4))
    expect = torch.where(pb.flip.view(-1, 1, 1, 1), only_crop.flip(3), only_crop)
    torch.testing.assert_close(yb, expect, rtol=0, atol=1e-5)


def _as(p, ops):  # type: ignore[no-untyped-def]
    """Same draws, restricted to ``ops`` (for composition checks)."""
    from dataclasses import replace

    cols = [p.ops.index(o) for o in ops]
    return replace(p, ops=ops, active=p.active[:, cols])


def test_cutout_hole_has_reference_size() -> None:
    x = torch.ones(16, 1, 28, 28)
    dsa = DSA("cutout", mode="multiple")
    y = dsa(x, dsa.sample(16, generator=_gen(6)), torch.arange(16))
    zeros = (y == 0).flatten(1).sum(1)
    assert zeros.max() == 14 * 14 and zeros.min() >= 7 * 7  # full 14x14 box, clipped at borders
    assert set(torch.unique(y).tolist()) == {0.0, 1.0}


def test_flip_false_removes_flip() -> None:
    dsa = DSA(flip=False)
    assert "flip" not in dsa.ops and dsa.strategy == "color_crop_cutout_scale_rotate"
    p = dsa.sample(50, generator=_gen(8))
    assert not p.flip.any() and p.active.shape[1] == 5
    assert DSA("flip", flip=False).strategy == "none"


def test_none_is_identity_and_errors() -> None:
    x = _digits()
    for strategy in ("none", "", "None"):
        dsa = DSA(strategy)
        assert dsa(x, dsa.sample(3, generator=_gen(0)), GROUPS12) is x
    with pytest.raises(ConfigError, match="blur"):
        DSA("color_blur")
    with pytest.raises(ConfigError, match="mode"):
        DSA(mode="sometimes")
    with pytest.raises(ConfigError, match="ratio_scale"):
        DSA(ratio_scale=0.5)
    dsa = DSA()
    p = dsa.sample(3, generator=_gen(0))
    with pytest.raises(DataError, match="groups"):
        dsa(x, p, torch.full((12,), 3))
    with pytest.raises(ConfigError, match="sampled for"):
        DSA("flip")(x, p, GROUPS12)


def test_does_not_touch_global_rng() -> None:
    state = torch.get_rng_state()
    dsa = DSA()
    dsa(_digits(), dsa.sample(3, generator=_gen(0)), GROUPS12)
    assert torch.equal(torch.get_rng_state(), state)


def test_speed_dm_batch() -> None:
    """A DM step augments 10 classes x 256 real images; this must stay far below a model pass."""
    x = _fmnist(256).repeat(10, 1, 1, 1)
    groups = torch.arange(10).repeat_interleave(256)
    dsa = DSA(flip=False)
    g = _gen(0)
    from securedc.models import create_model

    net = create_model("convnet", in_channels=1, num_classes=10, image_size=(28, 28)).eval()
    dsa(x, dsa.sample(10, generator=g), groups)  # warm-up
    times, model_times = [], []
    one_class = x[:256]
    with torch.no_grad():
        net(one_class)
        for _ in range(5):
            p = dsa.sample(10, generator=g)
            t0 = time.perf_counter()
            dsa(x, p, groups)
            times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            net(one_class)
            model_times.append(time.perf_counter() - t0)
    # relative to a model pass (on one class of the ten), so a loaded machine slows both sides alike
    dsa_s, model_s = sorted(times)[2], sorted(model_times)[2]
    assert dsa_s < 0.5 * model_s, (f"DSA on [2560, 1, 28, 28] took {dsa_s:.3f} s vs {model_s:.3f} s for a ConvNet "
                                   "pass on 256 of the images")


def test_scale_and_rotate_match_reference_warp() -> None:
    """Same theta as the DSA reference (``rand_scale``/``rand_rotate``: affine_grid + grid_sample, align_corners)."""
    x = _fmnist(4)
    for op in ("scale", "rotate"):
        dsa = DSA(op, mode="multiple")
        p = dsa.sample(4, generator=_gen(9))
        if op == "scale":
            theta = torch.zeros(4, 2, 3)
            theta[:, 0, 0], theta[:, 1, 1] = p.scale[:, 0], p.scale[:, 1]
        else:
            c, s = torch.cos(p.rotate), torch.sin(p.rotate)
            theta = torch.stack([torch.stack([c, -s, 0 * c], 1), torch.stack([s, c, 0 * c], 1)], 1)
        ref = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=True), align_corners=True)
        torch.testing.assert_close(dsa(x, p, torch.arange(4)), ref, rtol=0, atol=1e-6)
    assert DSA().sample(100, generator=_gen(1)).scale.min() >= 1 / 1.2
    assert DSA().sample(100, generator=_gen(1)).rotate.abs().max() <= 15 / 180 * torch.pi
