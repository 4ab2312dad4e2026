"""Lightning 2.x on sklearn digits, trained on a condensed set — two ways.

Run::

    python examples/lightning_trainer.py --mode datamodule   # CondensedDataModule(dm, ...)
    python examples/lightning_trainer.py --mode callback     # Trainer(callbacks=[CondenseCallback(...)])

Tiny settings (``--iterations 5 --epochs 1``) finish in seconds on CPU. Needs
``pip install securedc[lightning]``.
"""

from __future__ import annotations

import argparse

import lightning.pytorch as pl
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from securedc.plugins.lightning import CondensedDataModule, CondenseCallback


class DigitsDataModule(pl.LightningDataModule):
    """An ordinary DataModule: sklearn digits, 75/25 split, [N, 1, 8, 8] tensors in [0, 1]."""

    def __init__(self, batch_size: int = 64) -> None:
        super().__init__()
        self.batch_size = batch_size

    def setup(self, stage: str) -> None:
        data = load_digits()
        x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
        y = torch.tensor(data.target, dtype=torch.int64)
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
        cut = int(0.75 * len(y))
        self.train_set = TensorDataset(x[perm[:cut]], y[perm[:cut]])
        self.val_set = TensorDataset(x[perm[cut:]], y[perm[cut:]])

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=256)


class Classifier(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val_acc", (self.net(x).argmax(1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["datamodule", "callback"], default="datamodule")
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--batch-real", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args()
    pl.seed_everything(0, verbose=False)
    torch.set_num_threads(2)
    settings = dict(ipc=args.ipc, iterations=args.iterations, batch_real=args.batch_real, cache_dir=args.cache_dir)
    trainer_args = dict(max_epochs=args.epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)

    model = Classifier()
    if args.mode == "datamodule":
        dm = CondensedDataModule(DigitsDataModule(), batch_size=64, **settings)
        trainer = pl.Trainer(**trainer_args)
    else:
        dm = DigitsDataModule()
        trainer = pl.Trainer(callbacks=[CondenseCallback(batch_size=64, **settings)], **trainer_args)
    trainer.fit(model, datamodule=dm)
    steps = trainer.global_step
    print(f"mode={args.mode} train batches={steps} val_acc={float(trainer.callback_metrics['val_acc']):.3f}")


if __name__ == "__main__":
    main()
