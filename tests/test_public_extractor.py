"""securedc.public_extractor and `securedc extractor`: a robust teacher trained on declared-public data."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

from securedc.audits.robustness import AttackSettings, attack_subsample, audit_model
from securedc.config import AdversarialConfig, CondenseConfig, PrivacyConfig
from securedc.data import DatasetBundle
from securedc.errors import ConfigError, DataError
from securedc.models.registry import seeded_model
from securedc.public_extractor import METADATA_KEY, check_declared_public, extractor_metadata, fit_public_extractor
from securedc.robust import load_extractor, save_extractor
from securedc.terms.adversarial import AdversarialTerm


def _net(digits, seed: int = 1):
    return seeded_model("convnet", seed=seed, in_channels=1, num_classes=10, image_size=(8, 8),
                        mean=digits.mean, std=digits.std)


def test_cli_writes_weights_with_their_description(tmp_path, digits):
    """Real subprocess run on digits: rc 0, a safetensors file that loads into the run's architecture
    and records what it was trained on and its measured robustness, which re-measuring reproduces."""
    out = tmp_path / "ext.safetensors"
    proc = subprocess.run([sys.executable, "-m", "securedc", "extractor", str(out), "--dataset", "digits",
                           "--adv-eps", "8/255", "--images", "700", "--epochs", "4", "--seed", "3",
                           "--test-images", "120"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "declared public" in proc.stderr and "PGD-20" in proc.stderr
    meta = extractor_metadata(out)
    assert meta["declared_public"] == "digits" and meta["train_images"] == 700 and meta["epochs"] == 4
    assert meta["recipe"]["name"] == "fgsm-rs" and meta["eps"] == pytest.approx(8 / 255)
    assert meta["test_images"] == 120 and 0.2 < meta["clean_acc"] <= 1 and 0 <= meta["pgd20_acc"] <= meta["clean_acc"]
    net = load_extractor(out, _net(digits))
    tx, ty = attack_subsample(digits.test_images, digits.test_labels, 120, 3)
    head = audit_model(net, tx, ty, eps=8 / 255, num_classes=10, seed=3,
                       settings=AttackSettings.quick(), sanity=False)
    assert head.metrics["clean_acc"] == pytest.approx(meta["clean_acc"], abs=1e-6)
    assert head.metrics["pgd20_acc"] == pytest.approx(meta["pgd20_acc"], abs=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ext.safetensors"]  # no temporary left behind


def test_adversarial_training_makes_it_more_robust_than_standard_training(digits):
    """The recorded PGD-20 accuracy is that of an adversarially trained network: above the same
    network trained for the same epochs without attacks (digits, eps 0.1)."""
    from securedc.terms.adversarial import train_on_synthetic

    fitted = fit_public_extractor(digits, eps=0.1, images=700, epochs=6, seed=0, test_images=150)
    x, y = digits.train_images[:700], digits.train_labels[:700]
    plain = train_on_synthetic(_net(digits, 0), x, y, epochs=6, seed=0)
    tx, ty = attack_subsample(digits.test_images, digits.test_labels, 150, 0)
    head = audit_model(plain, tx, ty, eps=0.1, num_classes=10, seed=0,
                       settings=AttackSettings.quick(), sanity=False)
    assert fitted.description["train_images"] == 700
    assert fitted.description["pgd20_acc"] > head.metrics["pgd20_acc"] + 0.1, (fitted.description, head.metrics)


def test_run_manifest_names_the_extractor_file(tmp_path, digits):
    """A run with --robust-extractor records the file's own description (what it was trained on)."""
    fitted = fit_public_extractor(digits, eps=0.1, images=300, epochs=1, seed=0, test_images=100)
    path = tmp_path / "ext.safetensors"
    fitted.save(path)
    config = CondenseConfig(adversarial=AdversarialConfig(eps=0.1, robust_extractor=str(path)))
    described = AdversarialTerm.from_config(config).describe()
    assert described["extractor"].startswith("public file")
    assert described["extractor_file"]["name"] == "ext.safetensors"
    assert described["extractor_file"]["declared_public"] == "digits"
    # the file keeps the fingerprint of the data it saw (for the DP check); the release does not
    assert extractor_metadata(path)["dataset_fingerprint"] == digits.fingerprint
    assert "dataset_fingerprint" not in described["extractor_file"]
    json.dumps(described)  # JSON-safe for the manifest


def test_weights_without_description_and_corrupt_files(tmp_path, digits):
    plain = tmp_path / "plain.safetensors"
    save_extractor(plain, _net(digits))
    assert extractor_metadata(plain) == {}
    with safe_open(str(plain), framework="pt") as handle:
        assert METADATA_KEY not in (handle.metadata() or {})
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 16)
    with pytest.raises(DataError, match="not a safetensors"):
        extractor_metadata(broken)
    with pytest.raises(DataError, match="not found"):
        extractor_metadata(tmp_path / "missing.safetensors")
    bad_meta = tmp_path / "bad_meta.safetensors"
    save_extractor(bad_meta, _net(digits), metadata={METADATA_KEY: "{not json"})
    with pytest.raises(DataError, match="malformed"):
        extractor_metadata(bad_meta)


def test_save_is_atomic(tmp_path, digits, monkeypatch):
    """A failed write leaves the previous weights intact and no temporary file."""
    path = tmp_path / "ext.safetensors"
    save_extractor(path, _net(digits, 1))
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("securedc.robust.save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save_extractor(path, _net(digits, 2))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ext.safetensors"]


@pytest.mark.parametrize("args,match", [
    (["--epochs", "-1"], "epochs"),
    (["--images", "-1"], "images"),
    (["--adv-eps", "2"], "eps"),
    (["--adv-eps", "abc"], "adv-eps"),
    (["--dataset", "no-such-data"], "no-such-data"),
])
def test_cli_bad_input_one_line_exit_2_nothing_written(tmp_path, cli, args, match):
    out = tmp_path / "sub" / "ext.safetensors"
    result = cli("extractor", out, *args)
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and match in lines[0], lines
    assert not out.exists()


def test_options_are_checked_before_any_work(digits):
    with pytest.raises(ConfigError, match="eps"):
        fit_public_extractor(digits, eps=0.0)
    with pytest.raises(ConfigError, match="epochs"):
        fit_public_extractor(digits, eps=0.1, epochs=-1)
    assert torch.get_num_threads() >= 1


def test_non_private_soft_labels_come_from_a_teacher_trained_on_the_real_data(digits, monkeypatch):
    """Non-private --soft-labels: the teacher is adversarially trained on the condensed (real) training
    data; the manifest says how, the owner record also keeps its accuracy on real test data."""
    from securedc import public_extractor
    from securedc.condensation import run_condensation

    seen = []
    real_fit = public_extractor.fit_public_extractor

    def spy(bundle, **kwargs):
        seen.append(bundle.train_images.shape[0])
        return real_fit(bundle, **{**kwargs, "epochs": 2, "test_images": 100})

    monkeypatch.setattr(public_extractor, "fit_public_extractor", spy)
    adv = AdversarialConfig(eps=8 / 255, soft_labels=True, extractor_epochs=1)
    cond = run_condensation(CondenseConfig(ipc=1, iterations=2, batch_real=8, adversarial=adv), digits)
    assert seen == [digits.train_images.shape[0]]
    assert cond.soft_labels is not None and cond.soft_labels.shape == (10, 10)
    manifest, owner = cond.manifest(), cond.owner_record()
    assert manifest["soft_label_teacher"]["trained_on"].startswith("the real training data")
    assert "clean_acc" not in manifest["soft_label_teacher"] and "pgd20_acc" not in manifest["soft_label_teacher"]
    assert "dataset_fingerprint" not in manifest["soft_label_teacher"]  # no data fingerprint in a release
    assert digits.fingerprint not in json.dumps(manifest)
    assert 0 <= owner["soft_label_teacher"]["pgd20_acc"] <= 1
    assert owner["soft_label_teacher"]["dataset_fingerprint"] == digits.fingerprint

    # DP: the teacher never sees real data (trained on S only) and the manifest has no such section
    seen.clear()
    dp = CondenseConfig(ipc=1, iterations=2, batch_real=8, adversarial=adv,
                        privacy=PrivacyConfig(epsilon=8.0))
    cond = run_condensation(dp, digits)
    assert seen == [] and cond.teacher is None and cond.soft_labels is not None
    assert "soft_label_teacher" not in cond.manifest()


def test_soft_labels_without_the_term(digits, tmp_path):
    """--adv-weight 0 --soft-labels: DM plus a teacher's soft labels. DP: a teacher trained on S only;
    with --robust-extractor: that file's network (its soft labels exactly)."""
    from securedc.condensation import run_condensation
    from securedc.robust import soft_labels_from

    dp = PrivacyConfig(epsilon=8.0)
    adv = AdversarialConfig(eps=8 / 255, weight=0.0, soft_labels=True, extractor_epochs=1)
    cond = run_condensation(CondenseConfig(ipc=1, iterations=2, batch_real=8, adversarial=adv, privacy=dp), digits)
    assert cond.soft_labels is not None and cond.soft_labels.shape == (10, 10)
    assert "adversarial" not in [t["name"] for t in cond.result.terms]
    path = tmp_path / "ext.safetensors"
    save_extractor(path, _net(digits, 4))
    adv = AdversarialConfig(eps=8 / 255, weight=0.0, soft_labels=True, robust_extractor=str(path))
    cond = run_condensation(CondenseConfig(ipc=1, iterations=2, batch_real=8, adversarial=adv, privacy=dp), digits)
    expected = soft_labels_from(load_extractor(path, _net(digits)), cond.images)
    torch.testing.assert_close(cond.soft_labels, expected)


def test_the_term_and_its_soft_labels_share_one_read_of_the_extractor_file(digits, tmp_path, monkeypatch):
    """With the term on and --robust-extractor, the soft labels come from the very network the term
    matched under (not a real-data teacher, even in a non-private run), read from its file once."""
    import securedc.robust
    from securedc.condensation import run_condensation
    from securedc.robust import soft_labels_from

    path = tmp_path / "ext.safetensors"
    save_extractor(path, _net(digits, 4))
    expected_net = load_extractor(path, _net(digits))
    reads = []
    real_load = securedc.robust.load_extractor
    monkeypatch.setattr(securedc.robust, "load_extractor", lambda *a, **k: reads.append(a[0]) or real_load(*a, **k))
    adv = AdversarialConfig(eps=8 / 255, soft_labels=True, robust_extractor=str(path))
    cond = run_condensation(CondenseConfig(ipc=1, iterations=2, batch_real=8, adversarial=adv), digits)
    assert "adversarial" in [t["name"] for t in cond.result.terms]
    assert reads == [str(path)] and cond.teacher is None
    torch.testing.assert_close(cond.soft_labels, soft_labels_from(expected_net, cond.images))


def _part(digits, keep: slice, name: str) -> DatasetBundle:
    return dataclasses.replace(digits, name=name, train_images=digits.train_images[keep],
                               train_labels=digits.train_labels[keep], source=f"digits ({name} part)", fingerprint="")


def test_dp_run_refuses_a_teacher_trained_on_the_data_it_condenses(tmp_path, digits, monkeypatch):
    """A DP run whose --robust-extractor was trained on the very data it condenses is refused before it
    touches the data (its features and soft labels would leak that data outside the accountant); a
    non-private run may use it, and a teacher trained on a disjoint declared-public part is accepted."""
    from securedc.condensation import run_condensation
    from securedc.condenser import Condenser

    same = tmp_path / "same.safetensors"
    fit_public_extractor(digits, eps=0.1, images=200, epochs=1, seed=0, test_images=50).save(same)
    adv = AdversarialConfig(eps=8 / 255, weight=0.0, soft_labels=True, robust_extractor=str(same))
    dp = CondenseConfig(ipc=1, iterations=2, batch_real=8, adversarial=adv, privacy=PrivacyConfig(epsilon=8.0))

    def no_access(*args, **kwargs):
        raise AssertionError("the refused run reached the real data")

    with monkeypatch.context() as m:
        m.setattr(Condenser, "make_mechanism", no_access)
        with pytest.raises(ConfigError, match="trained on 'digits', the data this DP run condenses"):
            run_condensation(dp, digits)
    assert run_condensation(CondenseConfig(ipc=1, iterations=2, batch_real=8, adversarial=adv), digits) is not None

    # no fingerprint (a file written before they were recorded): the same dataset name and source are refused too
    legacy = tmp_path / "legacy.safetensors"
    meta = {k: v for k, v in extractor_metadata(same).items() if k != "dataset_fingerprint"}
    save_extractor(legacy, _net(digits), metadata={METADATA_KEY: json.dumps(meta)})
    with pytest.raises(ConfigError, match="declare public"):
        check_declared_public(legacy, digits)

    # a disjoint part declared public teaches the DP run on the rest
    public, private = _part(digits, slice(0, 400), "digits-public"), _part(digits, slice(400, None), "digits-private")
    teacher = tmp_path / "public.safetensors"
    fit_public_extractor(public, eps=0.1, images=0, epochs=1, seed=0, test_images=50).save(teacher)
    adv = AdversarialConfig(eps=8 / 255, weight=0.0, soft_labels=True, robust_extractor=str(teacher))
    cond = run_condensation(CondenseConfig(ipc=1, iterations=2, batch_real=8, adversarial=adv,
                                           privacy=PrivacyConfig(epsilon=8.0)), private)
    assert cond.soft_labels is not None and cond.soft_labels.shape == (10, 10)


def test_cli_dp_run_with_a_teacher_of_its_own_data_exits_2(tmp_path, cli, digits):
    same = tmp_path / "same.safetensors"
    fit_public_extractor(digits, eps=0.1, images=200, epochs=1, seed=0, test_images=50).save(same)
    out = tmp_path / "out"
    result = cli("condense", "--epsilon", "8", "--adv-eps", "8/255", "--robust-extractor", same, "--no-audit",
                 "--out", out)
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "declare public" in lines[0], lines
    assert not out.exists() or not any(out.iterdir())
