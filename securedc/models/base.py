"""The contract every securedc model fulfils: :class:`ImageClassifier`.

A model takes images ``[N, C, H, W]`` in ``[0, 1]``, standardises them with its own
:class:`~securedc.models.normalize.Normalize` buffers, maps them to a penultimate
representation with :meth:`ImageClassifier.embed` (``[N, feature_dim]``, what distribution
matching compares) and to logits with ``classifier`` (the final ``nn.Linear``):
``forward(x) == classifier(embed(x))``. Models contain only Opacus-supported layers
(Conv2d, Linear, GroupNorm, pooling, ReLU) so ``opacus.GradSampleModule`` can compute
per-sample gradients, and never write into their input.

References:
    Zhao, Bilen. Dataset Condensation with Distribution Matching. WACV 2023 (arXiv:2110.04181).
    Yousefpour et al. Opacus: User-Friendly Differential Privacy Library in PyTorch. 2021 (arXiv:2109.12298).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from securedc.errors import ConfigError, DataError
from securedc.models.normalize import Normalize

__all__ = ["ImageClassifier"]


def _check_image_size(image_size: Sequence[int]) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise ConfigError(f"image_size must be a pair (H, W), got {image_size!r}") from None
    if h < 1 or w < 1:
        raise ConfigError(f"image_size must be positive, got {(h, w)}")
    return h, w


class ImageClassifier(nn.Module, abc.ABC):
    """Base class of every registered model (see the module docstring for the contract).

    Subclasses build their layers in ``__init__`` (after calling this one), set
    ``self.classifier`` (``nn.Linear(feature_dim, num_classes)``) and ``self.feature_dim``, and
    implement :meth:`_features` on *standardised* images.

    Args:
        in_channels: image channels ``C`` (>= 1).
        num_classes: number of classes (>= 1).
        image_size: ``(H, W)`` the model is built for.
        mean: public per-channel mean (default 0.5 each).
        std: public per-channel std (default 0.5 each).

    Raises:
        ConfigError: invalid sizes or normalisation constants.
    """

    name: ClassVar[str]  # set by @register_model
    classifier: nn.Linear
    feature_dim: int

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        image_size: Sequence[int],
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if int(in_channels) < 1:
            raise ConfigError(f"in_channels must be >= 1, got {in_channels}")
        if int(num_classes) < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.image_size = _check_image_size(image_size)
        self.normalize = Normalize(self.in_channels, mean=mean, std=std)

    @abc.abstractmethod
    def _features(self, z: Tensor) -> Tensor:
        """Map standardised images ``[N, C, H, W]`` to features ``[N, feature_dim]``."""

    def embed(self, x: Tensor) -> Tensor:
        """Penultimate representation of images in ``[0, 1]``.

        Shape:
            ``[N, C, H, W]`` -> ``[N, feature_dim]``.

        Raises:
            DataError: ``x`` is not ``[N, C, H, W]`` with this model's ``C, H, W``.
        """
        if x.dim() != 4 or tuple(x.shape[1:]) != (self.in_channels, *self.image_size):
            raise DataError(
                f"{type(self).__name__} expects images [N, {self.in_channels}, "
                f"{self.image_size[0]}, {self.image_size[1]}], got {list(x.shape)}"
            )
        return self._features(self.normalize(x))

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[N, num_classes]`` of images ``[N, C, H, W]`` in ``[0, 1]``."""
        return self.classifier(self.embed(x))

    @torch.no_grad()
    def reset_parameters(self, *, generator: torch.Generator) -> "ImageClassifier":
        """Re-draw every parameter from ``generator`` with PyTorch's default distributions.

        Conv2d/Linear weights and biases ~ ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (what
        ``kaiming_uniform_(a=sqrt(5))`` gives), GroupNorm weight 1 and bias 0. The global RNG
        is not touched, so a loop can reuse one model and re-initialise it each step (as
        DM's "fresh random network per iteration") at the cost of one pass over the weights.

        Args:
            generator: source of randomness (values are drawn on its device, then copied).

        Returns:
            ``self``.
        """
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                bound = 1.0 / math.sqrt(module.weight[0].numel())
                for p in (module.weight, module.bias):
                    if p is not None:
                        draw = torch.empty(p.shape, device=generator.device)
                        p.copy_(draw.uniform_(-bound, bound, generator=generator))
            elif isinstance(module, nn.GroupNorm) and module.affine:
                module.weight.fill_(1.0)
                module.bias.fill_(0.0)
            elif any(True for _ in module.parameters(recurse=False)):
                raise ConfigError(
                    f"reset_parameters does not know how to initialise {type(module).__name__}; "
                    f"add it to ImageClassifier.reset_parameters"
                )
        return self
