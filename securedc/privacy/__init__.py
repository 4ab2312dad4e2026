"""Differential privacy: the per-step Gaussian mechanism and its accountant."""

from securedc.privacy.accountant import PrivacyAccountant, calibrate_noise
from securedc.privacy.mechanism import (
    ExactMechanism,
    GaussianMechanism,
    Mechanism,
    noisy_class_means,
    poisson_sample,
)

__all__ = [
    "PrivacyAccountant",
    "calibrate_noise",
    "Mechanism",
    "ExactMechanism",
    "GaussianMechanism",
    "noisy_class_means",
    "poisson_sample",
]
