"""Name -> factory registries (timm's ``register_model`` / ``create_model`` idea, in a few lines).

Models and data sets are looked up by name, so the CLI and grid files never grow if/elif ladders.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Generic, TypeVar

from diffeoprobe.errors import DiffeoProbeError

__all__ = ["Registry"]

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
    >>> shapes.check_options("square", {"sides": 3})
    Traceback (most recent call last):
    ...
    diffeoprobe.errors.DiffeoProbeError: shape 'square' does not take 'sides'; did you mean 'side'? it takes: side
    """

    def __init__(self, kind: str, *, passed: Collection[str] = ()) -> None:
        """``kind`` names the things in messages; ``passed``: arguments callers give every factory
        themselves (not user options).
        """
        self.kind = kind
        self.passed = frozenset(passed)
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

    def options(self, name: str) -> list[str]:
        """The options the factory registered under ``name`` takes (its keyword arguments less
        those callers pass themselves), in signature order.
        """
        parameters = inspect.signature(self.get(name)).parameters
        return [p for p in parameters if p not in self.passed]

    def check_options(
        self,
        name: str,
        options: Iterable[str],
        *,
        where: str = "",
        extra: Collection[str] = (),
        note: str = "",
    ) -> None:
        """Refuse an option the factory does not take: the message names the closest accepted one
        and lists them all. ``extra``: options the caller handles itself (accepted too);
        ``where``: the setting's place (``model_options``), prefixed to the message. Given a
        mapping, its values for options annotated ``bool`` must be ``True`` or ``False``.
        """
        accepted = [*self.options(name), *extra]
        unknown = [o for o in options if o not in accepted]
        if not unknown:
            if isinstance(options, Mapping):
                self.check_values(name, options, where=where)
            return
        close = difflib.get_close_matches(str(unknown[0]), accepted, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        prefix = f"{where}.{unknown[0]}: " if where else ""
        names = ", ".join(repr(o) for o in unknown)
        raise DiffeoProbeError(
            f"{prefix}{self.kind} {name!r} does not take {names}{note}; "
            f"{hint}it takes{' no options' if not accepted else ': ' + ', '.join(accepted)}"
        )

    def check_values(self, name: str, options: Mapping[str, object], *, where: str = "") -> None:
        """Refuse a value that is not ``True``/``False`` for an option annotated ``bool``: a
        string such as ``"maybe"`` would otherwise count as true. Other options are left to the
        factory (and unknown names to :meth:`check_options`).
        """
        parameters = inspect.signature(self.get(name)).parameters
        for key, value in options.items():
            parameter = parameters.get(key)
            if parameter is None or parameter.annotation not in (bool, "bool"):
                continue
            if not isinstance(value, bool):
                prefix = f"{where}.{key}" if where else key
                raise DiffeoProbeError(
                    f"{prefix}: {self.kind} {name!r} takes true or false, got {value!r}"
                )
