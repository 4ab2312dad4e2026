"""report.html / report.json: structure, escaping, numbers, and a real headless-browser render."""

from __future__ import annotations

import base64
import json
import re
import shutil
import stat
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from securedc.audits.base import AuditResult
from securedc.audits.certify import certify
from securedc.audits.report import epsilon_history_from_privacy, write_report

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _results() -> dict[str, AuditResult]:
    roc = {"fpr": [0.0, 0.001, 0.01, 0.1, 1.0], "tpr": [0.0, 0.02, 0.05, 0.3, 1.0]}
    attack = {"auc": 0.61, "auc_ci_low": 0.57, "auc_ci_high": 0.65, "tpr_at_1pct_fpr": 0.05,
              "tpr_at_1pct_fpr_ci_low": 0.02, "tpr_at_1pct_fpr_ci_high": 0.09, "tpr_at_0.1pct_fpr": 0.02,
              "tpr_at_0.1pct_fpr_ci_low": 0.0, "tpr_at_0.1pct_fpr_ci_high": 0.04, "balanced_accuracy": 0.58,
              "balanced_accuracy_ci_low": 0.55, "balanced_accuracy_ci_high": 0.61, "roc": roc}
    return {
        "utility": AuditResult("utility", {"condensed_acc": 0.91, "random_acc": 0.83, "condensed_acc_convnet": 0.91,
                                           "random_acc_convnet": 0.83, "condensed_acc_mlp": 0.88, "random_acc_mlp": 0.8},
                               details={"architectures": ["convnet", "mlp"], "main_architecture": "convnet",
                                        "protocol": {"models": 2, "epochs": 50},
                                        "per_architecture": {
                                            a: {"condensed": {"mean": c, "std": 0.01, "accuracies": [c, c]},
                                                "random_subset": {"mean": r, "std": 0.02, "accuracies": [r, r]}}
                                            for a, c, r in (("convnet", 0.91, 0.83), ("mlp", 0.88, 0.8))}}),
        "mia": AuditResult("mia", {"auc": 0.61, "tpr_at_1pct_fpr": 0.05, "tpr_at_1pct_fpr_ci_high": 0.09},
                           details={"attacks": {"loss": attack, "lira-online": {**attack, "auc": 0.55}},
                                    "threat_model": "attacker holds S <script>alert(1)</script>",
                                    "num_members": 200, "num_nonmembers": 200, "shadows": 2, "worst_attack": "loss"},
                           notes=["note with <b>markup</b> & ampersand"]),
        "canary": AuditResult("canary", {"epsilon_lower_bound": 0.37, "claimed_epsilon": 2.0, "num_canaries": 100,
                                         "guesses": 20, "correct": 14}, passed=True),
        "robustness": AuditResult("robustness", {"clean_acc": 0.9, "fgsm_acc": 0.5, "pgd20_acc": 0.42,
                                                 "baseline_clean_acc": 0.85, "baseline_pgd20_acc": 0.3},
                                  details={"sanity_checks": [{"name": "pgd <= fgsm", "passed": True, "detail": "ok"}],
                                           "acc_vs_eps": {"eps": [0, 0.05, 0.1], "condensed": [0.9, 0.6, 0.42],
                                                          "baseline": [0.85, 0.5, 0.3]}}),
    }


def _manifest() -> dict:
    priv = {"private": True, "epsilon": 1.98, "target_epsilon": 2.0, "delta": 1e-4, "noise_multiplier": 1.3,
            "sample_rate": 0.1, "steps": 40, "sensitivity": 1.0, "accountant": "rdp", "opacus_version": "x",
            "mechanism": "Gaussian", "not_covered": ["class counts <i>", "hyper-parameters"]}
    return {"dataset": {"name": "digits<x>", "classes": [str(i) for i in range(10)]},
            "ipc": 2, "num_images": 20, "privacy": priv}


def _owner() -> dict:
    """The owner record shown in the report (the release's manifest has none of this)."""
    return {"dataset": {"fingerprint": "ab" * 32, "num_train": 1078, "num_test": 450},
            "audit": {"split": {"members_sha256": "cd" * 32, "num_members": 1078, "num_nonmembers": 269}}}


def _write(tmp_path: Path) -> tuple[Path, dict, object]:
    results = _results()
    cert = certify(results, claimed_epsilon=2.0, adversarial=True)
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(20, 1, 8, 8, generator=gen)
    labels = torch.arange(10).repeat_interleave(2)
    hist = epsilon_history_from_privacy(_manifest()["privacy"], points=8)
    html_path = write_report(tmp_path / "r.report", manifest=_manifest(), results=results, certification=cert,
                             images=images, labels=labels, classes=[str(i) for i in range(10)], epsilon_history=hist,
                             owner=_owner())
    return html_path, json.loads((html_path.parent / "report.json").read_text()), cert


def test_html_structure_and_json_numbers(tmp_path) -> None:
    html_path, data, cert = _write(tmp_path)
    page = html_path.read_text()
    parser = _Collect()
    parser.feed(page)
    # verdict table is the first table, and comes before every other section
    tables = [a for t, a in parser.tags if t == "table"]
    assert tables[0]["class"] == "verdict"
    h2 = [m.group(1) for m in re.finditer(r'<h2 id="([a-z]+)"', page)]
    assert h2[:2] == ["verdict", "images"]
    assert {"privacy", "mia", "canary", "robustness", "utility"} <= set(h2)
    # plots are inline PNGs: grid, ε over steps, ROC, acc-vs-eps
    imgs = [a["src"] for t, a in parser.tags if t == "img"]
    assert len(imgs) == 4 and all(s.startswith("data:image/png;base64,") for s in imgs)
    for s in imgs:
        assert base64.b64decode(s.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r'(src|href)="(http|//|file:)', page)  # self-contained
    # escaping: no injected markup survives
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<b>markup</b>" not in page and "digits&lt;x&gt;" in page
    # verdict: the failing gate is named; numbers agree with report.json
    assert cert.certified is False and data["certified"] is False
    assert "mia-auc" in page and "NOT CERTIFIED" in page
    assert data["results"]["canary"]["metrics"]["epsilon_lower_bound"] == 0.37 and "0.37" in page
    assert data["results"]["utility"]["metrics"]["condensed_acc"] == 0.91 and "91.0 %" in page
    assert data["results"]["mia"]["details"]["attacks"]["loss"]["tpr_at_1pct_fpr_ci_high"] == 0.09 and "9.0 %" in page
    assert [g["name"] for g in data["certification"]["gates"]] == [g.name for g in cert.gates]
    assert len(data["epsilon_history"]) == 8 and data["epsilon_history"][-1][0] == 40
    assert abs(data["epsilon_history"][-1][1] - epsilon_history_from_privacy(_manifest()["privacy"], points=1)[0][1]) < 1e-9
    assert "class counts &lt;i&gt;" in page  # what DP does not cover
    assert "pgd &lt;= fgsm" in page  # sanity checks table


def test_report_is_marked_owner_only(tmp_path) -> None:
    html_path, data, _ = _write(tmp_path)
    page = html_path.read_text()
    assert "For the data owner only" in page and 'id="owner-only"' in page
    assert page.index('id="owner-only"') < page.index('id="verdict"')  # the first thing a reader sees
    assert data["owner_only"] is True and "do not publish" in data["note"]
    assert data["owner"] == _owner() and "abababababababab" in page  # the owner's fingerprint, from the owner record
    for name in ("report.html", "report.json"):
        assert stat.S_IMODE((html_path.parent / name).stat().st_mode) == 0o600


def test_non_private_report_without_robustness(tmp_path) -> None:
    results = {k: v for k, v in _results().items() if k != "robustness"}
    cert = certify(results, claimed_epsilon=float("inf"), adversarial=False)
    m = dict(_manifest(), privacy={"private": False, "epsilon": "inf"})
    p = write_report(tmp_path / "x", manifest=m, results=results, certification=cert, images=torch.rand(10, 3, 8, 8),
                     labels=torch.arange(10), classes=list("abcdefghij"))
    page = p.read_text()
    assert "NOT differentially private" in page and 'id="robustness"' not in page
    assert page.count("data:image/png;base64,") == 2  # image grid + ROC
    assert epsilon_history_from_privacy(m["privacy"]) == []


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(tmp_path) -> None:
    html_path, _, _ = _write(tmp_path)
    shot = tmp_path / "shot.png"
    profile = tmp_path / "profile"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", f"--screenshot={shot}", "--window-size=1280,2000",
           f"file://{html_path.resolve()}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.exists(), proc.stderr[-2000:]
    from matplotlib.image import imread

    px = np.asarray(imread(str(shot)), dtype=np.float64)
    assert px.shape[0] >= 1000 and px.shape[1] >= 1000
    assert px[..., :3].std() > 0.05  # not blank
    # the top of the page (verdict banner, tables) has content, not only the bottom
    assert px[: px.shape[0] // 4, :, :3].std() > 0.02
