"""The securedc file format: a safetensors file whose metadata holds a JSON manifest.

A condensed set is saved as ``NAME.safetensors`` with two tensors, ``images``
``[M, C, H, W]`` float32 in [0, 1] and ``labels`` ``[M]`` int64, and one metadata key,
``securedc``, holding the manifest (docs/design.md): version, dataset, configuration,
privacy accounting, audit verdict and the SHA-256 of the tensors. Loading verifies the
format, the schema version and the hash, so a modified or truncated file is refused
instead of silently used.

Only the safetensors reader is used to load files: it parses a JSON header and raw tensor
bytes, so opening an untrusted ``.safetensors`` file cannot execute code.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import logging
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as _safetensors_save
from torch import Tensor

from securedc.errors import ConfigError, DataError
from securedc.io import atomic_write_bytes, ensure_writable_dir

__all__ = [
    "check_compatible",
    "dataset_of",
    "SCHEMA_VERSION",
    "CondensedSet",
    "tensor_digest",
    "save_condensed",
    "load_condensed",
    "update_manifest",
    "save_image_grid",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1

#: manifest sections that are JSON objects whenever present (readers index into them)
_SECTIONS = ("dataset", "privacy", "audit", "config", "adversarial", "soft_label_teacher")
"""Version of the manifest layout; files with a larger number are refused (upgrade securedc)."""

_FORMAT = "securedc"
_METADATA_KEY = "securedc"
_TENSOR_KEYS = ("images", "labels")
_RESERVED_KEYS = (
    "format",
    "schema_version",
    "securedc_version",
    "tensor_sha256",
    "shape",
    "num_images",
)


@dataclass(frozen=True, eq=False)
class CondensedSet:
    """A loaded condensed set: tensors plus the manifest stored with them.

    Attributes:
        images: ``[M, C, H, W]`` float32 in [0, 1].
        labels: ``[M]`` int64.
        manifest: The JSON manifest (see docs/design.md), including the keys securedc adds:
            ``format``, ``schema_version``, ``securedc_version``, ``tensor_sha256``,
            ``shape``, ``num_images``.
        soft_labels: optional per-image soft labels ``[M, num_classes]`` (probabilities from a
            robust teacher; post-processing of S), verified against ``soft_labels_sha256``.
    """

    images: Tensor
    labels: Tensor
    manifest: dict[str, Any]
    soft_labels: Tensor | None = None  # [M, num_classes] probabilities, when the file has them

    @property
    def certified(self) -> bool:
        """Whether the audit certified this set (``manifest["audit"]["certified"]``)."""
        audit = self.manifest.get("audit", {})
        return bool(audit.get("certified", False)) if isinstance(audit, Mapping) else False

    @property
    def privacy(self) -> dict[str, Any]:
        """The privacy section of the manifest (ε, δ, σ, q, T, C, ...); ``{}`` if absent."""
        privacy = self.manifest.get("privacy", {})
        return privacy if isinstance(privacy, dict) else {}

    @property
    def dataset_name(self) -> str | None:
        """The dataset the manifest names (``manifest["dataset"]["name"]``), or ``None``."""
        name = (self.manifest.get("dataset") or {}).get("name")
        return name if isinstance(name, str) and name else None

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _tensor_bytes(tensor: Tensor) -> bytes:
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    if sys.byteorder != "little":  # pragma: no cover - no big-endian CI
        return flat.numpy().byteswap().tobytes()
    return flat.view(torch.uint8).numpy().tobytes()


def tensor_digest(images: Tensor, labels: Tensor) -> str:
    """SHA-256 of the images and labels: shapes, dtypes and raw little-endian bytes.

    Args:
        images: Any tensor (normally ``[M, C, H, W]`` float32).
        labels: Any tensor (normally ``[M]`` int64).

    Returns:
        64 hex digits. Equal iff shapes, dtypes and every byte agree.

    Example:
        >>> d = tensor_digest(torch.zeros(1, 1, 2, 2), torch.zeros(1, dtype=torch.int64))
        >>> len(d), d == tensor_digest(torch.zeros(1, 1, 2, 2), torch.ones(1, dtype=torch.int64))
        (64, False)
    """
    digest = hashlib.sha256()
    for name, tensor in zip(_TENSOR_KEYS, (images, labels)):
        header = {"name": name, "dtype": str(tensor.dtype), "shape": list(tensor.shape)}
        encoded = json.dumps(header, sort_keys=True).encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "little"))
        digest.update(encoded)
        payload = _tensor_bytes(tensor)
        digest.update(len(payload).to_bytes(8, "little"))
        digest.update(payload)
    return digest.hexdigest()


def _check_tensors(images: Any, labels: Any, *, where: str) -> tuple[Tensor, Tensor]:
    """Validate shapes, dtypes and ranges; return CPU, contiguous, float32/int64 copies."""
    if not isinstance(images, Tensor) or not isinstance(labels, Tensor):
        raise DataError(
            f"{where}: images and labels must be torch tensors, got "
            f"{type(images).__name__} and {type(labels).__name__}"
        )
    if images.dim() != 4:
        raise DataError(
            f"{where}: images must be 4-D [M, C, H, W], got shape {list(images.shape)}; "
            "add a channel axis with images.unsqueeze(1) for grayscale"
        )
    if not images.is_floating_point():
        raise DataError(
            f"{where}: images must be floating point in [0, 1], got dtype {images.dtype}; "
            "convert with images.float() / 255"
        )
    if labels.dim() != 1 or labels.dtype != torch.int64:
        raise DataError(
            f"{where}: labels must be a 1-D int64 tensor, got dtype {labels.dtype} and shape "
            f"{list(labels.shape)}; convert with labels.long().reshape(-1)"
        )
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{where}: {images.shape[0]} images but {labels.shape[0]} labels; "
            "each image needs exactly one label"
        )
    if images.shape[0] == 0:
        raise DataError(f"{where}: the condensed set is empty (0 images); need at least one")
    images = images.detach().to(device="cpu", dtype=torch.float32).contiguous()
    labels = labels.detach().to(device="cpu").contiguous()
    if not bool(torch.isfinite(images).all()):
        raise DataError(f"{where}: images contain NaN or infinite values; they must be in [0, 1]")
    lo, hi = float(images.min()), float(images.max())
    if lo < 0.0 or hi > 1.0:
        raise DataError(
            f"{where}: image values must be in [0, 1], found range [{lo:.4g}, {hi:.4g}]; "
            "clamp with images.clamp(0, 1) or undo the normalisation"
        )
    if int(labels.min()) < 0:
        raise DataError(f"{where}: labels must be >= 0 class indices, found {int(labels.min())}")
    return images, labels


def _json_problem(value: Any, key: str) -> str | None:
    """Return ``"key: reason"`` for the first value JSON cannot represent exactly, else None."""
    if value is None or isinstance(value, (bool, str, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{key or '<root>'}: {value!r} is not finite"
    if isinstance(value, Mapping):
        for sub_key, sub_value in value.items():
            if not isinstance(sub_key, str):
                return f"{key or '<root>'}: key {sub_key!r} is not a string"
            found = _json_problem(sub_value, f"{key}.{sub_key}" if key else sub_key)
            if found:
                return found
        return None
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _json_problem(item, f"{key}[{index}]")
            if found:
                return found
        return None
    hint = " (use .tolist() or .item())" if hasattr(value, "tolist") else ""
    return f"{key or '<root>'}: {type(value).__name__} is not JSON-serialisable{hint}"


def _encode_manifest(manifest: Mapping[str, Any]) -> str:
    if not isinstance(manifest, Mapping):
        raise DataError(f"manifest must be a dict, got {type(manifest).__name__}")
    problem = _json_problem(manifest, "")
    if problem is not None:
        raise DataError(f"manifest value {problem}; the manifest must be plain JSON")
    return json.dumps(manifest, sort_keys=True, allow_nan=False)


def _securedc_version() -> str:
    import securedc  # late import: securedc/__init__ may import this module

    return str(getattr(securedc, "__version__", None) or "0.1.0")


def _soft_digest(soft_labels: Tensor) -> str:
    h = hashlib.sha256(f"soft_labels:{list(soft_labels.shape)}:{soft_labels.dtype}".encode())
    h.update(_tensor_bytes(soft_labels))
    return h.hexdigest()


def _write(
    path: Path, images: Tensor, labels: Tensor, manifest: Mapping[str, Any], owner: Mapping[str, Any] | None = None,
    soft_labels: Tensor | None = None,
) -> dict:
    images, labels = _check_tensors(images, labels, where=f"cannot save {str(path)!r}")
    if soft_labels is not None:
        from securedc.robust import check_soft_labels

        soft_labels = check_soft_labels(soft_labels.detach().cpu(), labels, where=f"cannot save {str(path)!r}")
        soft_labels = soft_labels.to(torch.float32).contiguous()
    full = json.loads(_encode_manifest(manifest))  # validates and deep-copies
    classes = (full.get("dataset") or {}).get("classes") if isinstance(full.get("dataset"), dict) else None
    if isinstance(classes, list) and labels.numel() and int(labels.max()) >= len(classes):
        raise DataError(f"cannot save {str(path)!r}: label {int(labels.max())} is beyond the manifest's "
                        f"{len(classes)} classes")
    full.update(
        format=_FORMAT,
        schema_version=SCHEMA_VERSION,
        securedc_version=_securedc_version(),
        tensor_sha256=tensor_digest(images, labels),
        shape=list(images.shape),
        num_images=int(images.shape[0]),
    )
    full.pop("soft_labels_sha256", None)
    if soft_labels is not None:
        full["soft_labels_sha256"] = _soft_digest(soft_labels)
    text = _encode_manifest(full)
    tensors = {"images": images, "labels": labels}
    if soft_labels is not None:
        tensors["soft_labels"] = soft_labels
    payload = _safetensors_save(tensors, metadata={_METADATA_KEY: text})
    ensure_writable_dir(path.parent)
    if owner is not None:  # first, so a release on disk always has its owner record beside it
        from securedc.owner import write_owner_record

        write_owner_record(path, owner, tensor_sha256=full["tensor_sha256"])
    atomic_write_bytes(path, payload)
    logger.info("saved %d images to %s (sha256 %s)", images.shape[0], path, full["tensor_sha256"])
    return json.loads(text)


def save_condensed(
    path: str | os.PathLike[str],
    images: Tensor,
    labels: Tensor,
    manifest: dict[str, Any],
    *,
    owner: Mapping[str, Any] | None = None,
    soft_labels: Tensor | None = None,
) -> Path:
    """Save a condensed set and its manifest as one safetensors file, atomically.

    The manifest is copied (the caller's dict is not modified) and completed with
    ``format``, ``schema_version``, ``securedc_version``, ``tensor_sha256``, ``shape`` and
    ``num_images``, which override keys of the same name. The parent directory is created
    if needed. The manifest is public: put nothing computed from private data in it (no
    fingerprint, exact counts or audit numbers); those go into ``owner``.

    Args:
        path: Target file, conventionally ``NAME.safetensors``.
        images: ``[M, C, H, W]`` floating point in [0, 1], finite; stored as float32.
        labels: ``[M]`` int64 class indices.
        manifest: JSON-serialisable dict (str keys; finite floats; no tensors/arrays).
        owner: The data owner's record, written first to ``NAME.owner.json`` beside the file
            (owner-only permissions, bound to the tensor hash; see :mod:`securedc.owner`).
        soft_labels: Optional per-image probabilities ``[M, num_classes]`` stored as the
            ``soft_labels`` tensor (hash in ``soft_labels_sha256``); refused (``DataError``) when
            the shape does not match ``labels``.

    Returns:
        The path written.

    Raises:
        DataError: Bad shapes, dtypes or ranges, or a manifest value that is not plain JSON
            (the message names the key, e.g. ``privacy.epsilon``). Nothing is written.
        ConfigError: The parent directory cannot be created or written.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "s.safetensors"
        >>> _ = save_condensed(p, torch.rand(2, 1, 4, 4), torch.tensor([0, 1]), {"ipc": 1})
        >>> load_condensed(p).manifest["num_images"]
        2
    """
    target = Path(path)
    _write(target, images, labels, manifest, owner, soft_labels=soft_labels)
    return target


def load_condensed(path: str | os.PathLike[str], *, verify: bool = True) -> CondensedSet:
    """Load a file written by :func:`save_condensed`, checking format, schema and hash.

    Only the safetensors reader is used, so untrusted files cannot run code.

    Args:
        path: The ``.safetensors`` file.
        verify: Check the tensors against the manifest's SHA-256 (default). ``False`` skips
            only the hash; format and schema checks always run.

    Returns:
        The :class:`CondensedSet`.

    Raises:
        DataError: The file is missing, not a safetensors file, truncated, lacks the
            ``securedc`` metadata, has another format or a newer schema, holds tensors of
            the wrong shape/dtype/range, or (``verify=True``) its tensors do not match the
            manifest hash.
    """
    file = Path(path)
    if not file.exists():
        raise DataError(f"condensed set {str(file)!r} not found; check the path")
    if not file.is_file():
        raise DataError(f"condensed set {str(file)!r} is not a valid securedc file: not a file")
    invalid = f"condensed set {str(file)!r} is not a valid securedc file"
    try:
        with safe_open(str(file), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            keys = sorted(handle.keys())
            if keys not in (sorted(_TENSOR_KEYS), sorted((*_TENSOR_KEYS, "soft_labels"))):
                raise DataError(f"{invalid}: expected tensors {list(_TENSOR_KEYS)} (+ soft_labels), found {keys}")
            images = handle.get_tensor("images")
            labels = handle.get_tensor("labels")
            soft_labels = handle.get_tensor("soft_labels") if "soft_labels" in keys else None
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{invalid}: {err}") from err

    text = metadata.get(_METADATA_KEY)
    if text is None:
        raise DataError(
            f"{invalid}: no {_METADATA_KEY!r} metadata (a plain safetensors file?); "
            "save condensed sets with securedc.export.save_condensed"
        )
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{invalid}: manifest is not valid JSON ({err})") from err
    if not isinstance(manifest, dict):
        raise DataError(f"{invalid}: manifest is a {type(manifest).__name__}, expected an object")
    if manifest.get("format") != _FORMAT:
        raise DataError(f"{invalid}: format is {manifest.get('format')!r}, expected {_FORMAT!r}")
    mangled = [k for k in _SECTIONS if k in manifest and not isinstance(manifest[k], dict)]
    if mangled:
        raise DataError(f"{invalid}: manifest section {mangled[0]!r} is a {type(manifest[mangled[0]]).__name__}, "
                        "expected an object")
    schema = manifest.get("schema_version")
    if not isinstance(schema, int) or isinstance(schema, bool) or schema < 1:
        raise DataError(f"{invalid}: schema_version {schema!r} is not a positive integer")
    if schema > SCHEMA_VERSION:
        raise DataError(
            f"{invalid}: schema_version {schema} is newer than this securedc supports "
            f"({SCHEMA_VERSION}); upgrade securedc to read it"
        )
    if images.dtype != torch.float32 or labels.dtype != torch.int64:
        raise DataError(
            f"{invalid}: tensors have dtypes {images.dtype}/{labels.dtype}, "
            "expected float32 images and int64 labels"
        )
    if verify:
        expected = manifest.get("tensor_sha256")
        if not isinstance(expected, str):
            raise DataError(f"{invalid}: manifest has no tensor_sha256 to verify against")
        actual = tensor_digest(images, labels)
        if actual != expected:
            raise DataError(
                f"condensed set {str(file)!r}: tensors do not match the manifest hash "
                f"(file modified or corrupt); expected {expected[:12]}…, got {actual[:12]}…"
            )
    images, labels = _check_tensors(images, labels, where=invalid)
    if soft_labels is not None:
        from securedc.robust import check_soft_labels

        soft_labels = check_soft_labels(soft_labels, labels, where=invalid)
        if verify and manifest.get("soft_labels_sha256") != _soft_digest(soft_labels):
            raise DataError(f"condensed set {str(file)!r}: soft_labels do not match the manifest hash "
                            "(file modified or corrupt)")
    return CondensedSet(images=images, labels=labels, manifest=manifest, soft_labels=soft_labels)


def dataset_of(condensed: CondensedSet, given: str | None, where: str | os.PathLike[str]) -> str:
    """The dataset to evaluate or audit ``condensed`` on: ``given``, else the one its manifest names.

    Raises:
        ConfigError: neither (a file written by :func:`save_condensed` without a dataset section).
    """
    name = given or condensed.dataset_name
    if name is None:
        raise ConfigError(f"{where} does not name its dataset; give --dataset")
    return name


def check_compatible(condensed: CondensedSet, bundle: DatasetBundle, where: str | os.PathLike[str]) -> None:
    """Refuse to train or audit ``condensed`` against ``bundle`` when their images or classes do not fit.

    Raises:
        DataError: another image shape, or labels (or soft-label columns) beyond the bundle's classes.
    """
    if tuple(condensed.images.shape[1:]) != bundle.image_shape:
        raise DataError(f"{where} holds {tuple(condensed.images.shape[1:])} images but {bundle.name} has "
                        f"{bundle.image_shape}")
    classes = int(condensed.labels.max()) + 1 if condensed.labels.numel() else 0
    if condensed.soft_labels is not None:
        classes = max(classes, int(condensed.soft_labels.shape[1]))
    if classes > bundle.num_classes:
        raise DataError(f"{where} has {classes} classes but {bundle.name} has {bundle.num_classes}; give the dataset "
                        "it was condensed from (--dataset)")


def _deep_merge(base: Mapping[str, Any], updates: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for key, value in updates.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def update_manifest(
    path: str | os.PathLike[str], updates: dict[str, Any], *, drop: Sequence[str] = ()
) -> CondensedSet:
    """Deep-merge ``updates`` into a saved set's manifest and rewrite the file atomically.

    Used by re-certification: the tensors are verified against the stored hash first and
    written back unchanged. Nested dicts merge key by key; any other value replaces the old
    one. Keys securedc maintains (``tensor_sha256``, ``shape``, ...) are recomputed.

    Args:
        path: A file written by :func:`save_condensed`.
        updates: JSON-serialisable dict, e.g. ``{"audit": {"certified": True}}``.
        drop: Dotted keys removed before the merge (``"audit"`` replaces the whole section,
            ``"dataset.fingerprint"`` one entry); absent keys are ignored.

    Returns:
        The set as now stored (same tensors, merged manifest).

    Raises:
        DataError: The file fails :func:`load_condensed` checks, or ``updates`` is not plain
            JSON. The file is unchanged in both cases.
    """
    if not isinstance(updates, Mapping):
        raise DataError(f"manifest updates must be a dict, got {type(updates).__name__}")
    target = Path(path)
    current = load_condensed(target, verify=True)
    base = copy.deepcopy(current.manifest)
    for dotted in drop:
        *parents, leaf = dotted.split(".")
        section: Any = base
        for key in parents:
            section = section.get(key) if isinstance(section, dict) else None
        if isinstance(section, dict):
            section.pop(leaf, None)
    merged = _deep_merge(base, updates)
    manifest = _write(target, current.images, current.labels, merged, soft_labels=current.soft_labels)
    return CondensedSet(images=current.images, labels=current.labels, manifest=manifest,
                        soft_labels=current.soft_labels)


def save_image_grid(
    path: str | os.PathLike[str],
    images: Tensor,
    labels: Tensor,
    *,
    classes: Sequence[str] | None = None,
    max_per_class: int = 10,
    cell_px: int = 48,
) -> Path:
    """Save a PNG grid of the set: one row per class, up to ``max_per_class`` images per row.

    Rows are the classes ``0..len(classes)-1`` when ``classes`` is given (a class without
    images gives an empty row), else the distinct labels in increasing order. The first
    column holds the class name. The PNG is exactly ``rows * cell_px`` pixels high and
    ``(2 + columns) * cell_px`` wide, where ``columns = min(max_per_class, largest class)``.
    Uses matplotlib's object API (no global pyplot state), so it is thread-safe and
    headless.

    Args:
        path: Target ``.png`` file (written atomically; parent created if needed).
        images: ``[M, C, H, W]`` in [0, 1] with ``C`` 1 (grayscale) or 3 (RGB).
        labels: ``[M]`` int64.
        classes: Class names indexed by label.
        max_per_class: Most images shown per class, >= 1.
        cell_px: Side of one grid cell in pixels, >= 8.

    Returns:
        The path written.

    Raises:
        DataError: Bad tensors, ``C`` not 1 or 3, a label without a name in ``classes``, or
            ``max_per_class``/``cell_px`` out of range.
        ConfigError: The parent directory cannot be created or written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    target = Path(path)
    images, labels = _check_tensors(images, labels, where=f"cannot plot {str(target)!r}")
    channels = images.shape[1]
    if channels not in (1, 3):
        raise DataError(f"image grid needs 1 or 3 channels, got {channels}")
    if isinstance(max_per_class, bool) or not isinstance(max_per_class, int) or max_per_class < 1:
        raise DataError(f"max_per_class must be an integer >= 1, got {max_per_class!r}")
    if isinstance(cell_px, bool) or not isinstance(cell_px, int) or cell_px < 8:
        raise DataError(f"cell_px must be an integer >= 8, got {cell_px!r}")
    present = sorted(int(c) for c in labels.unique())
    if classes is not None:
        if present[-1] >= len(classes):
            raise DataError(
                f"label {present[-1]} has no name: classes has {len(classes)} entries "
                f"(labels must be in 0..{len(classes) - 1})"
            )
        rows = list(range(len(classes)))
    else:
        rows = present
    if not rows:
        raise DataError("image grid needs at least one class name")
    per_class = {c: (labels == c).nonzero().flatten()[:max_per_class] for c in rows}
    cols = max(1, max(len(idx) for idx in per_class.values()))
    label_cols = 2

    # dpi = cell_px makes one inch one cell, so the pixel size is exact (no float rounding).
    fig = Figure(figsize=(label_cols + cols, len(rows)), dpi=cell_px)
    FigureCanvasAgg(fig)
    width, height = label_cols + cols, len(rows)
    for r, c in enumerate(rows):
        bottom = (height - r - 1) / height
        name = str(classes[c]) if classes is not None else str(c)
        fig.text(
            (label_cols - 0.1) / width, bottom + 0.5 / height, name,
            ha="right", va="center", fontsize=14, clip_on=True,
        )
        for j, index in enumerate(per_class[c].tolist()):
            ax = fig.add_axes(((label_cols + j) / width, bottom, 1 / width, 1 / height))
            ax.set_axis_off()
            image = images[index]
            if channels == 1:
                ax.imshow(
                    image[0].numpy(), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest"
                )
            else:
                ax.imshow(image.permute(1, 2, 0).numpy(), interpolation="nearest")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=cell_px, facecolor="white")
    ensure_writable_dir(target.parent)
    atomic_write_bytes(target, buffer.getvalue())
    return target
