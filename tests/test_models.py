"""Contract tests for securedc.models: every registered model, three input geometries."""

from __future__ import annotations

import pytest
import torch
from opacus import GradSampleModule
from opacus.validators import ModuleValidator
from torch import nn

from securedc.errors import ConfigError, DataError
from securedc.models import ConvNet, ImageClassifier, create_model, list_models, register_model, seeded_model
from securedc.models import registry as registry_module

torch.set_num_threads(2)

GEOMETRIES = [(1, (8, 8)), (1, (28, 28)), (3, (32, 32))]
GEOM_IDS = ["8x8x1", "28x28x1", "32x32x3"]
NAMES = list_models()


def _digits(channels: int, size: tuple[int, int], n: int = 6) -> torch.Tensor:
    """Real sklearn digits in [0, 1], resized/replicated to the requested geometry."""
    from sklearn.datasets import load_digits

    images = torch.as_tensor(load_digits().images[:n], dtype=torch.float32).unsqueeze(1) / 16.0
    if size != (8, 8):
        images = nn.functional.interpolate(images, size=size, mode="bilinear", align_corners=False)
    return images.clamp(0, 1).expand(-1, channels, -1, -1).contiguous()


def test_registered_names_are_pinned() -> None:
    assert list_models() == ["convnet", "mlp", "resnet"]


@pytest.fixture(params=[(n, g) for n in NAMES for g in GEOMETRIES], ids=[f"{n}-{i}" for n in NAMES for i in GEOM_IDS])
def model_and_images(request: pytest.FixtureRequest) -> tuple[ImageClassifier, torch.Tensor]:
    name, (channels, size) = request.param
    model = seeded_model(name, seed=0, in_channels=channels, num_classes=10, image_size=size)
    return model, _digits(channels, size)


def test_forward_embed_classifier_contract(model_and_images: tuple[ImageClassifier, torch.Tensor]) -> None:
    model, x = model_and_images
    x_before = x.clone()
    logits, feats = model(x), model.embed(x)
    assert logits.shape == (x.shape[0], 10)
    assert feats.shape == (x.shape[0], model.feature_dim)
    assert isinstance(model.classifier, nn.Linear) and model.classifier.in_features == model.feature_dim
    torch.testing.assert_close(logits, model.classifier(feats), rtol=0, atol=0)
    assert torch.equal(x, x_before), "model modified its input"
    assert torch.isfinite(logits).all()


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")  # opacus hooks; inputs need no grad
def test_opacus_validator_and_grad_sample(model_and_images: tuple[ImageClassifier, torch.Tensor]) -> None:
    model, x = model_and_images
    assert ModuleValidator.validate(model, strict=False) == []
    ModuleValidator.validate(model, strict=True)  # raises on any problem
    gsm = GradSampleModule(model)
    y = torch.arange(x.shape[0]) % 10
    nn.functional.cross_entropy(gsm(x), y).backward()
    params = [p for p in model.parameters() if p.requires_grad]
    assert params
    for p in params:
        assert p.grad_sample is not None and p.grad_sample.shape == (x.shape[0], *p.shape)
    # loss_reduction="mean": grad_sample[i] is the gradient of sample i's loss; their mean is .grad
    for p in params:
        torch.testing.assert_close(p.grad_sample.mean(0), p.grad, rtol=1e-4, atol=1e-6)
    gsm._close()


def test_normalisation_is_inside_and_uses_buffers() -> None:
    model = seeded_model("convnet", seed=1, in_channels=1, num_classes=10, image_size=(8, 8), mean=[0.2861], std=[0.3530])
    buffers = dict(model.named_buffers())
    assert torch.allclose(buffers["normalize.mean"].flatten(), torch.tensor([0.2861]))
    assert torch.allclose(buffers["normalize.std"].flatten(), torch.tensor([0.3530]))
    default = create_model("mlp", in_channels=3, num_classes=2, image_size=(8, 8))
    assert default.normalize.mean.flatten().tolist() == [0.5, 0.5, 0.5]
    with pytest.raises(ConfigError, match="std"):
        create_model("mlp", in_channels=1, num_classes=2, image_size=(8, 8), std=[0.0])
    with pytest.raises(ConfigError, match="channels"):
        create_model("mlp", in_channels=3, num_classes=2, image_size=(8, 8), mean=[0.1, 0.2])


@pytest.mark.parametrize("name", NAMES)
def test_seeded_model_is_deterministic_and_leaves_global_rng(name: str) -> None:
    kw = dict(in_channels=1, num_classes=10, image_size=(28, 28))
    state = torch.get_rng_state()
    a, b, c = seeded_model(name, seed=3, **kw), seeded_model(name, seed=3, **kw), seeded_model(name, seed=4, **kw)
    assert torch.equal(torch.get_rng_state(), state)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb)
    assert not torch.equal(pa, pc)
    # the generator draws match PyTorch's default init ranges: |w| <= 1/sqrt(fan_in)
    for module in a.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            assert module.weight.abs().max() <= module.weight[0].numel() ** -0.5 + 1e-7


def test_reset_parameters_reuses_one_model() -> None:
    model = create_model("convnet", in_channels=1, num_classes=10, image_size=(8, 8))
    fresh = seeded_model("convnet", seed=5, in_channels=1, num_classes=10, image_size=(8, 8))
    model.reset_parameters(generator=torch.Generator().manual_seed(5))
    for p, q in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(p, q)


def test_convnet_geometry_and_options() -> None:
    net = create_model("convnet", in_channels=1, num_classes=10, image_size=(28, 28))
    assert isinstance(net, ConvNet) and net.features[0].padding == (3, 3) and net.feature_dim == 2048
    assert create_model("convnet", in_channels=3, num_classes=10, image_size=(32, 32)).features[0].padding == (1, 1)
    group = create_model("convnet", in_channels=1, num_classes=10, image_size=(8, 8), norm="group", width=32, depth=2)
    norms = [m for m in group.modules() if isinstance(m, nn.GroupNorm)]
    assert len(norms) == 2 and all(m.num_groups == 4 for m in norms) and group.feature_dim == 32 * 2 * 2
    inst = create_model("convnet", in_channels=1, num_classes=10, image_size=(8, 8))
    assert all(m.num_groups == 128 for m in inst.modules() if isinstance(m, nn.GroupNorm))
    plain = create_model("convnet", in_channels=1, num_classes=10, image_size=(8, 8), norm="none")
    assert not any(isinstance(m, nn.GroupNorm) for m in plain.modules())
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    with pytest.raises(ConfigError, match="too deep"):
        create_model("convnet", in_channels=1, num_classes=10, image_size=(8, 8), depth=4)
    with pytest.raises(ConfigError, match="norm"):
        create_model("convnet", in_channels=1, num_classes=10, image_size=(8, 8), norm="batch")
    with pytest.raises(ConfigError, match="no option"):
        create_model("convnet", in_channels=1, num_classes=10, image_size=(8, 8), hidden=3)


def test_names_and_errors() -> None:
    kw = dict(in_channels=1, num_classes=10, image_size=(8, 8))
    with pytest.raises(ConfigError, match="convnet"):  # message lists the choices
        create_model("vgg11", **kw)
    assert isinstance(create_model(" ConvNet ", **kw), ConvNet)  # case and spaces ignored
    net = create_model("convnet", **kw)
    with pytest.raises(DataError, match="expects images"):
        net(torch.rand(2, 1, 28, 28))


def test_register_model_refuses_duplicates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "_REGISTRY", registry_module._REGISTRY.copy())
    with pytest.raises(ConfigError, match="registered twice"):
        register_model("ConvNet")(ConvNet)

    @register_model("tiny_linear")
    class TinyLinear(ImageClassifier):
        def __init__(self, **kw: object) -> None:
            super().__init__(**kw)  # type: ignore[arg-type]
            self.feature_dim = self.in_channels * self.image_size[0] * self.image_size[1]
            self.classifier = nn.Linear(self.feature_dim, self.num_classes)

        def _features(self, z: torch.Tensor) -> torch.Tensor:
            return z.flatten(1)

    assert "tiny-linear" in list_models()
    assert isinstance(create_model("tiny-linear", in_channels=1, num_classes=2, image_size=(8, 8)), TinyLinear)
    assert isinstance(create_model("tiny_linear", in_channels=1, num_classes=2, image_size=(8, 8)), TinyLinear)
    with pytest.raises(ConfigError, match="registered twice"):
        register_model("tiny-linear")(TinyLinear)
