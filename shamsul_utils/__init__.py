"""Helper library of the SHAMSUL reproducible study (Alam et al. 2023, arXiv 2307.08003)."""

import os as _os
from pathlib import Path as _Path

__version__ = "0.1.0"

# The chain (shamsul_utils.chain) names the package it runs in this variable; a notebook kernel that
# would import another copy (an editable install of another checkout, a stale site-packages copy)
# stops at its first import with one line instead of silently running other code.
PACKAGE_VARIABLE = "SHAMSUL_CHAIN_PACKAGE"
_expected = _os.environ.get(PACKAGE_VARIABLE)
if _expected and _Path(_expected).resolve() != _Path(__file__).resolve().parent:
    raise ImportError(f"this kernel imports shamsul_utils from {_Path(__file__).parent}, but the chain runs the one "
                      f"in {_expected}; install this checkout (make setup) or run its own chain")
