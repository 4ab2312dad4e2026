"""Tests for securedc.export (safetensors + manifest) and securedc.io (atomic writes).

Every test writes and reads real files in ``tmp_path``; nothing is mocked except one
``os.replace`` failure injected to prove the atomic-write cleanup.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import securedc.export as export_module
import securedc.io as io_module
import securedc.owner as owner_module
from securedc.errors import ConfigError, DataError
from securedc.export import (
    SCHEMA_VERSION,
    CondensedSet,
    load_condensed,
    save_condensed,
    save_image_grid,
    tensor_digest,
    update_manifest,
)
from securedc.io import atomic_path, atomic_write_bytes, atomic_write_text, ensure_writable_dir
from securedc.owner import owner_path, read_owner_record, write_owner_record


@pytest.fixture
def condensed() -> tuple[torch.Tensor, torch.Tensor, dict]:
    """A small real condensed-looking set: 3 classes x 2 images of 1x8x8 (sklearn digits)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    picks = np.concatenate([np.flatnonzero(digits.target == c)[:2] for c in range(3)])
    images = torch.from_numpy(digits.images[picks] / 16.0).float().unsqueeze(1)
    labels = torch.from_numpy(digits.target[picks]).long()
    manifest = {
        "dataset": {"name": "digits", "fingerprint": "abc"},
        "ipc": 2,
        "privacy": {"epsilon": 1.5, "delta": 1e-5, "sigma": 0.9, "accountant": "rdp"},
        "audit": {"certified": False, "metrics": {"auc": 0.51}},
        "config": {"steps": [1, 2, 3]},
    }
    return images, labels, manifest


def _data_offset(file: Path, tensor: str) -> int:
    """Absolute byte offset of ``tensor``'s data, parsed from the safetensors header."""
    raw = file.read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    return 8 + header_len + header[tensor]["data_offsets"][0]


def _flip_byte(file: Path, offset: int) -> None:
    raw = bytearray(file.read_bytes())
    raw[offset] ^= 0x01
    file.write_bytes(bytes(raw))


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


# ---------------------------------------------------------------- round trip


def test_round_trip_exact(tmp_path, condensed):
    images, labels, manifest = condensed
    original = json.loads(json.dumps(manifest))
    out = save_condensed(tmp_path / "set.safetensors", images, labels, manifest)
    assert out == tmp_path / "set.safetensors" and out.is_file()
    assert manifest == original, "save_condensed must not modify the caller's manifest"

    loaded = load_condensed(out)
    assert isinstance(loaded, CondensedSet)
    assert loaded.images.dtype == torch.float32 and loaded.labels.dtype == torch.int64
    assert torch.equal(loaded.images, images) and torch.equal(loaded.labels, labels)
    for key, value in manifest.items():
        assert loaded.manifest[key] == value
    assert loaded.manifest["format"] == "securedc"
    assert loaded.manifest["schema_version"] == SCHEMA_VERSION
    assert loaded.manifest["shape"] == [6, 1, 8, 8]
    assert loaded.manifest["num_images"] == 6 == len(loaded)
    assert loaded.manifest["tensor_sha256"] == tensor_digest(images, labels)
    assert isinstance(loaded.manifest["securedc_version"], str)
    assert loaded.privacy["epsilon"] == 1.5 and loaded.certified is False


def test_metadata_is_sorted_json_in_securedc_key(tmp_path, condensed):
    from safetensors import safe_open

    images, labels, manifest = condensed
    out = save_condensed(tmp_path / "s.safetensors", images, labels, manifest)
    with safe_open(str(out), framework="pt") as handle:
        text = handle.metadata()["securedc"]
    assert text == json.dumps(json.loads(text), sort_keys=True)


def test_float64_images_stored_as_float32(tmp_path, condensed):
    images, labels, manifest = condensed
    out = save_condensed(tmp_path / "s.safetensors", images.double(), labels, manifest)
    loaded = load_condensed(out)
    assert loaded.images.dtype == torch.float32
    assert torch.equal(loaded.images, images)


def test_save_creates_parent_directories(tmp_path, condensed):
    images, labels, manifest = condensed
    out = save_condensed(tmp_path / "a" / "b" / "s.safetensors", images, labels, manifest)
    assert load_condensed(out).manifest["ipc"] == 2


def test_tensor_digest_sensitive_to_values_shape_and_dtype():
    images = torch.rand(2, 1, 3, 3, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1])
    base = tensor_digest(images, labels)
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert base == tensor_digest(images.clone(), labels.clone())
    assert base != tensor_digest(images.reshape(2, 1, 9, 1), labels)
    assert base != tensor_digest(images.double(), labels)
    assert base != tensor_digest(images, labels.flip(0))
    assert base != tensor_digest(images.transpose(2, 3).contiguous(), labels)
    # non-contiguous views hash like their contiguous copies
    view = images.transpose(2, 3)
    assert tensor_digest(view, labels) == tensor_digest(view.contiguous(), labels)


def test_certified_property(tmp_path, condensed):
    images, labels, manifest = condensed
    manifest = {**manifest, "audit": {"certified": True}}
    loaded = load_condensed(save_condensed(tmp_path / "c.safetensors", images, labels, manifest))
    assert loaded.certified is True
    bare = CondensedSet(images=images, labels=labels, manifest={})
    assert bare.certified is False and bare.privacy == {}


# ---------------------------------------------------------------- validation on save


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda x, y: (x[0], y), "4-D"),
        (lambda x, y: ((x * 255).to(torch.uint8), y), "floating point"),
        (lambda x, y: (x * 2, y), "[0, 1]"),
        (lambda x, y: (torch.where(x > 0.5, float("nan"), x), y), "NaN"),
        (lambda x, y: (x, y.int()), "int64"),
        (lambda x, y: (x, y[:-1]), "labels"),
        (lambda x, y: (x[:0], y[:0]), "empty"),
        (lambda x, y: (x, y - 5), ">= 0"),
    ],
)
def test_save_rejects_bad_tensors(tmp_path, condensed, mutate, fragment):
    images, labels, manifest = condensed
    bad_images, bad_labels = mutate(images, labels)
    target = tmp_path / "bad.safetensors"
    with pytest.raises(DataError, match=re.escape(fragment)):
        save_condensed(target, bad_images, bad_labels, manifest)
    assert not target.exists() and _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("bad_manifest", "key"),
    [
        ({"privacy": {"epsilon": float("nan")}}, "privacy.epsilon"),
        ({"privacy": {"delta": float("inf")}}, "privacy.delta"),
        ({"stats": {"mean": torch.tensor([0.5])}}, "stats.mean"),
        ({"grid": [1, np.int64(3)]}, "grid[1]"),
        ({"classes": {3: "x"}}, "classes"),
    ],
)
def test_save_rejects_non_json_manifest_naming_key(tmp_path, condensed, bad_manifest, key):
    images, labels, _ = condensed
    target = tmp_path / "bad.safetensors"
    with pytest.raises(DataError, match=re.escape(key)):
        save_condensed(target, images, labels, bad_manifest)
    assert not target.exists() and _leftovers(tmp_path) == []


# ---------------------------------------------------------------- corruption on load


def test_flipped_image_byte_fails_hash(tmp_path, condensed):
    images, labels, manifest = condensed
    out = save_condensed(tmp_path / "s.safetensors", images, labels, manifest)
    # byte 0 of a little-endian float32 is its lowest mantissa byte: value stays in [0, 1]
    _flip_byte(out, _data_offset(out, "images") + 4 * 10)
    with pytest.raises(DataError, match=re.escape("tensors do not match the manifest hash")):
        load_condensed(out)
    # verify=False skips only the hash: the (tiny) modification loads
    loaded = load_condensed(out, verify=False)
    assert not torch.equal(loaded.images, images)
    assert (loaded.images - images).abs().max() < 1e-6


def test_flipped_label_byte_fails_hash(tmp_path, condensed):
    images, labels, manifest = condensed
    out = save_condensed(tmp_path / "s.safetensors", images, labels, manifest)
    _flip_byte(out, _data_offset(out, "labels"))
    with pytest.raises(DataError, match="manifest hash"):
        load_condensed(out)


def test_truncated_file(tmp_path, condensed):
    images, labels, manifest = condensed
    out = save_condensed(tmp_path / "s.safetensors", images, labels, manifest)
    raw = out.read_bytes()
    for cut in (len(raw) - 3, 8 + 10, 5, 0):
        out.write_bytes(raw[:cut])
        with pytest.raises(DataError, match="is not a valid securedc file"):
            load_condensed(out)


def test_random_bytes_file(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(DataError, match="is not a valid securedc file"):
        load_condensed(junk)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_condensed(tmp_path / "nope.safetensors")
    with pytest.raises(DataError, match="is not a valid securedc file"):
        load_condensed(tmp_path)


def test_plain_safetensors_without_metadata(tmp_path, condensed):
    images, labels, _ = condensed
    plain = tmp_path / "plain.safetensors"
    save_file({"images": images, "labels": labels}, str(plain))
    with pytest.raises(DataError, match="no 'securedc' metadata"):
        load_condensed(plain)


def test_foreign_format_newer_schema_and_extra_tensors(tmp_path, condensed):
    images, labels, _ = condensed
    tensors = {"images": images, "labels": labels}
    digest = tensor_digest(images, labels)

    def write(name, manifest, tensors=tensors):
        path = tmp_path / name
        save_file(tensors, str(path), metadata={"securedc": json.dumps(manifest)})
        return path

    good = {"format": "securedc", "schema_version": SCHEMA_VERSION, "tensor_sha256": digest}
    assert load_condensed(write("ok.safetensors", good)).manifest["tensor_sha256"] == digest
    with pytest.raises(DataError, match="format is 'other'"):
        load_condensed(write("f.safetensors", {**good, "format": "other"}))
    with pytest.raises(DataError, match="newer"):
        load_condensed(write("n.safetensors", {**good, "schema_version": SCHEMA_VERSION + 1}))
    no_hash = {k: v for k, v in good.items() if k != "tensor_sha256"}
    with pytest.raises(DataError, match="tensor_sha256"):
        load_condensed(write("h.safetensors", no_hash))
    with pytest.raises(DataError, match="expected tensors"):
        load_condensed(write("x.safetensors", good, {**tensors, "extra": torch.zeros(1)}))
    path = tmp_path / "j.safetensors"
    save_file(tensors, str(path), metadata={"securedc": "{not json"})
    with pytest.raises(DataError, match="not valid JSON"):
        load_condensed(path)


# ---------------------------------------------------------------- update_manifest


def test_update_manifest_merges_and_keeps_tensors(tmp_path, condensed):
    images, labels, manifest = condensed
    out = save_condensed(tmp_path / "s.safetensors", images, labels, manifest)
    updated = update_manifest(out, {"audit": {"certified": True, "verdict": "pass"}, "note": "re"})
    assert updated.certified is True
    reloaded = load_condensed(out)
    assert torch.equal(reloaded.images, images) and torch.equal(reloaded.labels, labels)
    assert reloaded.manifest == updated.manifest
    merged_audit = {"certified": True, "verdict": "pass", "metrics": {"auc": 0.51}}
    assert reloaded.manifest["audit"] == merged_audit
    assert reloaded.manifest["privacy"] == manifest["privacy"]
    assert reloaded.manifest["note"] == "re"
    assert reloaded.manifest["tensor_sha256"] == tensor_digest(images, labels)


def test_update_manifest_drop_replaces_sections(tmp_path, condensed):
    images, labels, manifest = condensed
    out = save_condensed(tmp_path / "s.safetensors", images, labels, manifest)
    updated = update_manifest(out, {"audit": {"certified": True}},
                              drop=("audit", "dataset.fingerprint", "no.such.key", "ipc.x"))
    assert updated.manifest["audit"] == {"certified": True}  # replaced, not merged: "metrics" is gone
    assert updated.manifest["dataset"] == {"name": "digits"} and updated.manifest["ipc"] == 2
    assert load_condensed(out).manifest == updated.manifest


def test_update_manifest_refuses_corrupt_file_and_bad_updates(tmp_path, condensed):
    images, labels, manifest = condensed
    out = save_condensed(tmp_path / "s.safetensors", images, labels, manifest)
    before = out.read_bytes()
    with pytest.raises(DataError, match="audit.score"):
        update_manifest(out, {"audit": {"score": float("nan")}})
    assert out.read_bytes() == before and _leftovers(tmp_path) == []
    _flip_byte(out, _data_offset(out, "images"))
    corrupt = out.read_bytes()
    with pytest.raises(DataError, match="manifest hash"):
        update_manifest(out, {"audit": {"certified": True}})
    assert out.read_bytes() == corrupt


# ---------------------------------------------------------------- owner record


def test_save_with_owner_writes_bound_owner_only_record(tmp_path, condensed):
    images, labels, manifest = condensed
    out = save_condensed(tmp_path / "s.safetensors", images, labels, manifest,
                         owner={"dataset": {"num_train": 6}, "format": "ignored"})
    record_file = tmp_path / "s.owner.json"
    assert owner_path(out) == record_file and stat.S_IMODE(record_file.stat().st_mode) == 0o600
    record = read_owner_record(out, tensor_sha256=load_condensed(out).manifest["tensor_sha256"])
    assert record["format"] == "securedc-owner" and record["release"] == "s.safetensors"
    assert record["dataset"] == {"num_train": 6} and record["tensor_sha256"] == tensor_digest(images, labels)
    assert "num_train" not in out.read_bytes().decode("latin-1")  # the owner's values stay out of the release
    # an owner record that is not JSON: nothing at all is written
    with pytest.raises(DataError, match="not plain JSON"):
        save_condensed(tmp_path / "t.safetensors", images, labels, manifest, owner={"x": float("nan")})
    assert not (tmp_path / "t.safetensors").exists() and not (tmp_path / "t.owner.json").exists()
    assert _leftovers(tmp_path) == []


def test_read_owner_record_errors(tmp_path):
    release = tmp_path / "r.safetensors"
    assert read_owner_record(release, missing_ok=True) is None
    with pytest.raises(DataError, match="owner file .* not found"):
        read_owner_record(release)
    write_owner_record(release, {"audit": {"ran": True}}, tensor_sha256="ab" * 32)
    assert read_owner_record(release, tensor_sha256="ab" * 32)["audit"] == {"ran": True}
    with pytest.raises(DataError, match="belongs to another release"):
        read_owner_record(release, tensor_sha256="cd" * 32)
    record_file = owner_path(release)
    for text, fragment in (("{not json", "not JSON"), ('{"format": "x", "version": 1}', "format is not"),
                           ('{"format": "securedc-owner", "version": 99}', "newer than"),
                           ('{"format": "securedc-owner", "version": "1"}', "positive integer")):
        record_file.write_text(text)
        with pytest.raises(DataError, match=fragment):
            read_owner_record(release)
    with pytest.raises(DataError, match="must be a dict"):
        write_owner_record(release, [1, 2], tensor_sha256="ab" * 32)  # type: ignore[arg-type]


# ---------------------------------------------------------------- atomic writes


def test_failed_replace_keeps_old_content_and_no_temp(tmp_path, condensed, monkeypatch):
    images, labels, manifest = condensed
    out = save_condensed(tmp_path / "s.safetensors", images, labels, manifest)
    before = out.read_bytes()

    def boom(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(io_module.os, "replace", boom)
    with pytest.raises(OSError, match="disk on fire"):
        save_condensed(out, images.flip(0), labels.flip(0), manifest)
    with pytest.raises(OSError, match="disk on fire"):
        save_condensed(tmp_path / "new.safetensors", images, labels, manifest)
    monkeypatch.undo()
    assert out.read_bytes() == before
    assert not (tmp_path / "new.safetensors").exists()
    assert _leftovers(tmp_path) == []


def test_atomic_path_exception_in_block(tmp_path):
    target = tmp_path / "t.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError, match="half way"):
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and tmp.exists()
            tmp.write_text("new but unfinished")
            raise RuntimeError("half way")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and list(tmp_path.iterdir()) == [target]


def test_atomic_write_bytes_and_permissions(tmp_path):
    target = tmp_path / "b.bin"
    atomic_write_bytes(target, b"\x00\xffabc")
    assert target.read_bytes() == b"\x00\xffabc"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    target.chmod(0o640)
    atomic_write_text(target, "héllo\n")
    assert target.read_bytes() == "héllo\n".encode()
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    with pytest.raises(OSError):
        atomic_write_bytes(tmp_path / "missing-dir" / "x.bin", b"x")
    assert _leftovers(tmp_path) == []


def test_atomic_write_explicit_mode(tmp_path):
    target = tmp_path / "secret.json"
    atomic_write_text(target, "{}", mode=0o600)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    target.chmod(0o644)  # an explicit mode wins over the replaced file's
    atomic_write_bytes(target, b"[]", mode=0o600)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and target.read_bytes() == b"[]"


# ---------------------------------------------------------------- ensure_writable_dir


def test_ensure_writable_dir_creates_parents(tmp_path):
    out = ensure_writable_dir(tmp_path / "a" / "b")
    assert out == tmp_path / "a" / "b" and out.is_dir()
    assert list(out.iterdir()) == [], "the probe file must be removed"
    assert ensure_writable_dir(str(out)) == out  # idempotent, accepts str


def test_ensure_writable_dir_under_regular_file(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="is not writable"):
        ensure_writable_dir(blocker / "sub")
    with pytest.raises(ConfigError, match="not a directory"):
        ensure_writable_dir(blocker)


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="root bypasses permission bits (the file-path case above still runs)",
)
def test_ensure_writable_dir_read_only(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match="is not writable"):
            ensure_writable_dir(locked)
        with pytest.raises(ConfigError, match="is not writable"):
            ensure_writable_dir(locked / "child")
    finally:
        locked.chmod(0o700)


# ---------------------------------------------------------------- image grid


def test_image_grid_png_size_and_content(tmp_path, condensed):
    images, labels, _ = condensed  # 3 classes x 2 images, grayscale
    out = save_image_grid(tmp_path / "grid.png", images, labels, max_per_class=10, cell_px=32)
    assert out.is_file() and out.stat().st_size > 0
    with Image.open(out) as png:
        assert png.format == "PNG"
        width, height = png.size
        pixels = np.asarray(png.convert("L"), dtype=np.float64) / 255
    assert (width, height) == ((2 + 2) * 32, 3 * 32)
    # first image cell (row 0, column 0 after the 2 label columns) shows images[0]
    cell = pixels[0:32, 64:96]
    expected = images[0, 0].numpy().repeat(4, axis=0).repeat(4, axis=1)
    assert np.abs(cell - expected).mean() < 0.05
    assert _leftovers(tmp_path) == []


def test_image_grid_named_classes_rgb_and_cap(tmp_path):
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(9, 3, 6, 6, generator=gen)
    labels = torch.tensor([0, 0, 0, 0, 0, 2, 2, 2, 2])
    out = save_image_grid(
        tmp_path / "sub" / "rgb.png", images, labels,
        classes=["cat", "dog", "emu"], max_per_class=3, cell_px=16,
    )
    with Image.open(out) as png:
        assert png.size == ((2 + 3) * 16, 3 * 16)  # 3 rows (dog empty), capped at 3 columns
        row_dog = np.asarray(png.convert("RGB"))[16:32, 32:]
    assert row_dog.min() == 255, "class without images must give an empty (white) row"
    with pytest.raises(DataError, match="no name"):
        save_image_grid(tmp_path / "x.png", images, labels, classes=["cat"])
    with pytest.raises(DataError, match="1 or 3 channels"):
        save_image_grid(tmp_path / "x.png", images[:, :2], labels)
    with pytest.raises(DataError, match="max_per_class"):
        save_image_grid(tmp_path / "x.png", images, labels, max_per_class=0)
    assert not (tmp_path / "x.png").exists()


# ---------------------------------------------------------------- no unsafe deserialisation


@pytest.mark.parametrize("module", [export_module, io_module, owner_module])
def test_no_pickle_or_torch_load(module):
    source = Path(module.__file__).read_text(encoding="utf-8")
    assert "pickle" not in source
    assert "torch.load" not in source
