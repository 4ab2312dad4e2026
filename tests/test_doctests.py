"""Run every docstring example in securedc, securedc.audits and securedc.plugins (docs/design.md).

Modules are imported by their package names (never as top-level ``audits.*``), so
registries are populated exactly once.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest
import torch

import securedc
import securedc.audits
import securedc.plugins


def _modules() -> list[str]:
    names = []
    for pkg in (securedc, securedc.audits, securedc.plugins):
        names.append(pkg.__name__)
        for info in pkgutil.walk_packages(pkg.__path__, prefix=pkg.__name__ + "."):
            names.append(info.name)
    return sorted(set(names))


@pytest.mark.parametrize("name", _modules())
def test_doctests(name: str) -> None:
    try:
        module = importlib.import_module(name)
    except ImportError as err:  # optional extras (lightning) may be absent
        pytest.skip(f"{name}: {err}")
    torch.manual_seed(0)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
