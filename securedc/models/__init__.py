"""Image classifiers for condensation, evaluation and attacks (all Opacus-compatible).

Every model is an :class:`ImageClassifier`: images ``[N, C, H, W]`` in ``[0, 1]`` in,
normalisation inside, ``embed(x) -> [N, feature_dim]``, ``forward(x) == classifier(embed(x))``.

Catalogue (importing each file runs its ``@register_model``):

- ``convnet`` — DC/DSA/DM ConvNet-3 (width 128, instance norm, avg-pool); the default.
- ``mlp`` — three-layer MLP on pixels.
- ``resnet`` — small GroupNorm ResNet.
"""

from securedc.models.base import ImageClassifier
from securedc.models.normalize import NORMS, Normalize, make_norm
from securedc.models.registry import create_model, list_models, register_model, seeded_model

from securedc.models.convnet import ConvNet  # noqa: E402  (import registers the model)
from securedc.models.mlp import MLP  # noqa: E402
from securedc.models.resnet import ResNet  # noqa: E402

__all__ = [
    "ImageClassifier",
    "Normalize",
    "make_norm",
    "NORMS",
    "create_model",
    "list_models",
    "register_model",
    "seeded_model",
    "ConvNet",
    "MLP",
    "ResNet",
]
