"""Discrepancies between real and synthetic class distributions (one file each).

Importing this package registers every discrepancy; a new one is one file plus one import line.
"""

from securedc.discrepancy.base import (
    Discrepancy,
    create_discrepancy,
    list_discrepancies,
    register_discrepancy,
)
from securedc.discrepancy.characteristic import CharacteristicFunction  # noqa: F401  (registers)
from securedc.discrepancy.mean_embedding import MeanEmbedding  # noqa: F401
from securedc.discrepancy.mmd import MMD  # noqa: F401
from securedc.discrepancy.sliced_wasserstein import SlicedWasserstein  # noqa: F401

__all__ = [
    "Discrepancy",
    "register_discrepancy",
    "create_discrepancy",
    "list_discrepancies",
    "MeanEmbedding",
    "MMD",
    "CharacteristicFunction",
    "SlicedWasserstein",
]
