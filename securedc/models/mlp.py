"""Three-layer MLP on flattened standardised pixels (DC's ``MLP`` baseline architecture).

References:
    Zhao, Mopuri, Bilen. Dataset Condensation with Gradient Matching. ICLR 2021 (arXiv:2006.05929).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from securedc.errors import ConfigError
from securedc.models.base import ImageClassifier
from securedc.models.registry import register_model

__all__ = ["MLP"]


@register_model("mlp")
class MLP(ImageClassifier):
    """``Linear(C*H*W, hidden) -> ReLU -> Linear(hidden, hidden) -> ReLU -> Linear(hidden, classes)``.

    Args:
        in_channels: image channels.
        num_classes: number of logits.
        image_size: ``(H, W)``.
        mean: public per-channel normalisation mean (default 0.5).
        std: public per-channel normalisation std (default 0.5).
        hidden: hidden width (default 256); ``feature_dim == hidden``.

    Raises:
        ConfigError: ``hidden < 1``.

    Example:
        >>> MLP(in_channels=1, num_classes=10, image_size=(8, 8)).feature_dim
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
        hidden: int = 256,
    ) -> None:
        super().__init__(in_channels=in_channels, num_classes=num_classes, image_size=image_size, mean=mean, std=std)
        if hidden < 1:
            raise ConfigError(f"mlp hidden width must be >= 1, got {hidden}")
        n_in = self.in_channels * self.image_size[0] * self.image_size[1]
        self.features = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.feature_dim = hidden
        self.classifier = nn.Linear(hidden, self.num_classes)

    def _features(self, z: Tensor) -> Tensor:
        return self.features(z.flatten(1))
