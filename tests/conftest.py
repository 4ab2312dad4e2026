"""Shared fixtures: real data (digits, a Fashion-MNIST slice), seeds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from securedc.data import DatasetBundle, load_dataset

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def interrupt_at():
    """``interrupt_at(condenser, mechanism, checkpoint, step)``: fit until ``step`` steps are done, then
    Ctrl-C (the run writes its checkpoint to ``checkpoint`` and re-raises)."""

    def run(condenser, mechanism, checkpoint, step: int) -> None:
        def stop(event) -> None:
            if event.step == step:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            condenser.fit(mechanism, checkpoint_path=checkpoint, callback=stop)

    return run


@pytest.fixture(scope="session")
def digits() -> DatasetBundle:
    return load_dataset("digits")


@pytest.fixture(scope="session")
def fmnist_small() -> DatasetBundle:
    """2000 training / 1000 test images of Fashion-MNIST (stratified by construction: first indices)."""
    if not FMNIST_DIR.is_dir():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    full = load_dataset("fashion-mnist")
    return DatasetBundle(
        name="fashion-mnist-small",
        train_images=full.train_images[:2000].clone(),
        train_labels=full.train_labels[:2000].clone(),
        test_images=full.test_images[:1000].clone(),
        test_labels=full.test_labels[:1000].clone(),
        classes=full.classes,
        mean=full.mean,
        std=full.std,
        source=full.source,
    )


@pytest.fixture
def cli():
    """Run the CLI in-process (fast path for argument errors); returns typer's Result (exit_code, stdout, stderr)."""
    from typer.testing import CliRunner

    from securedc.cli import app

    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def bank_roundtrip(tmp_path):
    """Save a run's statistics bank to a safetensors file and load it back: ``(bank, manifest)``."""
    from securedc.bank import StatisticsBank

    def roundtrip(condenser, result, dataset: str = "digits"):
        path = tmp_path / "bank.safetensors"
        condenser.save_bank(path, result, dataset=dataset)
        return StatisticsBank.load(path)

    return roundtrip
