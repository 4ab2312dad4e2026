"""End-to-end: `securedc condense` with the audit (refuse / --force / certify) and `securedc audit FILE`."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from securedc.export import load_condensed
from securedc.owner import owner_path, read_owner_record

# tiny but real: 5 steps, 1 model of 10 epochs, 2 shadows and 20 canaries of 5 steps each
QUICK = ["--ipc", "1", "--iterations", "5", "--eval-models", "1", "--eval-epochs", "10", "--audit-shadows", "2",
         "--audit-canaries", "20", "--audit-iterations", "5", "--batch-real", "32"]


def _run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="2", COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "securedc", *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


@pytest.fixture(scope="module")
def strict_policy(tmp_path_factory) -> Path:
    """A policy no release can meet (MIA AUC ≤ 0): forces the refusal path deterministically."""
    p = tmp_path_factory.mktemp("pol") / "strict.toml"
    p.write_text("mia_max_auc = 0.0\n")
    return p


@pytest.fixture(scope="module")
def lenient_policy(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("pol") / "lenient.toml"
    p.write_text("mia_max_auc = 1.0\nmia_max_tpr_at_1pct_fpr = 1.0\nutility_margin = 1.0\n")
    return p


def test_refused_release_writes_report_but_no_file(tmp_path, strict_policy) -> None:
    quick = [*QUICK[:-8], "--audit-shadows", "0", *QUICK[-6:]]  # no shadows: LOSS + neighbour attacks only
    proc = _run("condense", *quick, "--out", str(tmp_path), "--name", "s", "--policy", str(strict_policy),
                "--save-bank")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert not (tmp_path / "s.bank.safetensors").exists()  # no statistics of the data left behind either
    assert "mia-auc" in proc.stderr and "--force" in proc.stderr
    assert not (tmp_path / "s.safetensors").exists()
    report = tmp_path / "s.report"
    data = json.loads((report / "report.json").read_text())
    assert data["certified"] is False
    assert "mia-auc" in [g["name"] for g in data["certification"]["gates"] if not g["passed"]]
    assert set(data["results"]) == {"utility", "mia", "canary"}
    # the condenser saw only the members: the owner record in the report says so
    assert data["owner"]["dataset"]["num_train"] < 1347 and "num_train" not in data["manifest"]["dataset"]
    assert data["owner_only"] is True
    assert "NOT CERTIFIED" in (report / "report.html").read_text()
    assert not (tmp_path / "s.owner.json").exists()  # nothing exported, no owner record either


def test_force_exports_uncertified_then_audit_recertifies(tmp_path, strict_policy, lenient_policy) -> None:
    proc = _run("condense", *QUICK, "--out", str(tmp_path), "--name", "f", "--policy", str(strict_policy), "--force")
    assert proc.returncode == 0, proc.stderr[-3000:]
    cs = load_condensed(tmp_path / "f.safetensors")
    # the release says only the verdict; the numbers are in the owner file beside it
    assert set(cs.manifest["audit"]) == {"ran", "certified", "forced", "policy"}
    assert cs.manifest["audit"]["certified"] is False and cs.manifest["audit"]["forced"] is True
    owner = read_owner_record(tmp_path / "f.safetensors", tensor_sha256=cs.manifest["tensor_sha256"])
    audit = owner["audit"]
    assert audit["ran"] is True and audit["certified"] is False and audit["forced"] is True
    assert any(r.startswith("mia-auc:") for r in audit["reasons"])
    split = audit["split"]
    assert owner["dataset"]["num_train"] == split["num_members"]
    assert split["num_members"] + split["num_nonmembers"] == 1347 and 260 <= split["num_nonmembers"] <= 280
    assert math.isfinite(audit["headline"]["mia"]["auc"])
    assert owner["evaluation"]["condensed"]["mean"] == audit["headline"]["utility"]["condensed_acc"]
    # re-audit the exported file under a lenient policy: the recorded split is recreated, the file re-certified
    proc = _run("audit", str(tmp_path / "f.safetensors"), "--policy", str(lenient_policy), "--recertify",
                "--eval-models", "1", "--eval-epochs", "10", "--audit-shadows", "0", "--audit-canaries", "20",
                "--audit-iterations", "5", "--report", str(tmp_path / "re"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "recreated the recorded split" in proc.stderr
    cs2 = load_condensed(tmp_path / "f.safetensors")
    assert cs2.manifest["audit"]["certified"] is True and "reasons" not in cs2.manifest["audit"]
    owner2 = read_owner_record(tmp_path / "f.safetensors", tensor_sha256=cs2.manifest["tensor_sha256"])
    assert owner2["audit"]["certified"] is True and owner2["audit"]["reasons"] == []
    assert owner2["audit"]["split"] == split
    assert cs2.manifest["tensor_sha256"] == cs.manifest["tensor_sha256"]
    assert (tmp_path / "re" / "report.html").exists()


def test_no_audit_and_bad_policy(tmp_path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("mia_max_acu = 0.5\n")
    proc = _run("condense", *QUICK, "--out", str(tmp_path), "--policy", str(bad))
    assert proc.returncode == 2 and "unknown policy key" in proc.stderr
    assert not list(tmp_path.glob("*.safetensors"))
    proc = _run("condense", "--ipc", "1", "--iterations", "3", "--eval-models", "0", "--no-audit", "--out",
                str(tmp_path), "--name", "n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = load_condensed(tmp_path / "n.safetensors").manifest
    assert m["audit"] == {"certified": False, "ran": False} and "num_train" not in m["dataset"]
    assert read_owner_record(tmp_path / "n.safetensors")["dataset"]["num_train"] == 1347
    assert not (tmp_path / "n.report").exists()
    # inspect works from the release alone and says the owner file is missing
    owner_path(tmp_path / "n.safetensors").unlink()
    shown = _run("inspect", str(tmp_path / "n.safetensors"))
    assert shown.returncode == 0 and "owner file not found" in shown.stdout


@pytest.mark.slow
def test_default_condense_on_digits_wall_time(tmp_path) -> None:
    """The default `securedc condense` on digits, audit included, within 5 minutes on 2 cores."""
    t0 = time.perf_counter()
    proc = _run("condense", "--out", str(tmp_path), "--force", timeout=900)
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "digits-ipc10.report" / "report.html").exists()
    assert seconds <= 300, f"default condense took {seconds:.0f} s"


def test_soft_label_release_is_audited_with_its_soft_labels(tmp_path, lenient_policy) -> None:
    """`--soft-labels`: the utility and robustness audits train the models on S with the file's soft labels,
    and the MIA section says the soft labels are not attacked."""
    quick = [*QUICK[:-8], "--audit-shadows", "0", "--audit-canaries", "0", "--batch-real", "32"]
    proc = _run("condense", *quick, "--adv-eps", "8/255", "--adv-weight", "0", "--soft-labels", "--out", str(tmp_path),
                "--name", "s", "--policy", str(lenient_policy), "--force")
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    assert load_condensed(tmp_path / "s.safetensors").soft_labels is not None
    data = json.loads((tmp_path / "s.report" / "report.json").read_text())
    results = data["results"]
    assert results["utility"]["details"]["protocol"]["soft_labels"] is True
    assert results["robustness"]["details"]["soft_labels"] is True
    assert any("soft labels" in n for n in results["mia"]["notes"])
    shown = _run("inspect", str(tmp_path / "s.safetensors"))
    assert shown.returncode == 0 and "soft labels" in shown.stdout and "KD loss" in shown.stdout, shown.stdout
