"""Name -> factory registries (timm's ``register_model`` / ``create_model`` idea, in a few lines).

Models and data sets are looked up by name, so the CLI and grid files never grow if/elif ladders.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Generic, TypeVar

from diffeoprobe.errors import DiffeoProbeError

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from lower-case names to factories returning ``T``.

    >>> shapes = Registry("shape")
    >>> @shapes.register("square")
    ... def square(side: int = 2) -> int:
    ...     return side * side
    >>> shapes.build("square", side=3)
    9
    >>> shapes.available()
    ['square']
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator adding ``factory`` under ``name`` (lower case, unique)."""
        key = name.lower()

        def add(factory: Callable[..., T]) -> Callable[..., T]:
            if key in self._factories:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._factories[key] = factory
            return factory

        return add

    def available(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._factories)

    def get(self, name: str) -> Callable[..., T]:
        """The factory for ``name``; an unknown name lists the available ones and the closest."""
        key = str(name).lower()
        if key not in self._factories:
            close = difflib.get_close_matches(key, self._factories, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise DiffeoProbeError(
                f"unknown {self.kind} {name!r}{hint}; available: {', '.join(self.available())}"
            )
        return self._factories[key]

    def build(self, name: str, /, **kwargs: object) -> T:
        """Call the factory registered under ``name`` with ``kwargs``."""
        return self.get(name)(**kwargs)
