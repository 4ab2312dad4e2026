"""Certification gates on constructed audit results, TOML policies, and a real leaky release."""

from __future__ import annotations

import math

import pytest
import torch

from securedc.audits.base import AuditResult
from securedc.audits.certify import Certification, Policy, certify, load_policy
from securedc.audits.pipeline import split_indices, split_members
from securedc.errors import ConfigError, DataError

INF = math.inf


def _utility(cond: float = 0.9, rnd: float = 0.8, dp_base: float | None = None) -> AuditResult:
    """Utility results; a private release's DP prototype baseline defaults to the random subset's accuracy."""
    return AuditResult("utility", {"condensed_acc": cond, "random_acc": rnd, "condensed_acc_convnet": cond,
                                   "random_acc_convnet": rnd, "condensed_acc_mlp": rnd - 0.1, "random_acc_mlp": rnd,
                                   "dp_baseline_acc": rnd if dp_base is None else dp_base},
                       details={"architectures": ["convnet", "mlp"]})


def _mia(auc: float = 0.52, tpr_hi: float = 0.03) -> AuditResult:
    return AuditResult("mia", {"auc": auc, "auc_ci_high": auc + 0.03, "tpr_at_1pct_fpr": tpr_hi / 2,
                               "tpr_at_1pct_fpr_ci_high": tpr_hi})


def _canary(eps_hat: float = 0.5, claimed: float = 1.0) -> AuditResult:
    return AuditResult("canary", {"epsilon_lower_bound": eps_hat, "claimed_epsilon": claimed})


def _robust(pgd: float = 0.4, base: float = 0.3, sane: bool = True, dp_base: float | None = None) -> AuditResult:
    """Robustness results; a private release's DP baseline defaults to the random subset's accuracy."""
    return AuditResult("robustness", {"clean_acc": 0.8, "pgd20_acc": pgd, "baseline_pgd20_acc": base,
                                      "dp_baseline_pgd20_acc": base if dp_base is None else dp_base},
                       details={"sanity_checks": [{"name": "pgd<=fgsm", "passed": True, "detail": ""},
                                                  {"name": "eps=1 -> 0", "passed": sane, "detail": "x"}]})


def _gate(cert: Certification, name: str):
    return next(g for g in cert.gates if g.name == name)


def test_all_gates_pass() -> None:
    res = {"utility": _utility(), "mia": _mia(), "canary": _canary(), "robustness": _robust()}
    cert = certify(res, claimed_epsilon=1.0, adversarial=True)
    assert cert.certified
    assert [g.name for g in cert.gates] == ["utility", "mia-tpr", "mia-auc", "canary", "robustness-sanity",
                                            "robustness-pgd"]
    assert cert.reasons == []
    d = cert.to_dict()
    assert d["certified"] is True and len(d["gates"]) == 6 and d["policy"]["mia_max_auc"] == 0.6


@pytest.mark.parametrize(
    ("results", "failed"),
    [
        ({"utility": _utility(0.7, 0.8)}, "utility"),
        ({"mia": _mia(tpr_hi=0.2)}, "mia-tpr"),
        ({"mia": _mia(auc=0.75)}, "mia-auc"),
        ({"canary": _canary(eps_hat=2.5, claimed=1.0)}, "canary"),
        ({"robustness": _robust(pgd=0.1, base=0.3)}, "robustness-pgd"),
        ({"robustness": _robust(sane=False)}, "robustness-sanity"),
    ],
)
def test_each_gate_can_fail(results: dict, failed: str) -> None:
    full = {"utility": _utility(), "mia": _mia(), "canary": _canary(), "robustness": _robust()}
    full.update(results)
    cert = certify(full, claimed_epsilon=1.0, adversarial=True)
    assert not cert.certified
    assert [g.name for g in cert.failed] == [failed]
    assert cert.reasons[0].startswith(failed + ":")


def test_missing_audits_fail_and_robustness_only_when_adversarial() -> None:
    cert = certify({"utility": _utility()}, claimed_epsilon=INF, adversarial=False)
    assert {g.name for g in cert.failed} == {"mia-tpr", "mia-auc", "canary"}
    assert all("did not run" in g.reason for g in cert.failed)
    assert not any(g.name.startswith("robustness") for g in cert.gates)
    cert = certify({"utility": _utility(), "mia": _mia(), "canary": _canary()}, claimed_epsilon=1.0, adversarial=True)
    assert [g.name for g in cert.failed] == ["robustness-pgd"]


def test_non_private_canary_is_informational() -> None:
    cert = certify({"utility": _utility(), "mia": _mia(), "canary": _canary(eps_hat=3.0, claimed=INF)},
                   claimed_epsilon=INF, adversarial=False)
    assert cert.certified and "not private" in _gate(cert, "canary").reason


def test_utility_margin_and_cross_architecture() -> None:
    res = {"utility": _utility(0.78, 0.8), "mia": _mia(), "canary": _canary()}  # non-private: the random-subset rule
    assert not certify(res, claimed_epsilon=INF, adversarial=False).certified
    assert certify(res, Policy(utility_margin=0.05), claimed_epsilon=INF, adversarial=False).certified
    tie = {**res, "utility": _utility(0.795, 0.8)}  # within the default 1-point margin: a tie, not a refusal
    assert certify(tie, claimed_epsilon=INF, adversarial=False).certified
    assert not certify(tie, Policy(utility_margin=0.0), claimed_epsilon=INF, adversarial=False).certified
    # a private release is judged against the DP baseline (margin 0.02), or the random rule when asked
    assert certify(res, claimed_epsilon=1.0, adversarial=False).certified
    assert not certify(res, Policy(private_utility_baseline="random"), claimed_epsilon=1.0, adversarial=False).certified
    cross = certify({**res, "utility": _utility()}, Policy(utility_all_architectures=True), claimed_epsilon=INF,
                    adversarial=False)
    assert [g.name for g in cross.failed] == ["utility-mlp"]


def test_toml_policy_override(tmp_path) -> None:
    f = tmp_path / "policy.toml"
    f.write_text("mia_max_auc = 0.7\nmia_max_tpr_at_1pct_fpr = 1\nutility_margin = 0.02\nrequire_canary = false\n")
    pol = load_policy(f)
    assert pol.mia_max_auc == 0.7 and pol.mia_max_tpr_at_1pct_fpr == 1.0 and not pol.require_canary
    res = {"utility": _utility(0.79, 0.8), "mia": _mia(auc=0.65, tpr_hi=0.5)}
    assert not certify(res, claimed_epsilon=1.0, adversarial=False).certified
    cert = certify(res, pol, claimed_epsilon=1.0, adversarial=False)
    assert cert.certified and cert.policy["mia_max_auc"] == 0.7
    table = tmp_path / "table.toml"
    table.write_text("[policy]\nmia_max_auc = 0.55\n")
    assert load_policy(table).mia_max_auc == 0.55


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("mia_max_acu = 0.7\n", "unknown policy key"),
        ("mia_max_auc = 1.5\n", "mia_max_auc must be in [0, 1]"),
        ("utility_margin = -1\n", "utility_margin"),
        ("require_mia = 'yes'\n", "require_mia"),
        ("robust_metric = 'accuracy'\n", "robust_metric"),
        ("mia_max_auc = \n", "not valid TOML"),
    ],
)
def test_bad_policy_is_config_error(tmp_path, text: str, needle: str) -> None:
    f = tmp_path / "p.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        load_policy(f)


def test_missing_policy_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_policy(tmp_path / "nope.toml")


def test_split_is_disjoint_balanced_and_deterministic(digits) -> None:
    x, y = digits.train_images, digits.train_labels
    m, n = split_indices(x, y, holdout_fraction=0.2, seed=3)
    m2, n2 = split_indices(x, y, holdout_fraction=0.2, seed=3)
    assert torch.equal(m, m2) and torch.equal(n, n2)
    assert set(m.tolist()).isdisjoint(n.tolist())
    assert m.numel() + n.numel() == y.numel()
    for c in range(10):  # Bernoulli(0.2) per example: within 4 binomial stds of 20 % in every class
        total = int((y == c).sum())
        assert abs(int((y[n] == c).sum()) - 0.2 * total) <= 4 * (0.16 * total) ** 0.5
    m3, _ = split_indices(x, y, holdout_fraction=0.2, seed=4)
    assert not torch.equal(m, m3)
    (mx, my), (nx, ny) = split_members(x, y, seed=3)
    assert mx.shape[0] == m.numel() and torch.equal(ny, y[n])
    with pytest.raises(DataError, match="needs >= 2 per class"):
        split_indices(torch.rand(3, 1, 2, 2), torch.tensor([0, 0, 1]))


def _member_set(x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> set[bytes]:
    m, _ = split_indices(x, y, holdout_fraction=0.2, seed=seed)
    return {x[i].numpy().tobytes() for i in m.tolist()}


def test_neighbouring_datasets_have_neighbouring_member_sets(digits) -> None:
    """DP of a release made from the members needs members(D) and members(D ± z) to differ by at most z.

    A per-class permutation (the old split) moved hundreds of examples when one was added or removed."""
    x, y = digits.train_images, digits.train_labels
    base = _member_set(x, y)
    for drop in (0, 500, len(y) - 1):  # remove one example anywhere (the rest shift position)
        keep = torch.arange(len(y)) != drop
        assert base ^ _member_set(x[keep], y[keep]) <= {x[drop].numpy().tobytes()}
    z, zy = digits.test_images[:1], digits.test_labels[:1]  # add one example, first or last
    for xs, ys in ((torch.cat([z, x]), torch.cat([zy, y])), (torch.cat([x, z]), torch.cat([y, zy]))):
        assert _member_set(xs, ys) ^ base <= {z[0].numpy().tobytes()}


def test_train_test_split_of_sources_without_one_is_stable(digits) -> None:
    from securedc.data.split import train_test_split

    x, y = digits.train_images, digits.train_labels
    tr, _ = train_test_split(x, y, test_fraction=0.2, seed=0)
    tr2, _ = train_test_split(x[1:], y[1:], test_fraction=0.2, seed=0)
    assert {x[i].numpy().tobytes() for i in tr.tolist()} ^ {x[1:][i].numpy().tobytes() for i in tr2.tolist()} \
        <= {x[0].numpy().tobytes()}
    same = torch.zeros(400, 1, 2, 2)  # repeated examples: the k-th copy draws its own side
    _, held = train_test_split(same, torch.zeros(400, dtype=torch.int64), test_fraction=0.5, seed=0)
    assert 150 < len(held) < 250
    with pytest.raises(DataError, match="no training example"):
        train_test_split(x[:1], y[:1], test_fraction=0.99, seed=0)


def test_leaky_release_fails_mia_gate(digits) -> None:
    """Real member images exported as the 'condensed set': the MIA gate must refuse it."""
    from securedc.audits.mia import run_mia
    from securedc.config import EvalConfig
    from securedc.evaluate import random_subset

    members, nonmembers = split_members(digits.train_images, digits.train_labels, seed=0)
    leak_x, leak_y = random_subset(members[0], members[1], 20, seed=0)  # 200 real member images
    mia = run_mia(leak_x, leak_y, members=members, nonmembers=nonmembers, num_classes=10, mean=digits.mean,
                  std=digits.std, shadows=0, attacks=("loss", "neighbour"), max_targets=250, seed=0,
                  eval_config=EvalConfig(models=1, epochs=30, dsa="none"))
    cert = certify({"mia": mia}, Policy(require_utility=False, require_canary=False), claimed_epsilon=INF,
                   adversarial=False)
    assert not cert.certified
    assert mia.metrics["auc"] > 0.6 and mia.metrics["tpr_at_1pct_fpr"] > 0.1
    assert {g.name for g in cert.failed} == {"mia-tpr", "mia-auc"}


@pytest.mark.slow
def test_dp_release_passes_mia_gate_and_canary_bound(digits) -> None:
    """A DP release at small ε (noise init, Gaussian mechanism) passes the MIA gates, and ε̂ ≤ ε."""
    from securedc.audits.pipeline import AuditConfig, run_audits
    from securedc.condenser import Condenser
    from securedc.config import CondenseConfig, EvalConfig, PrivacyConfig

    cfg = CondenseConfig(ipc=10, iterations=40, batch_real=64, privacy=PrivacyConfig(epsilon=1.0), seed=0)
    members, nonmembers = split_members(digits.train_images, digits.train_labels, seed=cfg.seed)
    cond = Condenser(cfg, num_classes=10, image_shape=digits.image_shape, mean=digits.mean, std=digits.std)
    result = cond.fit(cond.make_mechanism(*members))
    assert result.privacy["private"] and result.privacy["epsilon"] <= 1.0 + 1e-6
    out = run_audits(
        result.images, result.labels, members=members, nonmembers=nonmembers,
        test=(digits.test_images, digits.test_labels), num_classes=10, mean=digits.mean, std=digits.std,
        config=cfg, eval_config=EvalConfig(models=1, epochs=50), audit=AuditConfig(shadows=2, canaries=100,
                                                                                   audit_iterations=40),
    )
    gates = {g.name: g for g in out.certification.gates}
    assert gates["mia-auc"].passed and gates["mia-tpr"].passed, [g.reason for g in gates.values()]
    canary = out.results["canary"]
    assert canary.metrics["epsilon_lower_bound"] <= 1.0 and gates["canary"].passed
    assert set(out.results) == {"utility", "mia", "canary"}


def test_private_robustness_gate_compares_with_the_dp_baseline() -> None:
    """A private release's robust accuracy is judged against the DP prototype baseline of its budget;
    ``private_robust_baseline = "random"`` restores the random-subset rule; non-private releases keep it."""
    res = {"utility": _utility(), "mia": _mia(), "canary": _canary(),
           "robustness": _robust(pgd=0.5, base=0.7, dp_base=0.45)}
    gate = _gate(certify(res, claimed_epsilon=1.0, adversarial=True), "robustness-pgd")
    assert gate.passed and gate.threshold == pytest.approx(0.45)
    assert "DP prototype baseline" in gate.reason and "random real subset, not private, reaches 70.0 %" in gate.reason
    strict = certify(res, Policy(private_robust_baseline="random"), claimed_epsilon=1.0, adversarial=True)
    assert not _gate(strict, "robustness-pgd").passed
    public = certify(res, claimed_epsilon=INF, adversarial=True)
    assert not _gate(public, "robustness-pgd").passed and _gate(public, "robustness-pgd").threshold == pytest.approx(0.7)
    missing = {**res, "robustness": AuditResult("robustness", {"pgd20_acc": 0.5, "baseline_pgd20_acc": 0.3},
                                                details={"sanity_checks": [{"name": "a", "passed": True}]})}
    assert not _gate(certify(missing, claimed_epsilon=1.0, adversarial=True), "robustness-pgd").passed
    with pytest.raises(ConfigError, match="private_robust_baseline"):
        Policy(private_robust_baseline="none").validate()


def test_a_split_recorded_by_an_older_securedc_is_not_recreated(digits, tmp_path) -> None:
    """Records of the old per-class permutation split carry no ``method``: the audit falls back to the
    no-recorded-split rule (members = the whole training set) and says so, instead of guessing."""
    from securedc.audits.pipeline import split_record
    from securedc.reaudit import membership_split

    m, n = split_indices(digits.train_images, digits.train_labels, holdout_fraction=0.2, seed=0)
    record = split_record(m, n, holdout_fraction=0.2, seed=0, fingerprint=digits.fingerprint)
    notes: list = []
    _, members, nonmembers, _, recreated = membership_split(digits, record, seed=0, where=tmp_path, say=notes.append)
    assert recreated and members[0].shape[0] == m.numel() and nonmembers[0].shape[0] == n.numel()
    old = {k: v for k, v in record.items() if k != "method"}
    _, members, _, split, recreated = membership_split(digits, old, seed=0, where=tmp_path, say=notes.append)
    assert not recreated and members[0].shape[0] == digits.train_labels.numel()
    assert any("older securedc" in note.text for note in notes) and split["members"] == "whole training set"


def test_canary_gate_says_when_it_cannot_fail() -> None:
    """20 guesses of 100 canaries bound ε̂ by 1.82: at ε = 8 the gate passes whatever the release, and must say so."""
    from securedc.audits.canary import epsilon_lower_bound

    ceiling = epsilon_lower_bound(20, 20, num_canaries=100, delta=1e-5)
    canary = AuditResult(name="canary", metrics={"epsilon_lower_bound": 0.0, "epsilon_ceiling": ceiling,
                                                 "num_canaries": 100.0, "guesses": 20.0}, passed=True)
    gate = certify({"canary": canary}, Policy(require_utility=False, require_mia=False), claimed_epsilon=8.0,
                   adversarial=False).gates[0]
    assert gate.passed and "INCONCLUSIVE" in gate.reason and f"{ceiling:.2f}" in gate.reason
    testable = certify({"canary": canary}, Policy(require_utility=False, require_mia=False), claimed_epsilon=1.0,
                       adversarial=False).gates[0]
    assert testable.passed and "INCONCLUSIVE" not in testable.reason


def test_nan_attack_scores_fail_the_mia_gates(digits) -> None:
    """A diverged model gives NaN scores: no evidence, so the gates fail (they used to read chance)."""
    from securedc.audits.mia import run_mia
    from securedc.config import EvalConfig

    members, nonmembers = split_members(digits.train_images, digits.train_labels, seed=0)
    broken = torch.full((20, 1, 8, 8), float("nan"))
    mia = run_mia(broken, torch.arange(20) % 10, members=members, nonmembers=nonmembers, num_classes=10,
                  mean=digits.mean, std=digits.std, shadows=0, attacks=("loss",), max_targets=50, seed=0,
                  eval_config=EvalConfig(models=1, epochs=1, dsa="none"))
    assert math.isnan(mia.metrics["auc"]) and any("INVALID" in note for note in mia.notes)
    cert = certify({"mia": mia}, Policy(require_utility=False, require_canary=False), claimed_epsilon=INF,
                   adversarial=False)
    assert {g.name for g in cert.failed} == {"mia-tpr", "mia-auc"}


def test_policy_margins_are_fractions() -> None:
    with pytest.raises(ConfigError, match="fraction"):
        load_policy(None, utility_margin=2.0)
    load_policy(None, utility_margin=1.0, canary_slack=2.0)  # a margin of 1 switches the gate off; slack is in ε
