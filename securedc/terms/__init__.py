"""Objective terms (one file each); importing registers them in vector order."""

from securedc.terms.base import StepContext, Term, build_terms, create_term, list_terms, register_term
from securedc.terms.distribution import DistributionTerm  # noqa: F401  (registers)

__all__ = [
    "StepContext",
    "Term",
    "build_terms",
    "create_term",
    "list_terms",
    "register_term",
    "DistributionTerm",
]
