"""``key=value`` command-line overrides of :class:`~securedc.config.CondenseConfig` for benchmark scripts."""

from __future__ import annotations

import dataclasses
from typing import Any

from securedc.config import CondenseConfig


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["lr_img=0.1", "init=real"]`` -> ``{"lr_img": 0.1, "init": "real"}`` typed by the field defaults.

    A field whose default is ``None`` (e.g. ``lr_img``) is parsed as a float.
    """
    fields = {f.name: f for f in dataclasses.fields(CondenseConfig)}
    out: dict[str, Any] = {}
    for item in items:
        key, value = item.split("=", 1)
        if key not in fields:
            raise SystemExit(f"unknown CondenseConfig field {key!r}")
        default = fields[key].default
        if isinstance(default, bool):
            out[key] = value.lower() in ("1", "true", "yes")
        elif isinstance(default, int):
            out[key] = int(value)
        elif isinstance(default, float) or default is None:
            out[key] = float(value)
        else:
            out[key] = value
    return out
