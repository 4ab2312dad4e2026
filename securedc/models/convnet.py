"""ConvNet-D of Dataset Condensation (DC/DSA/DM): the standard condensation backbone.

Each of ``depth`` blocks is ``conv3x3 -> norm -> ReLU -> AvgPool2d(2)`` (computed as a depthwise conv, see
:mod:`securedc.models.pool`) with ``width`` maps;
the flattened output is the embedding and a linear layer gives the logits. 28x28 inputs are
padded to 32x32 by the first convolution (padding 3), as DC does for MNIST-sized images, so
ConvNet-3 gives ``128 * 4 * 4 = 2048`` features on 28x28 and 32x32, and 128 on 8x8 digits.

References:
    Zhao, Mopuri, Bilen. Dataset Condensation with Gradient Matching. ICLR 2021 (arXiv:2006.05929).
    Zhao, Bilen. Dataset Condensation with Distribution Matching. WACV 2023 (arXiv:2110.04181).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from securedc.errors import ConfigError
from securedc.models.base import ImageClassifier
from securedc.models.normalize import make_norm
from securedc.models.pool import AvgPool2x2
from securedc.models.registry import register_model

__all__ = ["ConvNet"]


@register_model("convnet")
class ConvNet(ImageClassifier):
    """DC/DM ConvNet (default ConvNet-3: width 128, depth 3, instance norm, average pooling).

    Args:
        in_channels: image channels.
        num_classes: number of logits.
        image_size: ``(H, W)``; each block halves it (28x28 is first padded to 32x32).
        mean: public per-channel normalisation mean (default 0.5).
        std: public per-channel normalisation std (default 0.5).
        width: feature maps per block (DC ``net_width``), default 128.
        depth: number of blocks (DC ``net_depth``), default 3.
        norm: ``"instance"`` (DC default, ``GroupNorm(width, width)``), ``"group"``
            (``GroupNorm(4, width)``) or ``"none"``.

    Raises:
        ConfigError: ``depth``/``width`` < 1, unknown norm, or an image too small for ``depth``.

    Shape:
        ``[N, C, H, W]`` in ``[0, 1]`` -> logits ``[N, num_classes]``;
        ``embed``: ``[N, width * H' * W']`` with ``H' = H_eff // 2**depth``.

    Example:
        >>> net = ConvNet(in_channels=1, num_classes=10, image_size=(28, 28))
        >>> net.feature_dim
        2048
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        image_size: Sequence[int],
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        width: int = 128,
        depth: int = 3,
        norm: str = "instance",
    ) -> None:
        super().__init__(in_channels=in_channels, num_classes=num_classes, image_size=image_size, mean=mean, std=std)
        if depth < 1 or width < 1:
            raise ConfigError(f"convnet needs depth >= 1 and width >= 1, got depth={depth}, width={width}")
        pad_first = 3 if self.image_size == (28, 28) else 1  # DC: 28x28 -> 32x32
        h, w = self.image_size[0] + 2 * (pad_first - 1), self.image_size[1] + 2 * (pad_first - 1)
        layers: list[nn.Module] = []
        channels = self.in_channels
        for d in range(depth):
            layers += [
                nn.Conv2d(channels, width, kernel_size=3, padding=pad_first if d == 0 else 1),
                make_norm(norm, width),
                nn.ReLU(),
                AvgPool2x2(),
            ]
            channels, h, w = width, h // 2, w // 2
            if h < 1 or w < 1:
                raise ConfigError(
                    f"convnet depth={depth} is too deep for image_size={self.image_size}: "
                    f"block {d + 1} would pool to zero size; use depth <= {d}"
                )
        self.features = nn.Sequential(*layers)
        self.feature_dim = width * h * w
        self.classifier = nn.Linear(self.feature_dim, self.num_classes)

    def _features(self, z: Tensor) -> Tensor:
        return self.features(z).flatten(1)
