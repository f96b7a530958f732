"""`memo`: `functools.cached_property` without its lock, for the gene's hot path.

Python 3.11's cached_property takes an RLock on every first access, and a new gene
computes four cached values (issue 15: part of the CPU per signed gene). The value is
stored in the instance's `__dict__` under the property's name, as cached_property does,
so code that presets or pops it there (`Gene.from_stored`, `Gene.signed`) is unchanged.
Two threads computing one value at once each compute equal bytes; one of them is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")


class memo(Generic[T]):
    """A non-data descriptor: after the first access the instance's `__dict__` answers."""

    def __init__(self, func: Callable[[Any], T]) -> None:
        self.func, self.name = func, func.__name__
        self.__doc__ = func.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> memo[T]: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> T: ...
    def __get__(self, obj: object, owner: type | None = None) -> T | memo[T]:
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.func(obj)
        return value
