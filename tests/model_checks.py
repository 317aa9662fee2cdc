"""Test helpers about models: count their calls, snapshot their module structure and hooks."""

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


def module_state(model: torch.nn.Module) -> list:
    """Every submodule's name, identity, type, training flag, hook counts and instance attributes.

    Equal before and after an explainer call when the call left no module swapped, no hook
    registered, no ``forward`` patched and no attribute added.
    """
    return [
        (
            name,
            id(module),
            type(module).__name__,
            module.training,
            len(module._forward_hooks),
            len(module._forward_pre_hooks),
            len(module._backward_hooks),
            len(module._backward_pre_hooks),
            "forward" in module.__dict__,
            tuple(module.__dict__),
        )
        for name, module in model.named_modules()
    ]
