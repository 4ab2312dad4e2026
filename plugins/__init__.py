"""Integrations of securedc with training code (imported on demand, one module per framework).

* :mod:`securedc.plugins.torch` — ``CondensedDataset``, cached ``condense(dataset, ...)``,
  ``condensed_loader``, ``MixedDataset`` / ``replay_mix`` for plain PyTorch loops.
* :mod:`securedc.plugins.lightning` — ``CondensedDataModule`` and ``CondenseCallback``
  (needs ``pip install securedc[lightning]``).
* :mod:`securedc.plugins.distributed` — ``fit_distributed``: classes split across the
  ranks of a ``torchrun`` job, bit-identical to one process.
"""
