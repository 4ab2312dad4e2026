"""Dataset sources by name and the :class:`DatasetBundle` they return.

``load_dataset(name)`` looks ``name`` up in the source registry (:mod:`securedc.data.registry`);
each source module below registers itself on import (as opacus' ``grad_sample/__init__.py``
does), so this file is the table of contents:

- ``digits`` (default) — :mod:`securedc.data.digits`
- ``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar100``, ``svhn`` — :mod:`securedc.data.torchvision_sources`
- ``idx:DIR`` — :mod:`securedc.data.idx`
- ``npz:FILE`` — :mod:`securedc.data.npz`
- ``folder:DIR`` — :mod:`securedc.data.folder`

Any map-style torch ``Dataset`` converts with :func:`bundle_from_torch_dataset`.
"""

from securedc.data.bundle import DatasetBundle, compute_fingerprint
from securedc.data.registry import DEFAULT_ROOT, list_datasets, load_dataset, register_source
from securedc.data.torch_dataset import bundle_from_torch_dataset

# Import every source so its @register_source runs (order = order in `securedc datasets`).
from securedc.data import digits  # noqa: F401,E402  isort: skip
from securedc.data import torchvision_sources  # noqa: F401,E402  isort: skip
from securedc.data import idx  # noqa: F401,E402  isort: skip
from securedc.data import npz  # noqa: F401,E402  isort: skip
from securedc.data import folder  # noqa: F401,E402  isort: skip

__all__ = [
    "DatasetBundle",
    "DEFAULT_ROOT",
    "bundle_from_torch_dataset",
    "compute_fingerprint",
    "list_datasets",
    "load_dataset",
    "register_source",
]
