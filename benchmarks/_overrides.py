"""``key=value`` command-line overrides of :class:`~securedc.config.CondenseConfig` for benchmark scripts."""

from __future__ import annotations

import dataclasses
from typing import Any

from securedc.config import CondenseConfig


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["lr_img=0.1", "init=real"]`` -> ``{"lr_img": 0.1, "init": "real"}`` typed by the field defaults.

    A field whose default is ``None`` takes an integer when the text is one (``releases=2``), else a
    float (``lr_img=0.1``), else the text.
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
        elif isinstance(default, float):
            out[key] = float(value)
        elif default is None:
            out[key] = _number_or_text(value)
        else:
            out[key] = value
    return out


def _number_or_text(value: str) -> int | float | str:
    for parse in (int, float):
        try:
            return parse(value)
        except ValueError:
            continue
    return value
