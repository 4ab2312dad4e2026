"""Robust training pieces: PGD recipe (evaluate, plain-PyTorch loader, Lightning), soft labels (file, dataset,
KD training), robust extractor weights — real digits, real torchattacks."""

from __future__ import annotations

import pytest
import torch

from securedc.config import EvalConfig
from securedc.errors import ConfigError, DataError
from securedc.evaluate import accuracy, random_subset, train_model
from securedc.export import load_condensed, save_condensed
from securedc.models import seeded_model
from securedc.robust import PGDRecipe, load_extractor, save_extractor, soft_label_loss, train_robust_extractor
from securedc.terms.adversarial import pgd_perturb


def _soft(labels: torch.Tensor, num_classes: int = 10, smooth: float = 0.2) -> torch.Tensor:
    out = torch.full((labels.shape[0], num_classes), smooth / (num_classes - 1))
    out[torch.arange(labels.shape[0]), labels] = 1 - smooth
    return out


def test_recipe_validation():
    with pytest.raises(ConfigError, match="eps"):
        PGDRecipe(eps=0, steps=3)
    with pytest.raises(ConfigError, match="steps"):
        PGDRecipe(eps=0.1, steps=0)


def test_soft_labels_round_trip_and_refusals(tmp_path, digits):
    x, y = random_subset(digits.train_images, digits.train_labels, 2, seed=0)
    soft = _soft(y)
    p = tmp_path / "s.safetensors"
    save_condensed(p, x, y, {"ipc": 2}, soft_labels=soft)
    loaded = load_condensed(p)
    assert torch.equal(loaded.soft_labels, soft) and "soft_labels_sha256" in loaded.manifest
    plain = tmp_path / "plain.safetensors"
    save_condensed(plain, x, y, {"ipc": 2})
    assert load_condensed(plain).soft_labels is None
    with pytest.raises(DataError, match="soft_labels must be"):
        save_condensed(tmp_path / "bad.safetensors", x, y, {}, soft_labels=soft[:-1])
    with pytest.raises(DataError, match="columns|sum to 1"):
        save_condensed(tmp_path / "bad2.safetensors", x, y, {}, soft_labels=soft[:, :5])
    with pytest.raises(DataError, match="soft_labels must be"):
        train_model(x, y, num_classes=10, mean=digits.mean, std=digits.std, config=EvalConfig(models=1, epochs=1),
                    soft_labels=soft[:3])
    # a tampered soft-label tensor is refused on load
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    with safe_open(str(p), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(p))
    tensors["soft_labels"] = tensors["soft_labels"].roll(1, dims=1).contiguous()
    save_file(tensors, str(tmp_path / "tampered.safetensors"), metadata=meta)
    with pytest.raises(DataError, match="soft_labels do not match"):
        load_condensed(tmp_path / "tampered.safetensors")


def test_dataset_serves_soft_targets_and_kd_loss(tmp_path, digits):
    from securedc.plugins.torch import CondensedDataset, condensed_loader

    x, y = random_subset(digits.train_images, digits.train_labels, 2, seed=0)
    p = tmp_path / "s.safetensors"
    save_condensed(p, x, y, {"ipc": 2}, soft_labels=_soft(y))
    ds = CondensedDataset(p, allow_uncertified=True)
    img, target = ds[0]
    assert target.shape == (10,) and abs(float(target.sum()) - 1) < 1e-6
    assert isinstance(CondensedDataset(p, allow_uncertified=True, use_soft_labels=False)[0][1], int)
    xb, tb = next(iter(condensed_loader(ds, batch_size=8)))
    logits = torch.randn(8, 10)
    # plain F.cross_entropy with the loader's soft targets IS the KD loss
    torch.testing.assert_close(torch.nn.functional.cross_entropy(logits, tb), soft_label_loss(logits, tb))
    plain = tmp_path / "plain.safetensors"
    save_condensed(plain, x, y, {"ipc": 2})
    with pytest.raises(DataError, match="no soft_labels"):
        CondensedDataset(plain, allow_uncertified=True, use_soft_labels=True)


def test_soft_labels_change_training(digits):
    x, y = random_subset(digits.train_images, digits.train_labels, 5, seed=0)
    cfg = EvalConfig(models=1, epochs=30, dsa="none")
    kw = dict(num_classes=10, mean=digits.mean, std=digits.std, config=cfg, seed=0)
    hard = train_model(x, y, **kw)
    onehot = train_model(x, y, soft_labels=torch.nn.functional.one_hot(y, 10).float(), **kw)
    smooth = train_model(x, y, soft_labels=_soft(y, smooth=0.5), **kw)
    xs = digits.test_images[:64]
    torch.testing.assert_close(hard(xs), onehot(xs))  # one-hot soft labels = the hard-label loss
    assert not torch.allclose(hard(xs), smooth(xs))
    assert accuracy(smooth, digits.test_images, digits.test_labels) > 0.3


def _pgd_acc(model, digits, eps=0.1):
    xa = pgd_perturb(model, digits.test_images, digits.test_labels, eps=eps, alpha=eps / 4, steps=20, seed=0)
    return accuracy(model, xa, digits.test_labels)


@pytest.mark.slow
def test_recipe_raises_pgd_accuracy(digits):
    """Issue 14 item 3: models trained with the PGD recipe on S are more robust than without (mean of 2 seeds);
    so are those of fast AT (FGSM-RS, the quick audit's recipe)."""
    x, y = random_subset(digits.train_images, digits.train_labels, 10, seed=0)
    cfg = EvalConfig(models=1, epochs=100, dsa="none")
    std_acc, at_acc, fast_acc = [], [], []
    for seed in (0, 1):
        kw = dict(num_classes=10, mean=digits.mean, std=digits.std, config=cfg, seed=seed)
        std_acc.append(_pgd_acc(train_model(x, y, **kw), digits))
        at_acc.append(_pgd_acc(train_model(x, y, adversarial=PGDRecipe(eps=0.1, steps=5), **kw), digits))
        fast_acc.append(_pgd_acc(train_model(x, y, adversarial=PGDRecipe.fast(0.1), **kw), digits))
    assert sum(at_acc) / 2 > sum(std_acc) / 2 + 0.05, (std_acc, at_acc)
    assert sum(fast_acc) / 2 > sum(std_acc) / 2 + 0.05, (std_acc, fast_acc)


def test_adversarial_loader_trains_on_pgd_examples(digits):
    from torch.utils.data import TensorDataset

    from securedc.plugins.torch import AdversarialLoader, condensed_loader

    x, y = random_subset(digits.train_images, digits.train_labels, 3, seed=0)
    net = seeded_model("convnet", seed=0, in_channels=1, num_classes=10, image_size=(8, 8),
                       mean=digits.mean, std=digits.std)
    net.train()
    loader = AdversarialLoader(condensed_loader(TensorDataset(x, y), batch_size=16), model=net,
                               recipe=PGDRecipe(eps=0.1, steps=3))
    seen = 0
    for xa, t in loader:
        assert net.training  # the attack restores the training mode
        assert xa.min() >= 0 and xa.max() <= 1
        seen += len(t)
    assert seen == 30 and len(loader) == 2
    with pytest.raises(ConfigError, match="PGDRecipe"):
        AdversarialLoader([], model=net, recipe="pgd")  # type: ignore[arg-type]


def test_extractor_weights_round_trip(tmp_path, digits):
    make = lambda s: seeded_model("convnet", seed=s, in_channels=1, num_classes=10, image_size=(8, 8),  # noqa: E731
                                  mean=digits.mean, std=digits.std)
    x, y = random_subset(digits.train_images, digits.train_labels, 2, seed=0)
    net = train_robust_extractor(make(0), x, y, recipe=PGDRecipe(eps=0.1, steps=2), epochs=2, seed=0)
    p = tmp_path / "ext.safetensors"
    save_extractor(p, net)
    loaded = load_extractor(p, make(1))
    torch.testing.assert_close(loaded(x), net(x))
    with pytest.raises(DataError, match="not found"):
        load_extractor(tmp_path / "missing.safetensors", make(1))
    other = seeded_model("mlp", seed=0, in_channels=1, num_classes=10, image_size=(8, 8), mean=digits.mean, std=digits.std)
    with pytest.raises(DataError, match="does not fit"):
        load_extractor(p, other)


def test_flat_soft_labels_are_sharpened_confident_ones_kept(digits) -> None:
    """``temperature=None``: a weak teacher's near-uniform labels are sharpened to a mean top probability
    of SOFT_LABEL_CONFIDENCE (argmax unchanged); a confident teacher's labels are its plain softmax."""
    from torch import nn

    from securedc.robust import SOFT_LABEL_CONFIDENCE, soft_labels_from

    x = digits.train_images[:50]
    torch.manual_seed(0)
    flat = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with torch.no_grad():
        flat[1].weight.mul_(0.01)
    plain = soft_labels_from(flat, x, temperature=1.0)
    auto = soft_labels_from(flat, x, temperature=None)
    assert float(plain.max(1).values.mean()) < 0.2
    assert float(auto.max(1).values.mean()) == pytest.approx(SOFT_LABEL_CONFIDENCE, abs=1e-3)
    assert torch.equal(auto.argmax(1), plain.argmax(1))
    sharp = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with torch.no_grad():
        sharp[1].weight.mul_(100.0)
    assert torch.equal(soft_labels_from(sharp, x, temperature=None), soft_labels_from(sharp, x, temperature=1.0))
