"""Typed method options: each method declares its options once, as :class:`Option` entries.

A method's ``declared_options`` class attribute is the one source of truth for
its option names, types, defaults, allowed values and one-line docs:
``CamMethod.__init__`` validates what the user gave against it and fills the
defaults (:func:`resolve_options`), ``option_names()`` lists it, and
:func:`describe_options` returns it for documentation (``camscope methods``).

Type rules: an ``int`` option takes integers but not bools; a ``float`` option
takes any real number but bools, finite only, and stores it as ``float``; a
``bool`` option takes only bools; other types are checked with ``isinstance``.
``None`` is accepted when the default is None (or ``nullable=True``).

Example:
    >>> from camscope.options import Option, resolve_options
    >>> declared = (Option("samples", int, 4, "noisy copies", positive=True),
    ...             Option("mode", str, "mask", "where the noise goes", choices=("mask", "input")))
    >>> resolve_options("method 'demo'", declared, {"samples": 8})
    {'samples': 8, 'mode': 'mask'}
    >>> resolve_options("method 'demo'", declared, {"samples": 0})
    Traceback (most recent call last):
    ...
    camscope.errors.CamscopeError: method 'demo': option samples must be an int > 0 (noisy copies), got 0
"""

from __future__ import annotations

import builtins
import difflib
import math
import numbers
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from camscope.errors import CamscopeError

__all__ = ["Option", "resolve_options"]

_TYPE_NAMES: dict[type, str] = {
    Tensor: "Tensor",
    torch.Generator: "torch.Generator",
    Sequence: "sequence",
    nn.Module: "nn.Module",
    os.PathLike: "path",
}


@dataclass(frozen=True)
class Option:
    """One option of a method: its name, type, default, allowed values and a one-line doc.

    Attributes:
        name: the keyword (``method="...", name=value``).
        type: the accepted type, or a tuple of types (see the module's type rules).
        default: the value when the option is not given.
        doc: one line saying what the option does.
        choices: the allowed values, when only some are (compared with ``==``).
        min: the smallest allowed number (inclusive).
        positive: numbers must be > 0.
        nullable: None is allowed; by default when the default is None.
        check: a further check of a given value (structure the type cannot
            express); it raises :class:`CamscopeError` saying what is wrong.

    Example:
        >>> Option("std", float, 0.3, "noise standard deviation", min=0).validate(1, "method 'demo'")
        1.0
    """

    name: str
    type: builtins.type | tuple[builtins.type, ...]
    default: Any
    doc: str
    choices: tuple[Any, ...] = ()
    min: float | None = None
    positive: bool = False
    nullable: bool | None = None
    check: Callable[[Any], object] | None = None

    @property
    def types(self) -> tuple[builtins.type, ...]:
        return self.type if isinstance(self.type, tuple) else (self.type,)

    @property
    def accepts_none(self) -> bool:
        return self.default is None if self.nullable is None else self.nullable

    @property
    def type_name(self) -> str:
        """The accepted types as text, e.g. ``"int"`` or ``"float | Tensor"``."""
        names = [_TYPE_NAMES.get(kind, kind.__name__) for kind in self.types]
        return " | ".join(names)

    @property
    def allowed(self) -> str:
        """What values are allowed, as text (used in errors and ``camscope methods --details``)."""
        if self.choices:
            text = "one of " + ", ".join(repr(choice) for choice in self.choices)
        else:
            kind = f"finite {self.type_name}" if self.type is float else self.type_name
            article = "an" if kind[0] in "aeiou" else "a"
            text = f"{article} {kind}"
            if self.positive:
                text += " > 0"
            elif self.min is not None:
                text += f" >= {self.min:g}"
        return text + (" or None" if self.accepts_none else "")

    def validate(self, value: Any, owner: str) -> Any:
        """``value`` checked against the declaration (numbers normalised), else a :class:`CamscopeError`.

        ``owner`` names who has the option in the message, e.g. ``"method 'sscam'"``.
        """
        if value is None and self.accepts_none:
            return None
        converted = self._typed(value)
        if converted is _INVALID or not self._in_range(converted):
            close = (
                difflib.get_close_matches(value, [str(c) for c in self.choices], n=1) if isinstance(value, str) else []
            )
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise CamscopeError(
                f"{owner}: option {self.name} must be {self.allowed} ({self.doc}), got {_show(value)}{hint}"
            )
        if self.check is not None:
            try:
                self.check(converted)
            except CamscopeError as error:
                raise CamscopeError(f"{owner}: option {self.name}: {error}") from None
        return converted

    def _typed(self, value: Any) -> Any:
        for kind in self.types:
            if kind is bool:
                if isinstance(value, bool):
                    return value
            elif isinstance(value, bool):
                continue
            elif kind is int:
                if isinstance(value, numbers.Integral):
                    return int(value)
            elif kind is float:
                if isinstance(value, numbers.Real) and not isinstance(value, Tensor) and math.isfinite(float(value)):
                    return float(value)
            elif isinstance(value, kind):
                return value
        return _INVALID

    def _in_range(self, value: Any) -> bool:
        if self.choices:
            return not isinstance(value, Tensor) and any(value == choice for choice in self.choices)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if self.positive and not value > 0:
                return False
            if self.min is not None and not value >= self.min:
                return False
        return True


_INVALID = object()


def _show(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {list(value.shape)}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def resolve_options(
    owner: str, declared: Iterable[Option], given: Mapping[str, Any], extra: Sequence[str] = ()
) -> dict[str, Any]:
    """The options of one method: ``given`` validated against ``declared``, defaults filled in.

    Names in ``extra`` are accepted as they are (methods that list names
    without declaring them). Unknown names raise a :class:`CamscopeError` that
    lists the known ones.
    """
    declarations = {option.name: option for option in declared}
    known = [*declarations, *(name for name in extra if name not in declarations)]
    unknown = sorted(set(given) - set(known))
    if unknown:
        close = difflib.get_close_matches(unknown[0], known, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise CamscopeError(
            f"{owner} has no option {', '.join(unknown)}{hint}; its options are: {', '.join(known) or 'none'}"
        )
    options = {name: option.default for name, option in declarations.items()}
    for name, value in given.items():
        options[name] = declarations[name].validate(value, owner) if name in declarations else value
    return options
