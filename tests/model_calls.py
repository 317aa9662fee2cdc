"""Test helper: record the batch size of every call of a model."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def counting_calls(model: torch.nn.Module) -> Iterator[list[int]]:
    """Yield a list that receives the batch size of every forward call of ``model`` in the block."""
    calls: list[int] = []
    handle = model.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    try:
        yield calls
    finally:
        handle.remove()
