"""The CLI as a user runs it: real subprocesses, exit codes, one-line errors, files on disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from securedc.export import load_condensed, save_condensed
from securedc.owner import read_owner_record

FAST = ["--iterations", "5", "--batch-real", "16", "--eval-models", "0"]


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "2"}
    return subprocess.run(
        [sys.executable, "-m", "securedc", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env
    )


def _no_audit() -> list[str]:
    """These tests cover condense/export; the audit path has its own tests (test_cli_audit.py)."""
    return ["--no-audit"]


def test_condense_writes_file_and_summary(tmp_path) -> None:
    proc = run_cli("condense", *FAST, "--eval-models", "1", "--eval-epochs", "10", "--out", str(tmp_path), *_no_audit())
    assert proc.returncode == 0, proc.stderr
    assert "(--device auto)" in proc.stderr  # the CLI says which device auto picked
    target = tmp_path / "digits-ipc10.safetensors"
    cs = load_condensed(target)
    assert cs.images.shape == (100, 1, 8, 8)
    assert cs.manifest["dataset"]["name"] == "digits"
    assert cs.manifest["privacy"]["private"] is False
    # accuracy is measured on real test data: it is in the owner file, not in the release
    evaluation = read_owner_record(target, tensor_sha256=cs.manifest["tensor_sha256"])["evaluation"]
    assert "condensed" in evaluation and "random_subset" in evaluation and "evaluation" not in cs.manifest
    assert "digits-ipc10.safetensors" in proc.stdout
    assert not list(tmp_path.glob("*.ckpt.safetensors")), "no leftover checkpoint when not asked"
    assert not list(tmp_path.glob(".*.tmp"))

    shown = run_cli("inspect", str(target), "--grid", str(tmp_path / "grid.png"))
    assert shown.returncode == 0, shown.stderr
    assert "NOT differentially private" in shown.stdout
    assert "digits-ipc10.owner.json" in shown.stdout and "accuracy" in shown.stdout
    assert (tmp_path / "grid.png").stat().st_size > 1000

    ev = run_cli("evaluate", str(target), "--models", "1", "--epochs", "5", "--json")
    assert ev.returncode == 0, ev.stderr
    assert 0 <= json.loads(ev.stdout.strip().splitlines()[-1])["mean"] <= 1


def test_same_seed_same_file_tensors(tmp_path) -> None:
    a = run_cli("condense", *FAST, "--out", str(tmp_path / "a"), *_no_audit())
    b = run_cli("condense", *FAST, "--out", str(tmp_path / "b"), *_no_audit())
    assert a.returncode == b.returncode == 0
    ma = load_condensed(tmp_path / "a" / "digits-ipc10.safetensors").manifest
    mb = load_condensed(tmp_path / "b" / "digits-ipc10.safetensors").manifest
    assert ma["tensor_sha256"] == mb["tensor_sha256"]


BAD = [
    (["--dataset", "nope"], "unknown"),
    (["--ipc", "0"], "--ipc"),
    (["--ipc", "1000"], "ipc"),
    (["--iterations", "-3"], "--iterations"),
    (["--lr-img", "nan"], "--lr-img"),
    (["--adv-eps", "8/0"], "denominator"),
    (["--epsilon", "nan"], "NaN"),
    (["--dataset", "idx:/nonexistent/dir"], "not"),
    (["--dataset", "cifar10", "--data-root", "EMPTY"], "not found"),
    (["--discrepancy", "kl"], "choose one of"),
    (["--device", "cuda:7"], "cuda"),
    (["--device", "tpu"], "--device"),
    (["--resume", "EMPTY"], "checkpoint"),  # checked before the data is loaded: no progress lines before it
    (["--resume", "JUNK"], "not a securedc checkpoint"),
    (["--epsilon", "1e400"], "overflows"),  # not silently inf (= not private)
    (["--epsilon", "8", "--delta", "0.5"], "--delta"),
    (["--epsilon", "8", "--sample-rate", "1e-300"], "--sample-rate"),
    (["--epsilon", "8", "--clip", "1e300"], "--clip"),
    (["--device", "cpu\n"], "--device"),
    (["--seed", "99999999999"], "--seed"),
    (["--ipc", "99999999999999999999"], "--ipc"),
    (["--model", "bogus"], "--model"),
    (["--name", "sub/x"], "--name"),
    (["--policy", "JUNK"], "--no-audit"),
    (["--adv-eps", "8/255", "--robust-extractor", "EMPTY"], "not found"),
]


@pytest.mark.parametrize("args,needle", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, cli, args, needle) -> None:
    """In-process (fast); the subprocess path is covered by the test below."""
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    args = [str(tmp_path / "empty") if a == "EMPTY" else str(tmp_path / "junk.safetensors") if a == "JUNK" else a
            for a in args]
    out = tmp_path / "out"
    res = cli("condense", *FAST, *args, "--out", str(out), *_no_audit())
    assert res.exit_code == 2, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
    assert needle.lower() in lines[0].lower()
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("args", [["--ipc", "0"], ["--ipc", "abc"], ["--bogus"]])
def test_bad_input_as_a_real_process(tmp_path, args) -> None:
    """Parser errors (not an integer, an unknown option) are one line too, not a usage box."""
    proc = run_cli("condense", *FAST, *args, "--out", str(tmp_path / "o"), timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and args[0] in lines[0] and "Traceback" not in proc.stderr


def test_unwritable_out_and_corrupt_file(tmp_path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    proc = run_cli("condense", *FAST, "--out", str(blocker / "sub"), *_no_audit())
    assert proc.returncode == 2 and "not writable" in proc.stderr
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(os.urandom(300))
    proc = run_cli("inspect", str(bad))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1


def test_datasets_lists_sources() -> None:
    proc = run_cli("datasets")
    assert proc.returncode == 0
    for name in ("digits", "fashion-mnist", "cifar10", "npz:FILE", "folder:DIR"):
        assert name in proc.stdout


def test_cli_import_leaves_heavy_optional_imports_for_first_use() -> None:
    """Every CLI process starts by importing securedc; opacus (its package import loads its optimisers,
    torch.distributed.tensor and scipy.stats), torchattacks and scikit-learn (both load scipy.stats) are
    imported where they are used, so ``--help``, ``inspect`` and non-private runs start ~5 s sooner —
    and they are there when needed: the accountant and the attack resolve on first use."""
    code = ("import sys, securedc.cli, securedc.audits\n"
            "heavy = ('opacus', 'torchattacks', 'sklearn', 'scipy.stats')\n"
            "print(sorted(m for m in heavy if m in sys.modules))\n"
            "from securedc.privacy import PrivacyAccountant\n"
            "from securedc.keyed_pgd import KeyedPGD\n"
            "a = PrivacyAccountant(delta=1e-5)\n"
            "a.step(noise_multiplier=1.0, sample_rate=0.1)\n"
            "print(a.epsilon() > 0, 'opacus' in sys.modules, issubclass(KeyedPGD, sys.modules['torchattacks'].PGD))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split("\n")[:2] == ["[]", "True True True"], out.stdout


def test_evaluate_trains_on_the_files_soft_labels(tmp_path) -> None:
    """`securedc evaluate` trains on a file's soft labels (KD loss) unless `--labels hard`: soft labels that
    name the next class make the models predict the next class, so accuracy collapses only when they are used."""
    import torch.nn.functional as F

    from securedc.data import load_dataset
    from securedc.evaluate import random_subset
    from securedc.export import save_condensed

    b = load_dataset("digits")
    x, y = random_subset(b.train_images, b.train_labels, 10, seed=0)
    target = save_condensed(tmp_path / "soft.safetensors", x, y, {"dataset": {"name": "digits"}},
                            soft_labels=F.one_hot((y + 1) % 10, 10).float())
    common = ("evaluate", str(target), "--models", "1", "--epochs", "40", "--dsa", "none", "--json")
    runs = {how: run_cli(*common, "--labels", how) for how in ("auto", "hard")}
    out = {}
    for how, proc in runs.items():
        assert proc.returncode == 0, proc.stderr
        out[how] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["auto"]["labels"] == "soft" and out["hard"]["labels"] == "hard"
    assert out["auto"]["dsa"] == "none" and out["auto"]["training"] == "standard"
    assert out["hard"]["mean"] > 0.5 and out["auto"]["mean"] < 0.2, out

    robust = run_cli(*common, "--labels", "hard", "--adv-train-eps", "8/255", "--epochs", "5")  # the last --epochs wins
    assert robust.returncode == 0, robust.stderr
    assert json.loads(robust.stdout.strip().splitlines()[-1])["training"]["name"] == "fgsm-rs"

    for bad, flag in ((["--labels", "x"], "--labels"), (["--adv-train-eps", "2"], "--adv-train-eps"),
                      (["--models", "0"], "--models"), (["--dsa", "bogus"], "bogus")):
        proc = run_cli("evaluate", str(target), *bad)
        assert proc.returncode == 2 and flag in proc.stderr, (bad, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_evaluate_refuses_files_that_do_not_fit_the_data(tmp_path, cli) -> None:
    """A file naming no dataset, or with more classes than the test data, is one line and exit 2 (no traceback)."""
    bare = tmp_path / "bare.safetensors"
    save_condensed(bare, torch.rand(4, 1, 8, 8), torch.tensor([0, 0, 9, 9]), {"ipc": 2})  # the docstring's minimum
    res = cli("evaluate", str(bare), "--models", "1", "--epochs", "1")
    assert res.exit_code == 2 and "--dataset" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    x, y = (np.random.default_rng(0).random((40, 8, 8)) * 255).astype(np.uint8), np.arange(40) % 2
    np.savez(tmp_path / "two.npz", x=x, y=y)
    res = cli("evaluate", str(bare), "--dataset", f"npz:{tmp_path / 'two.npz'}", "--models", "1", "--epochs", "1")
    assert res.exit_code == 2 and "10 classes" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = cli("inspect", str(bare))
    assert res.exit_code == 0 and "not recorded" in res.stdout
