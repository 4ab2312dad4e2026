"""securedc.release in Python writes the same certified release as `securedc condense`; the plugin certifies too."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import securedc
from securedc.audits import AuditConfig
from securedc.config import CondenseConfig, EvalConfig
from securedc.errors import CertificationError
from securedc.export import load_condensed
from securedc.owner import read_owner_record

LENIENT = "mia_max_auc = 1.0\nmia_max_tpr_at_1pct_fpr = 1.0\nutility_margin = 1.0\nrequire_canary = false\n"
CLI = ["--ipc", "1", "--iterations", "3", "--batch-real", "16", "--eval-models", "1", "--eval-epochs", "3",
       "--audit-shadows", "0", "--audit-canaries", "0", "--device", "cpu"]


def test_python_release_equals_cli_release(tmp_path) -> None:
    policy = tmp_path / "lenient.toml"
    policy.write_text(LENIENT)
    env = dict(os.environ, OMP_NUM_THREADS="2", COLUMNS="200")
    proc = subprocess.run([sys.executable, "-m", "securedc", "condense", *CLI, "--out", str(tmp_path / "cli"),
                           "--name", "r", "--policy", str(policy)], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]

    config = CondenseConfig.from_options(ipc=1, iterations=3, batch_real=16, device="cpu")
    done = securedc.release(config, "digits", out=tmp_path / "py", name="r", policy=policy,
                            audit=AuditConfig(shadows=0, canaries=0), eval_config=EvalConfig(models=1, epochs=3))
    assert done is not None and done.certified and done.written and done.exit_code == 0
    assert done.report is not None and done.report.exists()
    cli, py = load_condensed(tmp_path / "cli" / "r.safetensors"), load_condensed(done.path)
    assert py.manifest == cli.manifest and py.manifest["audit"]["certified"] is True
    own_cli = read_owner_record(tmp_path / "cli" / "r.safetensors")
    own_py = read_owner_record(done.path)
    assert own_py["audit"]["split"] == own_cli["audit"]["split"]
    for side in ("condensed", "random_subset"):  # same models, same accuracies (wall times differ)
        assert own_py["evaluation"][side]["accuracies"] == own_cli["evaluation"][side]["accuracies"]


def test_refused_release_writes_report_only(tmp_path) -> None:
    config = CondenseConfig.from_options(ipc=1, iterations=2, batch_real=16, device="cpu")
    done = securedc.release(config, "digits", out=tmp_path, name="s", policy=_strict(tmp_path),
                            audit=AuditConfig(shadows=0, canaries=0), eval_config=EvalConfig(models=1, epochs=2))
    assert done is not None and done.refused and done.exit_code == 1 and not done.certified
    assert not (tmp_path / "s.safetensors").exists() and not (tmp_path / "s.owner.json").exists()
    assert (tmp_path / "s.report" / "report.html").exists()
    with pytest.raises(CertificationError, match="--force"):
        done.check()


def _strict(tmp_path):
    p = tmp_path / "strict.toml"
    p.write_text("mia_max_auc = 0.0\n")
    return p


def test_plugin_condense_can_certify(digits, tmp_path) -> None:
    from securedc.audits.certify import load_policy
    from securedc.plugins.torch import condense

    lenient = load_policy(None, mia_max_auc=1.0, mia_max_tpr_at_1pct_fpr=1.0, utility_margin=1.0, require_canary=False)
    ds = condense(digits, ipc=1, iterations=2, batch_real=16, device="cpu", cache_dir=tmp_path,
                  audit=AuditConfig(shadows=0, canaries=0), policy=lenient, eval_config=EvalConfig(models=1, epochs=2))
    assert ds.certified and ds.manifest["audit"]["ran"] is True
    again = condense(digits, ipc=1, iterations=2, batch_real=16, device="cpu", cache_dir=tmp_path,
                     audit=AuditConfig(shadows=0, canaries=0), policy=lenient, eval_config=EvalConfig(models=1, epochs=2))
    assert again.from_cache and again.certified
    strict = dict(ipc=1, iterations=2, batch_real=16, device="cpu", cache_dir=tmp_path,
                  audit=AuditConfig(shadows=0, canaries=0), policy=load_policy(None, mia_max_auc=0.0),
                  eval_config=EvalConfig(models=1, epochs=2))
    with pytest.raises(CertificationError):
        condense(digits, **strict)
    kept = condense(digits, force=True, **strict)  # a forced refusal is kept, marked uncertified ...
    assert not kept.certified
    with pytest.raises(CertificationError, match="refused by its audit"):  # ... and is not served unforced
        condense(digits, **strict)
    assert condense(digits, force=True, **strict).from_cache


@pytest.mark.parametrize("soft", [True, False])
def test_refusal_names_the_soft_labels_when_utility_fails(tmp_path, soft) -> None:
    """A release whose models trained on its soft labels and failed the utility gate is told to try without them."""
    import math

    from securedc.audits.base import AuditResult
    from securedc.audits.certify import Policy, certify
    from securedc.audits.pipeline import AuditOutcome
    from securedc.release import Release

    utility = AuditResult(name="utility", metrics={"condensed_acc": 0.5, "random_acc": 0.9}, passed=None,
                          details={"protocol": {"soft_labels": soft}})
    cert = certify({"utility": utility}, Policy(), claimed_epsilon=math.inf, adversarial=False)
    assert "utility" in [g.name for g in cert.failed]
    refused = Release(condensation=None, path=tmp_path / "s.safetensors", manifest={}, owner={},
                      audit=AuditOutcome(results={"utility": utility}, certification=cert, seconds=0.0),
                      report=tmp_path / "s.report" / "report.html", written=False)
    with pytest.raises(CertificationError) as err:
        refused.check()
    assert ("--soft-labels" in str(err.value)) is soft and "--force" in str(err.value)
