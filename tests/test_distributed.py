"""securedc.plugins.distributed: class split across torchrun ranks == one process, bit for bit."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest
import torch

import securedc
from securedc.config import AdversarialConfig, CondenseConfig
from securedc.errors import ConfigError
from securedc.export import load_condensed
from securedc.plugins.distributed import (
    fit_distributed,
    launched_distributed,
    rank_checkpoint_path,
    separability_problems,
    split_classes,
)


@pytest.mark.parametrize("classes,world", [(10, 2), (10, 3), (3, 4), (100, 7)])
def test_split_classes_is_a_partition(classes, world):
    parts = [split_classes(classes, world, r) for r in range(world)]
    assert sorted(c for p in parts for c in p) == list(range(classes))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    with pytest.raises(ConfigError):
        split_classes(classes, world, world)


def test_coupled_options_are_refused(digits, monkeypatch):
    assert separability_problems(CondenseConfig()) == []
    assert len(separability_problems(CondenseConfig(learn_lr=True))) == 1
    robust = AdversarialConfig(eps=8 / 255)  # the term's extractor would be trained on one rank's classes only
    assert "--robust-extractor" in separability_problems(CondenseConfig(adversarial=robust))[0]
    for fine in (dataclasses.replace(robust, robust_extractor="ext.safetensors"),
                 dataclasses.replace(robust, weight=0.0, soft_labels=True)):
        assert separability_problems(CondenseConfig(adversarial=fine)) == []
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="learn-lr"):
        fit_distributed(CondenseConfig(learn_lr=True, iterations=1), digits)


def test_checkpoint_paths_per_rank():
    assert rank_checkpoint_path("a/b.ckpt.safetensors", 0, 2) != rank_checkpoint_path("a/b.ckpt.safetensors", 1, 2)
    assert rank_checkpoint_path(None, 0, 2) is None


def test_single_process_fallback_equals_condenser(digits):
    assert not launched_distributed()
    cfg = CondenseConfig(ipc=1, iterations=2, batch_real=8)
    result = fit_distributed(cfg, digits)
    assert torch.equal(result.images, securedc.condense(digits, config=cfg, ipc=1).images)


def test_soft_labels_of_a_distributed_run_equal_one_process(digits, tmp_path):
    """Rank 0 labels the gathered S with the same teacher as a one-process run (`distributed=True`
    runs the rank-0 path; one rank when not launched); before, a distributed run dropped them."""
    from securedc.condensation import run_condensation
    from securedc.models.registry import seeded_model
    from securedc.robust import save_extractor

    path = tmp_path / "ext.safetensors"
    save_extractor(path, seeded_model("convnet", seed=4, in_channels=1, num_classes=10, image_size=(8, 8),
                                      mean=digits.mean, std=digits.std))
    adv = AdversarialConfig(eps=8 / 255, weight=0.0, soft_labels=True, robust_extractor=str(path))
    cfg = CondenseConfig(ipc=1, iterations=2, batch_real=8, adversarial=adv)
    local = run_condensation(cfg, digits, distributed=False)
    split = run_condensation(cfg, digits, distributed=True)
    assert torch.equal(split.images, local.images) and split.soft_labels is not None
    torch.testing.assert_close(split.soft_labels, local.soft_labels)


def test_bank_options_are_refused_under_torchrun(digits, tmp_path):
    """A distributed run must not quietly condense the real data when asked to re-condense a bank."""
    from securedc.condensation import run_condensation

    cfg = CondenseConfig(ipc=1, iterations=2, batch_real=8)
    for option in ({"from_bank": tmp_path / "x.bank.safetensors"}, {"bank_path": tmp_path / "y.bank.safetensors"}):
        with pytest.raises(ConfigError, match="without torchrun"):
            run_condensation(cfg, digits, distributed=True, **option)


SCRIPT = """
import sys, torch
from securedc.config import CondenseConfig, PrivacyConfig
from securedc.data import load_dataset
from securedc.export import save_condensed
from securedc.plugins.distributed import fit_distributed

out = sys.argv[1]
bundle = load_dataset("digits")
for tag, privacy in (("inf", PrivacyConfig()), ("eps8", PrivacyConfig(epsilon=8.0))):
    config = CondenseConfig(ipc=2, iterations=4, batch_real=16, privacy=privacy)
    result = fit_distributed(config, bundle, noise_seed=1234)
    if result is not None:
        save_condensed(f"{out}/{tag}.safetensors", result.images, result.labels,
                       {"privacy": result.privacy, "losses": result.losses})
# the secret key rank 0 draws for a DP run without noise_seed, as every rank receives it
import secrets, torch.distributed as dist
from securedc.plugins.distributed import _broadcast_key
rank = dist.get_rank()
key = _broadcast_key(secrets.randbits(128) if rank == 0 else 0, torch.device("cpu"))
open(f"{out}/key{rank}.txt", "w").write(format(key, "032x"))
"""


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_PORT")}


def test_fit_distributed_two_ranks_bit_identical(digits, tmp_path):
    """torchrun + gloo, 2 processes on CPU: same images and privacy section as one process."""
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(script), str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    for tag, privacy in (("inf", securedc.PrivacyConfig()), ("eps8", securedc.PrivacyConfig(epsilon=8.0))):
        got = load_condensed(tmp_path / f"{tag}.safetensors")
        config = CondenseConfig(ipc=2, iterations=4, batch_real=16, privacy=privacy)
        single = securedc.Condenser(config, num_classes=10, image_shape=digits.image_shape, mean=digits.mean, std=digits.std)
        ref = single.fit(single.make_mechanism(digits.train_images, digits.train_labels, noise_seed=1234))
        assert torch.equal(got.images, ref.images), tag  # bit-identical
        assert torch.equal(got.labels, ref.labels)
        assert got.manifest["privacy"] == ref.privacy  # same sigma, q, T, delta, accountant history
        assert got.manifest["losses"] == pytest.approx(ref.losses, rel=1e-5)  # rank losses summed
    assert got.privacy["private"] and got.privacy["epsilon"] <= 8.0 + 1e-6
    keys = [(tmp_path / f"key{rank}.txt").read_text() for rank in (0, 1)]
    assert keys[0] == keys[1] and int(keys[0], 16) > 0  # one 128-bit key, received whole by rank 1


@pytest.mark.slow
def test_torchrun_cli_matches_single_process_privacy(digits, tmp_path):
    """`torchrun -m securedc condense --epsilon 8`: exported once, privacy section == one process."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           # --batch-real above every class size: the q cap reads the released (noisy) counts, which
           # differ between the two runs' independent secret noise; uncapped, q comes from the data-free rule
           "-m", "securedc", "condense", "--ipc", "2", "--iterations", "4", "--batch-real", "1000", "--epsilon", "8",
           "--eval-models", "0", "--no-audit", "--out", str(tmp_path), "--name", "dist"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[[0, 2, 4, 6, 8], [1, 3, 5, 7, 9]]" in proc.stderr
    got = load_condensed(tmp_path / "dist.safetensors")
    # one export (and its owner-only record), no checkpoints left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dist.owner.json", "dist.safetensors"]
    config = CondenseConfig.from_dict(got.manifest["config"])
    single = securedc.condense(digits, config=config, ipc=config.ipc)  # its own secret noise seed
    # the bank's SNR is computed from the released (noisy) class counts: each run has its own noise
    ours, theirs = dict(got.manifest["privacy"]), dict(single.result.privacy)
    assert ours.pop("bank_snr") > 0 and theirs.pop("bank_snr") > 0
    assert ours == theirs
    assert got.images.shape == single.images.shape and torch.equal(got.labels, single.labels)


def test_docstring_examples():
    import doctest

    import securedc.plugins.distributed as module

    result = doctest.testmod(module)
    assert result.attempted >= 4 and result.failed == 0


def test_broadcast_key_keeps_all_128_bits(tmp_path):
    """The secret noise key shared by the ranks of a DP run is the full 128-bit key (not a narrower seed)."""
    import secrets

    import torch.distributed as dist

    from securedc.plugins.distributed import _broadcast_key

    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        for key in (0, 1, 2**63 - 1, 2**63, 2**127 + 12345, 2**128 - 1, secrets.randbits(128)):
            assert _broadcast_key(key, torch.device("cpu")) == key
    finally:
        dist.destroy_process_group()
