"""Helper library of the SHAMSUL reproducible study (Alam et al. 2023, arXiv 2307.08003)."""

__version__ = "0.1.0"
