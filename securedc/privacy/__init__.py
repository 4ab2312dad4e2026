"""Differential privacy: the Gaussian mechanism, its calibration, secret streams and the accountant."""

from securedc.privacy.accountant import PrivacyAccountant
from securedc.privacy.calibration import PrivacyPlan, calibrate_noise, choose_sample_rate, plan_private_run
from securedc.privacy.mechanism import (
    ExactMechanism,
    GaussianMechanism,
    Mechanism,
    clipped_class_sums,
    noisy_class_means,
    poisson_sample,
)
from securedc.privacy.streams import SecretStreams

__all__ = [
    "PrivacyAccountant",
    "PrivacyPlan",
    "calibrate_noise",
    "choose_sample_rate",
    "plan_private_run",
    "Mechanism",
    "ExactMechanism",
    "GaussianMechanism",
    "SecretStreams",
    "clipped_class_sums",
    "noisy_class_means",
    "poisson_sample",
]
