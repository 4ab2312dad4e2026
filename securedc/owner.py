"""The owner record: ``NAME.owner.json`` beside a release, for the data owner only.

A release (``NAME.safetensors``) carries nothing computed from the private data except through
the DP mechanism: anyone holding a candidate dataset could test it against a data fingerprint, a
member-index hash or an exact training-set size, and audit and evaluation numbers are measured on
the real data. Everything of that kind the owner still needs lives in the owner record, written
next to the release with owner-only permissions (``0o600``) and never inside it:

=================  ==============================================================================
key                content
=================  ==============================================================================
``format``         ``"securedc-owner"``
``version``        layout version (:data:`OWNER_VERSION`)
``release``        file name of the release the record belongs to
``tensor_sha256``  the release's tensor hash: binds the record to exactly that release
``dataset``        ``fingerprint``, ``num_train``, ``num_test`` (exact counts of the real data)
``condensation``   ``seconds`` (wall time depends on how many real examples were sampled)
``audit``          the full audit: ``gates``, ``reasons``, ``headline`` numbers, member ``split``
                   (incl. ``members_sha256``), ``report`` path (audited runs only)
``evaluation``     accuracy of models trained on the release, measured on real test data
``cache``          ``key`` of :func:`securedc.plugins.torch.cache_key` (plugin cache files only)
=================  ==============================================================================

Do not publish the owner record; ``securedc audit --recertify``, ``securedc inspect`` and the
plugin cache read it.

Example:
    >>> import tempfile, pathlib
    >>> release = pathlib.Path(tempfile.mkdtemp()) / "digits-ipc1.safetensors"
    >>> owner_path(release).name
    'digits-ipc1.owner.json'
    >>> _ = write_owner_record(release, {"dataset": {"num_train": 1347}}, tensor_sha256="ab" * 32)
    >>> read_owner_record(release, tensor_sha256="ab" * 32)["dataset"]["num_train"]
    1347
    >>> oct(owner_path(release).stat().st_mode & 0o777)
    '0o600'
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from securedc.errors import DataError
from securedc.io import atomic_write_text, ensure_writable_dir

__all__ = ["OWNER_FORMAT", "OWNER_VERSION", "OWNER_SUFFIX", "owner_path", "write_owner_record", "read_owner_record"]

logger = logging.getLogger(__name__)

OWNER_FORMAT = "securedc-owner"
"""Value of the record's ``format`` key."""

OWNER_VERSION = 1
"""Layout version; records with a larger number are refused (upgrade securedc)."""

OWNER_SUFFIX = ".owner.json"
"""Suffix replacing ``.safetensors`` in the owner record's file name."""

_OWNER_MODE = 0o600
_RESERVED = ("format", "version", "release", "tensor_sha256")


def owner_path(target: str | os.PathLike[str]) -> Path:
    """The owner record of a release: ``NAME.safetensors`` → ``NAME.owner.json`` (same directory).

    Args:
        target: The release file (it need not exist yet).

    Returns:
        The owner record's path; a name without the ``.safetensors`` suffix gets
        ``.owner.json`` appended.

    Example:
        >>> owner_path("out/s.safetensors").as_posix(), owner_path("out/s.bin").as_posix()
        ('out/s.owner.json', 'out/s.bin.owner.json')
    """
    release = Path(target)
    return release.with_name(release.name.removesuffix(".safetensors") + OWNER_SUFFIX)


def write_owner_record(
    target: str | os.PathLike[str], record: Mapping[str, Any], *, tensor_sha256: str
) -> Path:
    """Write the owner record of release ``target`` atomically, readable by the owner only.

    Args:
        target: The release file the record belongs to (``NAME.safetensors``).
        record: Plain-JSON sections (``dataset``, ``audit``, ``evaluation``, ``cache`` ...); the
            keys ``format``, ``version``, ``release`` and ``tensor_sha256`` are set here.
        tensor_sha256: The release's tensor hash (:func:`securedc.export.tensor_digest`).

    Returns:
        The path written (:func:`owner_path` of ``target``), mode ``0o600``.

    Raises:
        DataError: ``record`` is not a dict of plain JSON (finite floats, string keys).
        ConfigError: The directory cannot be created or written.
    """
    if not isinstance(record, Mapping):
        raise DataError(f"owner record must be a dict, got {type(record).__name__}")
    release = Path(target)
    full = {k: v for k, v in record.items() if k not in _RESERVED}
    full.update(format=OWNER_FORMAT, version=OWNER_VERSION, release=release.name, tensor_sha256=str(tensor_sha256))
    try:
        text = json.dumps(full, indent=1, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise DataError(f"owner record of {str(release)!r} is not plain JSON: {err}") from err
    path = owner_path(release)
    ensure_writable_dir(path.parent)
    atomic_write_text(path, text + "\n", mode=_OWNER_MODE)
    logger.info("owner record written to %s (keep it private)", path)
    return path


def read_owner_record(
    target: str | os.PathLike[str], *, tensor_sha256: str | None = None, missing_ok: bool = False
) -> dict[str, Any] | None:
    """Read the owner record of release ``target``.

    Args:
        target: The release file (``NAME.safetensors``).
        tensor_sha256: When given, the record must belong to the release with this tensor hash.
        missing_ok: Return ``None`` instead of raising when the record does not exist.

    Returns:
        The record (a dict), or ``None`` when it is missing and ``missing_ok``.

    Raises:
        DataError: The record is missing (unless ``missing_ok``), unreadable, not a securedc owner
            record, of a newer version, or belongs to another release.
    """
    path = owner_path(target)
    if not path.is_file():
        if missing_ok:
            return None
        raise DataError(f"owner file {str(path)!r} not found; it is written beside the release by "
                        "`securedc condense` and only the data owner has it")
    invalid = f"owner file {str(path)!r} is not a valid securedc owner record"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise DataError(f"owner file {str(path)!r} cannot be read ({err.strerror or err})") from err
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{invalid}: not JSON ({err})") from err
    if not isinstance(data, dict) or data.get("format") != OWNER_FORMAT:
        raise DataError(f"{invalid}: format is not {OWNER_FORMAT!r}")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise DataError(f"{invalid}: version {version!r} is not a positive integer")
    if version > OWNER_VERSION:
        raise DataError(f"{invalid}: version {version} is newer than this securedc supports ({OWNER_VERSION}); "
                        "upgrade securedc to read it")
    if tensor_sha256 is not None and data.get("tensor_sha256") != tensor_sha256:
        raise DataError(f"owner file {str(path)!r} belongs to another release (tensor hash "
                        f"{str(data.get('tensor_sha256'))[:12]}…, the release has {tensor_sha256[:12]}…)")
    return data
