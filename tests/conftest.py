"""Shared test settings: one thread (the CI machine has 2 cores), headless plotting."""

import os

os.environ.setdefault("MPLBACKEND", "agg")

import torch  # noqa: E402

torch.set_num_threads(1)
