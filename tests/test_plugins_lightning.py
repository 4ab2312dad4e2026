"""securedc.plugins.lightning: real Trainer runs with CondensedDataModule and CondenseCallback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

pl = pytest.importorskip("lightning.pytorch")

from securedc.errors import ConfigError  # noqa: E402
from securedc.plugins.lightning import CondensedDataModule, CondenseCallback  # noqa: E402
from securedc.plugins.torch import CondensedDataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(ipc=2, iterations=3, batch_real=16)


class DigitsDM(pl.LightningDataModule):
    def __init__(self, bundle) -> None:
        super().__init__()
        self.bundle = bundle
        self.setup_calls: list[str] = []

    def setup(self, stage: str) -> None:
        self.setup_calls.append(stage)
        b = self.bundle
        self.train_set = TensorDataset(b.train_images, b.train_labels)
        self.val_set = TensorDataset(b.test_images, b.test_labels)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=64, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=450)


class Net(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
        self.seen_train = 0

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.seen_train += len(y)
        return nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_acc", (self.net(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _trainer(**kw) -> "pl.Trainer":
    return pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, **kw)


def test_condensed_datamodule_end_to_end(digits, tmp_path):
    inner = DigitsDM(digits)
    dm = CondensedDataModule(inner, batch_size=8, cache_dir=tmp_path, **TINY)
    model = Net()
    trainer = _trainer()
    trainer.fit(model, datamodule=dm)
    assert isinstance(dm.condensed, CondensedDataset) and len(dm.condensed) == 20
    assert model.seen_train == 20 and trainer.global_step == 3  # batches of 8, 8, 4 from the condensed set
    assert "fit" in inner.setup_calls and "val_acc" in trainer.callback_metrics  # val passes through
    assert len(list(tmp_path.glob("*.safetensors"))) == 1


def test_condensed_datamodule_over_dataset_has_no_val(digits, tmp_path):
    from lightning.pytorch.utilities.model_helpers import is_overridden

    dm = CondensedDataModule(TensorDataset(digits.train_images, digits.train_labels), batch_size=64,
                             cache_dir=tmp_path, **TINY)
    assert not is_overridden("val_dataloader", dm)
    model = Net()
    trainer = _trainer()
    trainer.fit(model, datamodule=dm)
    assert model.seen_train == 20 and trainer.global_step == 1


def test_condense_callback_swaps_train_data_and_survives_reload(digits, tmp_path):
    dm = DigitsDM(digits)
    cb = CondenseCallback(batch_size=10, cache_dir=tmp_path, **TINY)
    model = Net()
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[cb],
                         reload_dataloaders_every_n_epochs=1)
    trainer.fit(model, datamodule=dm)
    assert isinstance(cb.condensed, CondensedDataset) and len(cb.condensed) == 20
    assert model.seen_train == 40 and trainer.global_step == 4  # 2 epochs x 2 batches, condensed after reload
    assert isinstance(trainer.train_dataloader.dataset, CondensedDataset)
    assert "val_acc" in trainer.callback_metrics


def test_condense_callback_refuses_loaders_passed_to_fit(digits, tmp_path):
    loader = DataLoader(TensorDataset(digits.train_images, digits.train_labels), batch_size=64)
    trainer = _trainer(callbacks=[CondenseCallback(cache_dir=tmp_path, **TINY)])
    with pytest.raises(ConfigError, match="cannot be swapped"):
        trainer.fit(Net(), train_dataloaders=loader)


@pytest.mark.parametrize("mode", ["datamodule", pytest.param("callback", marks=pytest.mark.slow)])
def test_lightning_example_runs(mode, tmp_path):
    cmd = [sys.executable, str(ROOT / "examples" / "lightning_trainer.py"), "--mode", mode, "--ipc", "2",
           "--iterations", "3", "--batch-real", "16", "--epochs", "1", "--cache-dir", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True).stdout
    assert f"mode={mode} train batches=1 " in out


def test_docstring_examples():
    import doctest

    import securedc.plugins.lightning as module

    result = doctest.testmod(module)
    assert result.attempted >= 2 and result.failed == 0
