"""A private release holds nothing computed from the private data outside the DP mechanism.

Issue 12, findings 2 (data fingerprints in the release) and 3 (audit and evaluation numbers in the
release). One real DP run of the CLI on digits with the audit on: the exported file's metadata must
hold no fingerprint, member hash, cache key, exact count or audit/evaluation number; the owner file
``NAME.owner.json`` beside it holds them, and ``securedc audit --recertify`` and ``securedc inspect``
read it. (The plugin cache's use of the owner file is in test_plugins_torch.py.)
"""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from safetensors import safe_open

from securedc.audits.pipeline import split_indices, split_record
from securedc.export import load_condensed, save_condensed
from securedc.owner import owner_path, read_owner_record

DP_QUICK = ["--epsilon", "8", "--iterations", "5", "--ipc", "1", "--batch-real", "32", "--eval-models", "1",
            "--eval-epochs", "5", "--audit-shadows", "0", "--audit-canaries", "0"]
AUDIT_QUICK = ["--eval-models", "1", "--eval-epochs", "5", "--audit-shadows", "0", "--audit-canaries", "0"]

#: keys whose values are computed from the private data (or name such values): never in a release
OWNER_ONLY_KEYS = {"fingerprint", "dataset_fingerprint", "members_sha256", "split", "headline", "gates", "reasons",
                   "evaluation", "cache", "key", "num_train", "num_test", "num_members", "num_nonmembers", "seconds",
                   "report", "metrics", "accuracies"}


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="2", COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "securedc", *args], capture_output=True, text=True, timeout=600,
                          env=env)


def _metadata_text(path: Path) -> str:
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        return (handle.metadata() or {})["securedc"]


def _keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, sub in value.items():
            yield key
            yield from _keys(sub)
    elif isinstance(value, list):
        for sub in value:
            yield from _keys(sub)


def _floats(value: Any) -> Iterator[float]:
    if isinstance(value, float):
        yield value
    elif isinstance(value, dict):
        for sub in value.values():
            yield from _floats(sub)
    elif isinstance(value, list):
        for sub in value:
            yield from _floats(sub)


@pytest.fixture(scope="module")
def policies(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("policies")
    strict = folder / "strict.toml"  # MIA AUC <= 0 cannot pass: a forced export whose reasons carry numbers
    strict.write_text("mia_max_auc = 0.0\n")
    lenient = folder / "lenient.toml"
    lenient.write_text("mia_max_auc = 1.0\nmia_max_tpr_at_1pct_fpr = 1.0\nutility_margin = 1.0\nrequire_canary = false\n")
    return {"strict": strict, "lenient": lenient}


@pytest.fixture(scope="module")
def dp_release(tmp_path_factory, policies) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("release")
    proc = _run("condense", *DP_QUICK, "--out", str(out), "--name", "s", "--policy", str(policies["strict"]), "--force")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "s.safetensors", proc


def test_dp_release_metadata_holds_nothing_from_the_private_data(dp_release, digits) -> None:
    release, _ = dp_release
    text = _metadata_text(release)
    manifest = json.loads(text)
    owner = read_owner_record(release, tensor_sha256=manifest["tensor_sha256"])
    assert manifest["privacy"]["private"] is True
    # no fingerprint, no member hash (the bundle's and the owner's strings searched in the raw metadata)
    m, n = split_indices(digits.train_images, digits.train_labels, holdout_fraction=0.2, seed=0)
    members_sha = split_record(m, n, holdout_fraction=0.2, seed=0, fingerprint=digits.fingerprint)["members_sha256"]
    assert owner["audit"]["split"]["members_sha256"] == members_sha
    for secret in (digits.fingerprint, members_sha, owner["dataset"]["fingerprint"]):
        assert secret not in text and secret[:16] not in text
    leaked = set(_keys(manifest)) & OWNER_ONLY_KEYS
    assert not leaked, f"owner-only keys in the release: {sorted(leaked)}"
    # the audit section says only what is true of the release: ran, verdict, forced, the (public) policy
    assert set(manifest["audit"]) == {"ran", "certified", "forced", "policy"}
    assert manifest["audit"]["ran"] is True and manifest["audit"]["certified"] is False
    assert manifest["audit"]["forced"] is True and manifest["audit"]["policy"]["mia_max_auc"] == 0.0
    # no number measured on real data and no gate reason appears anywhere in the metadata
    measured = [v for v in _floats(owner["audit"]["headline"]) if len(repr(v)) > 6]
    measured += [v for v in _floats(owner["evaluation"]) if len(repr(v)) > 6]
    assert measured, "the owner record should hold measured numbers"
    for value in measured:
        assert repr(value) not in text
    for reason in owner["audit"]["reasons"]:
        assert reason not in text
    # the privacy section states that the export decision is not covered by (ε, δ)
    not_covered = " ".join(manifest["privacy"]["not_covered"])
    assert "export decision" in not_covered and "NOT covered by (epsilon, delta)" in not_covered
    assert "owner.json" in not_covered


def test_owner_file_holds_what_the_owner_needs(dp_release, digits) -> None:
    release, proc = dp_release
    manifest = load_condensed(release).manifest
    record_file = owner_path(release)
    assert record_file.name == "s.owner.json" and stat.S_IMODE(record_file.stat().st_mode) == 0o600
    owner = read_owner_record(release, tensor_sha256=manifest["tensor_sha256"])
    assert owner["release"] == "s.safetensors" and owner["dataset"]["fingerprint"] == digits.fingerprint
    split = owner["audit"]["split"]
    assert split["dataset_fingerprint"] == digits.fingerprint and split["seed"] == 0
    assert owner["dataset"]["num_train"] == split["num_members"]
    assert split["num_members"] + split["num_nonmembers"] == int(digits.train_labels.numel())
    audit = owner["audit"]
    assert audit["certified"] is False and audit["forced"] is True
    assert {g["name"] for g in audit["gates"]} == {"utility", "mia-tpr", "mia-auc", "canary"}
    assert any(r.startswith("mia-auc:") for r in audit["reasons"])
    assert math.isfinite(audit["headline"]["mia"]["auc"])
    assert owner["evaluation"]["condensed"]["mean"] == audit["headline"]["utility"]["condensed_acc"]
    assert owner["condensation"]["seconds"] > 0
    assert Path(audit["report"]).name == "report.html"
    report = json.loads((release.parent / "s.report" / "report.json").read_text())
    assert report["owner_only"] is True and report["owner"]["dataset"]["fingerprint"] == digits.fingerprint
    assert "For the data owner only" in (release.parent / "s.report" / "report.html").read_text()
    # the summary table reads the owner record
    assert "s.owner.json" in proc.stdout and f"({split['num_members']} train images)" in proc.stdout


def test_inspect_and_recertify_read_the_owner_file(dp_release, policies, tmp_path, digits) -> None:
    src, _ = dp_release
    release = tmp_path / "s.safetensors"
    shutil.copy2(src, release)
    shutil.copy2(owner_path(src), owner_path(release))
    before = load_condensed(release).manifest
    shown = _run("inspect", str(release))
    assert shown.returncode == 0, shown.stderr
    assert digits.fingerprint[:16] in shown.stdout and "mia-auc:" in shown.stdout and "accuracy" in shown.stdout

    proc = _run("audit", str(release), "--policy", str(policies["lenient"]), "--recertify", *AUDIT_QUICK,
                "--report", str(tmp_path / "re"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "recreated the recorded split" in proc.stderr  # the split came from the owner file
    text = _metadata_text(release)
    after = json.loads(text)
    assert after["tensor_sha256"] == before["tensor_sha256"]
    assert set(after["audit"]) == {"ran", "certified", "forced", "policy"}
    assert after["audit"]["certified"] is True and after["audit"]["forced"] is False
    assert digits.fingerprint not in text and not set(_keys(after)) & OWNER_ONLY_KEYS
    owner = read_owner_record(release, tensor_sha256=after["tensor_sha256"])
    assert owner["audit"]["certified"] is True and owner["audit"]["reasons"] == []
    assert owner["audit"]["split"]["members_sha256"] in (tmp_path / "re" / "report.json").read_text()
    headline = owner["audit"]["headline"]
    assert math.isfinite(headline["mia"]["auc"]) and headline["mia"]["auc"] > 0
    # no measured number of the audit reaches the release; a number as short as 0.5 (an AUC at chance)
    # occurs in the release's own config by coincidence, so only distinctive ones are looked for
    measured = [v for section in headline.values() if isinstance(section, dict) for v in section.values()
                if isinstance(v, float)]
    assert measured and all(repr(v) not in text for v in measured if len(repr(v)) >= 6)

    owner_path(release).unlink()
    shown = _run("inspect", str(release))
    assert shown.returncode == 0 and "owner file not found" in shown.stdout and "mia-auc:" not in shown.stdout


def test_recertify_moves_a_legacy_manifest_into_the_owner_file(dp_release, policies, tmp_path, digits) -> None:
    """A file written before owner files existed kept the split and numbers in its manifest: --recertify moves them."""
    src, _ = dp_release
    cs = load_condensed(src)
    owner = read_owner_record(src)
    legacy = {k: v for k, v in cs.manifest.items()
              if k not in ("format", "schema_version", "securedc_version", "tensor_sha256", "shape", "num_images")}
    legacy["dataset"] = {**legacy["dataset"], **owner["dataset"]}
    legacy["evaluation"] = owner["evaluation"]
    legacy["audit"] = owner["audit"]
    release = save_condensed(tmp_path / "old.safetensors", cs.images, cs.labels, legacy)
    assert digits.fingerprint in _metadata_text(release)

    proc = _run("audit", str(release), "--policy", str(policies["lenient"]), "--recertify", *AUDIT_QUICK,
                "--report", str(tmp_path / "re"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "owner file not found" in proc.stderr and "recreated the recorded split" in proc.stderr
    text = _metadata_text(release)
    assert digits.fingerprint not in text and not set(_keys(json.loads(text))) & OWNER_ONLY_KEYS
    moved = read_owner_record(release)
    assert moved["dataset"]["fingerprint"] == digits.fingerprint and moved["audit"]["certified"] is True
    assert moved["audit"]["split"] == owner["audit"]["split"]
