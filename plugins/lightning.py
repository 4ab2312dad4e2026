"""Lightning 2.x integration: a condensing DataModule and a callback (``pip install securedc[lightning]``).

Two ways to train a LightningModule on a condensed set:

* :class:`CondensedDataModule` wraps a ``LightningDataModule`` (or a plain Dataset): it
  condenses the training data in ``setup("fit")`` and serves the condensed set from
  ``train_dataloader``; validation/test/predict loaders pass through unchanged.
* :class:`CondenseCallback` keeps the user's DataModule: at ``on_fit_start`` it condenses
  the DataModule's training dataset and replaces the DataModule's ``train_dataloader``
  method on that instance, which is the public hook Lightning calls whenever it (re)loads
  the training data. Because the *method* is replaced (not one loader object),
  ``reload_dataloaders_every_n_epochs`` keeps serving the condensed set.

In both, global rank 0 condenses (or loads the cache, see
:func:`securedc.plugins.torch.condense`), the path is broadcast with
``trainer.strategy.broadcast`` and the other ranks wait in ``trainer.strategy.barrier()``
and load the file; the cache directory must therefore be visible to every rank (one node,
or a shared file system).

References:
    Zhao & Bilen, "Dataset Condensation with Distribution Matching", WACV 2023.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable

from torch.utils.data import DataLoader, Dataset

from securedc.config import CondenseConfig
from securedc.errors import ConfigError
from securedc.plugins.torch import CondensedDataset, PGDRecipe, adversarial_batch, condense, condensed_loader

try:
    import lightning.pytorch as pl
    from lightning.pytorch.utilities.model_helpers import is_overridden
except ImportError as _err:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "securedc.plugins.lightning needs Lightning 2.x: pip install securedc[lightning]"
    ) from _err

__all__ = ["CondensedDataModule", "CondenseCallback"]

logger = logging.getLogger(__name__)

_PASSTHROUGH = ("val_dataloader", "test_dataloader", "predict_dataloader")


def _condense_on_rank_zero(
    trainer: "pl.Trainer | None",
    dataset_fn: Callable[[], Dataset],
    *,
    config: CondenseConfig | None,
    cache_dir: "str | os.PathLike[str] | None",
    kwargs: dict[str, Any],
) -> CondensedDataset:
    """Rank 0 condenses (or hits the cache); the others wait, receive the path and load it."""
    ipc = kwargs.pop("ipc", config.ipc if config is not None else 10)
    if trainer is None or trainer.world_size == 1:
        return condense(dataset_fn(), ipc=ipc, config=config, cache_dir=cache_dir, **kwargs)
    strategy = trainer.strategy
    path: str | None = None
    if trainer.global_rank == 0:
        path = str(condense(dataset_fn(), ipc=ipc, config=config, cache_dir=cache_dir, **kwargs).path)
    strategy.barrier("securedc-condense")
    path = strategy.broadcast(path, src=0)
    return CondensedDataset(path, transform=kwargs.get("transform"), allow_uncertified=True)


class CondensedDataModule(pl.LightningDataModule):
    """Serve a condensed version of a DataModule's (or a Dataset's) training data.

    Args:
        datamodule_or_dataset: a ``LightningDataModule`` (its ``train_dataloader().dataset``
            after ``setup("fit")`` is condensed) or a map-style Dataset.
        config: base :class:`~securedc.config.CondenseConfig` (``ipc`` etc.); keyword
            arguments in ``condense_kwargs`` override it.
        batch_size: batch size of the condensed train loader (capped at the set size).
        cache_dir: condensation cache (default ``~/.cache/securedc/condensed``).
        seed: seed of the train loader's shuffling.
        num_workers: train loader workers.
        class_balanced: class-balanced sampling (see :func:`condensed_loader`).
        val_dataset: for a wrapped Dataset, an optional validation Dataset.
        adversarial: a :class:`~securedc.robust.PGDRecipe`: during training every condensed batch is
            replaced (``on_after_batch_transfer``, on the model's device) by its PGD examples against
            the LightningModule being trained (which must define ``forward(x)`` returning logits:
            the attack calls it) — adversarial training on S. Validation/test batches
            are untouched. Soft-label targets (files with ``soft_labels``) pass through; PGD
            attacks their argmax.
        **condense_kwargs: passed to :func:`securedc.plugins.torch.condense`
            (``ipc``, ``epsilon``, ``iterations``, ``batch_real`` …).

    Attributes:
        condensed: the :class:`CondensedDataset` after ``setup("fit")``.

    Example:
        >>> import tempfile, torch
        >>> from torch.utils.data import TensorDataset
        >>> data = TensorDataset(torch.rand(40, 1, 8, 8), torch.arange(40) % 2)
        >>> dm = CondensedDataModule(data, ipc=2, iterations=2, batch_real=8, batch_size=4,
        ...                          cache_dir=tempfile.mkdtemp())
        >>> dm.setup("fit"); len(dm.condensed), len(dm.train_dataloader())
        (4, 1)
    """

    def __init__(
        self,
        datamodule_or_dataset: "pl.LightningDataModule | Dataset",
        config: CondenseConfig | None = None,
        *,
        batch_size: int = 256,
        cache_dir: "str | os.PathLike[str] | None" = None,
        seed: int = 0,
        num_workers: int = 0,
        class_balanced: bool = False,
        val_dataset: Dataset | None = None,
        adversarial: PGDRecipe | None = None,
        **condense_kwargs: Any,
    ) -> None:
        super().__init__()
        if adversarial is not None and not isinstance(adversarial, PGDRecipe):
            raise ConfigError(f"adversarial must be a PGDRecipe(eps=..., steps=...), got {type(adversarial).__name__}")
        self.adversarial = adversarial
        self.wrapped = datamodule_or_dataset
        self.is_datamodule = isinstance(datamodule_or_dataset, pl.LightningDataModule)
        if not self.is_datamodule and not (hasattr(datamodule_or_dataset, "__getitem__") and hasattr(datamodule_or_dataset, "__len__")):
            raise ConfigError(
                f"CondensedDataModule wraps a LightningDataModule or a map-style Dataset; got {type(datamodule_or_dataset).__name__}"
            )
        self.config = config
        self.batch_size = batch_size
        self.cache_dir = cache_dir
        self.seed = seed
        self.num_workers = num_workers
        self.class_balanced = class_balanced
        self.condense_kwargs = condense_kwargs
        self.val_dataset = val_dataset
        self.condensed: CondensedDataset | None = None
        # pass val/test/predict through, and only those the wrapped module defines, so that
        # Lightning's "is this loop defined?" check (is_overridden on the instance) stays right
        if self.is_datamodule:
            for name in _PASSTHROUGH:
                if is_overridden(name, self.wrapped):
                    setattr(self, name, getattr(self.wrapped, name))
        elif val_dataset is not None:
            self.val_dataloader = self._val_from_dataset  # type: ignore[method-assign]

    def _val_from_dataset(self) -> DataLoader:
        assert self.val_dataset is not None
        return DataLoader(self.val_dataset, batch_size=self.batch_size, num_workers=self.num_workers)

    def prepare_data(self) -> None:
        if self.is_datamodule:
            self.wrapped.prepare_data()  # type: ignore[union-attr]

    def setup(self, stage: str) -> None:
        if self.is_datamodule:
            wrapped = self.wrapped
            wrapped.trainer = self.trainer  # type: ignore[union-attr]
            wrapped.setup(stage)  # type: ignore[union-attr]
        if stage == "fit" and self.condensed is None:
            self.condensed = _condense_on_rank_zero(
                self.trainer,
                self._train_dataset,
                config=self.config,
                cache_dir=self.cache_dir,
                kwargs=dict(self.condense_kwargs),
            )
            logger.info("training on %r", self.condensed)

    def _train_dataset(self) -> Dataset:
        if not self.is_datamodule:
            return self.wrapped  # type: ignore[return-value]
        loader = self.wrapped.train_dataloader()  # type: ignore[union-attr]
        if not isinstance(loader, DataLoader):
            raise ConfigError("the wrapped DataModule's train_dataloader() must return one DataLoader to be condensed")
        return loader.dataset

    def train_dataloader(self) -> DataLoader:
        if self.condensed is None:
            raise ConfigError("CondensedDataModule.train_dataloader() called before setup('fit')")
        return condensed_loader(
            self.condensed, batch_size=self.batch_size, shuffle=True, seed=self.seed,
            num_workers=self.num_workers, class_balanced=self.class_balanced,
        )

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        trainer = self.trainer
        if self.adversarial is None or trainer is None or not trainer.training:
            return batch
        x, target = batch[0], batch[1]
        model = trainer.lightning_module
        if not is_overridden("forward", model, parent=pl.LightningModule):
            raise ConfigError(f"adversarial=PGDRecipe attacks the model being trained: {type(model).__name__} must "
                              "define forward(x) returning logits")
        seed = self.seed * 1_000_003 + int(trainer.global_step)
        return (adversarial_batch(model, x, target, recipe=self.adversarial, seed=seed), target, *batch[2:])

    def teardown(self, stage: str) -> None:
        if self.is_datamodule:
            self.wrapped.teardown(stage)  # type: ignore[union-attr]


class CondenseCallback(pl.Callback):
    """Condense the training data at fit start and train on the condensed set.

    Works with a ``LightningDataModule`` given to ``trainer.fit(model, datamodule=dm)``
    (preferred) or a LightningModule that defines ``train_dataloader``. The dataset to
    condense is ``dataset_fn(trainer)`` if given, else ``train_dataloader().dataset`` of the
    source; the instance's ``train_dataloader`` method is then replaced by one returning
    :func:`condensed_loader` over the condensed set. Validation and test data are untouched.

    Caveats:
        * Loaders passed directly as ``trainer.fit(model, train_dataloaders=...)`` cannot be
          swapped through a public hook; the callback raises :class:`ConfigError` then
          (condense first with :func:`securedc.plugins.torch.condense`).
        * ``reload_dataloaders_every_n_epochs`` is fine: Lightning calls the replaced method.
        * A dataset with *random* transforms is materialised once (one random draw per
          image) and its fingerprint changes every run (no cache hits); pass ``dataset_fn``
          returning the un-augmented dataset.

    Args:
        config: base :class:`~securedc.config.CondenseConfig`.
        batch_size: batch size (default: the original loader's batch size).
        cache_dir: condensation cache.
        seed: shuffling seed of the condensed loader.
        dataset_fn: ``trainer -> Dataset`` choosing what to condense.
        **condense_kwargs: passed to :func:`securedc.plugins.torch.condense`.

    Attributes:
        condensed: the :class:`CondensedDataset` after fit start.
    """

    def __init__(
        self,
        config: CondenseConfig | None = None,
        *,
        batch_size: int | None = None,
        cache_dir: "str | os.PathLike[str] | None" = None,
        seed: int = 0,
        dataset_fn: "Callable[[pl.Trainer], Dataset] | None" = None,
        **condense_kwargs: Any,
    ) -> None:
        super().__init__()
        self.config = config
        self.batch_size = batch_size
        self.cache_dir = cache_dir
        self.seed = seed
        self.dataset_fn = dataset_fn
        self.condense_kwargs = condense_kwargs
        self.condensed: CondensedDataset | None = None

    def _source(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> Any:
        data_source = getattr(getattr(trainer, "fit_loop", None), "_data_source", None)
        instance = getattr(data_source, "instance", None)
        if trainer.datamodule is not None:
            return trainer.datamodule
        if instance is pl_module and is_overridden("train_dataloader", pl_module):
            return pl_module
        raise ConfigError(
            "CondenseCallback swaps the train data of a LightningDataModule (trainer.fit(model, datamodule=dm)) "
            "or of LightningModule.train_dataloader; loaders passed to fit() directly cannot be swapped: "
            "use securedc.plugins.torch.condense(dataset, ...) and pass condensed_loader(...) instead"
        )

    def on_fit_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        source = self._source(trainer, pl_module)
        original = source.train_dataloader

        def dataset() -> Dataset:
            if self.dataset_fn is not None:
                return self.dataset_fn(trainer)
            loader = original()
            if not isinstance(loader, DataLoader):
                raise ConfigError("train_dataloader() must return one DataLoader for CondenseCallback")
            return loader.dataset

        batch_size = self.batch_size
        if batch_size is None:
            loader = original()
            batch_size = getattr(loader, "batch_size", None) or 256
        self.condensed = _condense_on_rank_zero(
            trainer, dataset, config=self.config, cache_dir=self.cache_dir, kwargs=dict(self.condense_kwargs)
        )
        condensed, seed = self.condensed, self.seed

        def train_dataloader() -> DataLoader:
            return condensed_loader(condensed, batch_size=batch_size, shuffle=True, seed=seed)

        source.train_dataloader = train_dataloader
        logger.info("CondenseCallback: training on %r", condensed)
