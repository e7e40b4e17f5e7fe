"""Export-time method swaps: a module computes the same thing another way while a converter traces it."""

from __future__ import annotations

import contextlib
import types
from typing import Callable, Iterable, Iterator

from torch import nn


def distinct_submodules(modules: Iterable[nn.Module], matches: Callable[[nn.Module], bool]) -> list[nn.Module]:
    """Every module below `modules` that `matches`, once each."""
    # by id: the targets of a multi-resolution export share one module
    return list({id(m): m for module in modules for m in module.modules() if matches(m)}.values())


@contextlib.contextmanager
def method_swapped(modules: Iterable[nn.Module], matches: Callable[[nn.Module], bool], name: str,
                   method: Callable) -> Iterator[int]:
    """Every distinct module below `modules` that `matches` runs `method` as its `name` until exit
    (then its class's again). Yields how many were switched."""
    patched = distinct_submodules(modules, matches)
    for module in patched:
        setattr(module, name, types.MethodType(method, module))
    try:
        yield len(patched)
    finally:
        for module in patched:
            delattr(module, name)
