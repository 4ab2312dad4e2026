"""A small pre-pooling ResNet with GroupNorm (Opacus-compatible: no BatchNorm).

Stem ``conv3x3 -> norm -> ReLU`` with ``width`` maps, then ``stages`` basic residual blocks
with widths ``width * 2**i`` (stride 2 from the second block), global average pooling and a
linear classifier. Works on any input size >= 1 pixel (8x8 digits, 28x28, 32x32).

References:
    He, Zhang, Ren, Sun. Deep Residual Learning for Image Recognition. CVPR 2016 (arXiv:1512.03385).
    Wu, He. Group Normalization. ECCV 2018 (arXiv:1803.08494).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from torch.nn import functional as F

from securedc.errors import ConfigError
from securedc.models.base import ImageClassifier
from securedc.models.normalize import make_norm
from securedc.models.registry import register_model

__all__ = ["ResNet", "BasicBlock"]


class BasicBlock(nn.Module):
    """``conv3x3 -> norm -> ReLU -> conv3x3 -> norm`` plus a (projected) shortcut, then ReLU."""

    def __init__(self, c_in: int, c_out: int, *, stride: int, norm: str, groups: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.norm1 = make_norm(norm, c_out, groups=groups)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.norm2 = make_norm(norm, c_out, groups=groups)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), make_norm(norm, c_out, groups=groups)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


@register_model("resnet")
class ResNet(ImageClassifier):
    """Small GroupNorm ResNet (default widths 64-128-256, one basic block per stage).

    Args:
        in_channels: image channels.
        num_classes: number of logits.
        image_size: ``(H, W)``.
        mean: public per-channel normalisation mean (default 0.5).
        std: public per-channel normalisation std (default 0.5).
        width: stem width (default 64).
        stages: number of basic blocks (default 3); ``feature_dim = width * 2**(stages-1)``.
        norm: ``"group"`` (default), ``"instance"`` or ``"none"``.
        groups: groups of ``"group"`` norm (default 32, Wu & He); must divide ``width``.

    Raises:
        ConfigError: invalid width/stages/norm/groups.

    Example:
        >>> ResNet(in_channels=3, num_classes=10, image_size=(32, 32)).feature_dim
        256
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        image_size: Sequence[int],
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        width: int = 64,
        stages: int = 3,
        norm: str = "group",
        groups: int = 32,
    ) -> None:
        super().__init__(in_channels=in_channels, num_classes=num_classes, image_size=image_size, mean=mean, std=std)
        if width < 1 or stages < 1:
            raise ConfigError(f"resnet needs width >= 1 and stages >= 1, got width={width}, stages={stages}")
        self.stem = nn.Sequential(
            nn.Conv2d(self.in_channels, width, 3, padding=1, bias=False),
            make_norm(norm, width, groups=groups),
            nn.ReLU(),
        )
        blocks, c_in = [], width
        for i in range(stages):
            c_out = width * 2**i
            blocks.append(BasicBlock(c_in, c_out, stride=1 if i == 0 else 2, norm=norm, groups=groups))
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = c_in
        self.classifier = nn.Linear(c_in, self.num_classes)

    def _features(self, z: Tensor) -> Tensor:
        return self.pool(self.blocks(self.stem(z))).flatten(1)
