"""Configuration parsing and validation."""

from __future__ import annotations

import math

import pytest

from securedc.config import AdversarialConfig, CondenseConfig, PrivacyConfig, default_delta, parse_number
from securedc.errors import ConfigError, PrivacyError


@pytest.mark.parametrize("text,value", [("8/255", 8 / 255), ("0.03", 0.03), ("inf", math.inf), (" 1 / 4 ", 0.25), (2, 2.0)])
def test_parse_number(text, value) -> None:
    assert parse_number(text, name="x") == pytest.approx(value)


@pytest.mark.parametrize("text,match", [("8/0", "denominator"), ("abc", "not a number"), ("nan", "NaN"), ("1/2/3", "not a number")])
def test_parse_number_errors(text, match) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_number(text, name="adv-eps")


def test_default_delta_below_one_over_n() -> None:
    for n in (10, 1347, 60000, 50000, 100000):
        assert default_delta(n) < 1 / n


def test_validate_collects_all_problems() -> None:
    cfg = CondenseConfig(ipc=0, lr_img=-1, privacy=PrivacyConfig(epsilon=-1), adversarial=AdversarialConfig(eps=2))
    with pytest.raises(ConfigError) as err:
        cfg.validate()
    msg = str(err.value)
    for part in ("ipc", "lr_img", "privacy.epsilon", "adversarial.eps"):  # fields; the CLI shows flags
        assert part in msg
    assert {p.field for p in err.value.problems} == {"ipc", "lr_img", "privacy.epsilon", "adversarial.eps"}


def test_dp_refuses_real_init_and_round_trip() -> None:
    with pytest.raises(PrivacyError):
        CondenseConfig(init="real", privacy=PrivacyConfig(epsilon=1)).validate()
    cfg = CondenseConfig(privacy=PrivacyConfig(epsilon=3, delta=1e-6), adversarial=AdversarialConfig(eps=0.1))
    assert CondenseConfig.from_dict(cfg.to_dict()) == cfg
    assert CondenseConfig.from_dict(CondenseConfig().to_dict()) == CondenseConfig()
    assert cfg.resolved_init == "prototype" and CondenseConfig().resolved_init == "kmeans"
    no_protos = CondenseConfig(privacy=PrivacyConfig(epsilon=3, prototype_share=0.0))
    assert no_protos.resolved_init == "noise"
    with pytest.raises(PrivacyError, match="--init mix"):
        CondenseConfig(init="mix", privacy=PrivacyConfig(epsilon=1)).validate()


@pytest.mark.parametrize("device", ["tpu", "CUDA", "cuda:x", "gpu", ""])
def test_unknown_device_is_one_config_problem(device) -> None:
    with pytest.raises(ConfigError, match="^device ") as err:
        CondenseConfig(device=device).validate()
    assert "auto, cpu, cuda, cuda:N or mps" in str(err.value) and "\n" not in str(err.value)


def test_device_auto_is_the_default_and_resolves() -> None:
    import torch

    cfg = CondenseConfig()
    assert cfg.device == "auto" and cfg.problems() == []
    assert cfg.resolved_device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert CondenseConfig(device="cpu").resolved_device == "cpu"
    assert CondenseConfig.from_dict(cfg.to_dict()).device == "auto"  # the manifest records the choice, not the machine


def test_unavailable_cuda_or_index_is_refused() -> None:
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ConfigError, match="CUDA"):
        CondenseConfig(device=f"cuda:{count}").validate()
    if count == 0:
        with pytest.raises(ConfigError, match="CUDA is not available"):
            CondenseConfig(device="cuda").validate()


def test_from_options_is_the_one_constructor() -> None:
    """Flat options override a base; None = not given; inf and 0 switch privacy and the adversarial term off."""
    base = CondenseConfig(ipc=3, privacy=PrivacyConfig(epsilon=4.0, delta=1e-6), adversarial=AdversarialConfig(eps=0.1))
    same = CondenseConfig.from_options(base, epsilon=None, adv_eps=None, ipc=None)
    assert same == base
    off = CondenseConfig.from_options(base, epsilon=math.inf, adv_eps=0)
    assert not off.privacy.private and not off.adversarial.enabled and off.privacy.delta == 1e-6 and off.ipc == 3
    text = CondenseConfig.from_options(epsilon="8", adv_eps="8/255", adv_alpha="1/255", adv_steps=3, bank_memory_gb=2)
    assert text.privacy.epsilon == 8 and text.adversarial.eps == pytest.approx(8 / 255)
    assert text.adversarial.steps == 3 and text.bank_memory_gb == 2
    with pytest.raises(ConfigError, match="unknown condense option"):
        CondenseConfig.from_options(ipcs=3)
    with pytest.raises(ConfigError) as err:
        CondenseConfig.from_options(adv_eps="8/0")
    assert err.value.problems[0].field == "adversarial.eps"


def test_every_config_validates_itself_naming_fields() -> None:
    from securedc.config import EvalConfig

    with pytest.raises(ConfigError) as err:
        EvalConfig(models=0, epochs=0).validate()
    assert [p.field for p in err.value.problems] == ["eval.models", "eval.epochs"]
    assert PrivacyConfig(epsilon=1).validate().epsilon == 1
    with pytest.raises(ConfigError, match="adversarial.soft_labels needs adversarial.eps"):
        CondenseConfig(adversarial=AdversarialConfig(soft_labels=True)).validate()


@pytest.mark.parametrize(("iterations", "reuse", "public", "private"), [(300, 4, 75, 75), (1500, 4, 375, 100),
                                                                       (2, 4, 1, 1), (50, 1, 50, 50)])
def test_default_releases_are_the_same_in_dp_mode_up_to_a_cap(iterations, reuse, public, private) -> None:
    """A DP run makes no more releases (real-side passes) than a non-private one with the same K."""
    assert CondenseConfig(iterations=iterations, reuse=reuse).resolved_releases == public
    dp = CondenseConfig(iterations=iterations, reuse=reuse, privacy=PrivacyConfig(epsilon=8))
    assert dp.resolved_releases == private
    assert CondenseConfig(iterations=iterations, releases=7, privacy=PrivacyConfig(epsilon=8)).resolved_releases == 7
