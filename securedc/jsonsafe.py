"""JSON-safe values: the one converter used by configs, audit results, gates and reports.

JSON has no ``inf`` or ``nan`` (``json.dumps(..., allow_nan=False)`` refuses them), tuples
come back as lists, keys must be strings, and numpy / torch scalars are not serialisable.
:func:`json_ready` maps all of these to plain JSON values, recursively.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["json_ready"]


def json_ready(value: Any) -> Any:
    """Recursively convert ``value`` to plain JSON values.

    Non-finite floats become the strings ``"inf"``, ``"-inf"`` and ``"nan"`` (``float()`` reads
    them back), dict keys become strings, tuples become lists, and numpy / torch scalars become
    Python numbers. Everything else is returned unchanged.

    Example:
        >>> json_ready({"epsilon": float("inf"), 1: (0.5, float("nan"))})
        {'epsilon': 'inf', '1': [0.5, 'nan']}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return json_ready(value.item())
    return value
