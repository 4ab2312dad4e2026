"""Objective terms (one file each); importing registers them in vector order."""

from securedc.terms.base import StepContext, Term, build_terms, create_term, list_terms, register_term
from securedc.terms.distribution import DistributionTerm  # noqa: F401  (registers)
from securedc.terms.gradient import GradientTerm  # noqa: F401  (registers)
from securedc.terms.adversarial import AdversarialTerm  # noqa: F401  (registers; keep after distribution and gradient)

__all__ = [
    "StepContext",
    "Term",
    "build_terms",
    "create_term",
    "list_terms",
    "register_term",
    "DistributionTerm",
    "GradientTerm",
    "AdversarialTerm",
]
