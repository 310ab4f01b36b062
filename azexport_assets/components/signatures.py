"""One signature per asset function, however many assets share its code.

Dagster reads an asset function's signature about sixteen times while building the asset
(its context, config and resource parameters, their type hints), and `inspect.signature`
works it out from scratch each time. Every activation's delta and export asset is a closure
of the same function, so in a project of a hundred activations the same few signatures were
computed thousands of times: about a tenth of building the definitions.

Dagster honours an explicitly set `__signature__` (and then takes the type hints from it), so
each function gets the signature of its code, computed once per process with its annotations
already evaluated.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from types import CodeType
from typing import TypeVar

F = TypeVar("F", bound=Callable)

_by_code: dict[CodeType, inspect.Signature | None] = {}


def signature_once(fn: F) -> F:
    """`fn` with the signature of its code attached: put it under the asset decorator."""
    code = fn.__code__
    if code not in _by_code:
        try:
            _by_code[code] = inspect.signature(fn, eval_str=True)
        except NameError:  # an annotation only a type checker sees: let Dagster read it
            _by_code[code] = None
    signature = _by_code[code]
    if signature is not None:
        fn.__signature__ = signature  # type: ignore[attr-defined]
    return fn
