"""The metric registry: metrics register themselves by name, as methods do.

A metric is a function returning a :class:`~camscope.metrics.common.MetricResult`, registered
with :func:`register_metric` under a name and a *kind*, which says what
``camscope.evaluate`` (and ``camscope evaluate --metric NAME``) passes to it for each batch:

* ``"model"``: ``fn(model, inputs, explanation, **options)`` (perturbation metrics);
* ``"maps"``: ``fn(explanation, **options)`` (the maps alone);
* ``"regions"``: ``fn(explanation, masks=masks, **options)`` (ground-truth boxes or masks,
  ``[B, H, W]`` bool);
* ``"parts"``: ``fn(explanation, parts=points, differing=differing, **options)`` (part points);
* ``"explainer"``: ``fn(model, inputs, explanation, method=..., layer=..., options=..., **options)``
  (metrics that explain again: the sanity check, coherency, ARCC).

``summarize``, when given, turns the per-sample results joined over the dataset into
dataset-level numbers (IFA's consistency: a correlation over the images).

Example:
    >>> import torch
    >>> from camscope.metrics import MetricResult, register_metric, unregister_metric, get_metric
    >>> @register_metric("largest_value", kind="maps")
    ... def largest_value(maps, **options):
    ...     values = maps.maps if hasattr(maps, "maps") else maps
    ...     return MetricResult(name="largest_value", values={"peak": values.flatten(1).amax(1)}, headline="peak")
    >>> get_metric("Largest-Value").kind
    'maps'
    >>> unregister_metric("largest_value")
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from camscope.errors import CamscopeError

__all__ = [
    "METRIC_KINDS",
    "MetricSpec",
    "available_metrics",
    "canonical_metric_name",
    "get_metric",
    "register_metric",
    "unregister_metric",
]

METRIC_KINDS = ("model", "maps", "regions", "parts", "explainer")
"""What the runner passes to each kind of metric (see the module docstring)."""

#: Per kind, how many positional arguments the runner passes and the keywords it fills in.
_RUNNER_ARGUMENTS: dict[str, tuple[int, tuple[str, ...]]] = {
    "model": (3, ()),
    "maps": (1, ()),
    "regions": (1, ("masks",)),
    "parts": (1, ("parts", "differing")),
    "explainer": (3, ("method", "layer", "options")),
}

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class MetricSpec:
    """A registered metric.

    Attributes:
        name: the registry name (``--metric NAME``).
        function: computes the metric on one batch.
        kind: what the runner passes to it (:data:`METRIC_KINDS`).
        aliases: other accepted names.
        summarize: optional ``summarize(joined_result) -> dict`` of dataset-level numbers.
    """

    name: str
    function: Callable[..., Any]
    kind: str
    aliases: tuple[str, ...] = ()
    summarize: Callable[[Any], dict[str, Any]] | None = None

    @property
    def description(self) -> str:
        """The first line of the function's docstring."""
        return (self.function.__doc__ or "").strip().split("\n")[0]

    @property
    def option_names(self) -> tuple[str, ...] | None:
        """The options the function takes besides what the runner passes for its kind (None: any, ``**options``).

        Example:
            >>> from camscope.metrics import get_metric
            >>> get_metric("sparseness").option_names
            ('eps',)
        """
        parameters = list(inspect.signature(self.function).parameters.values())
        if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters):
            return None
        named = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        given = _RUNNER_ARGUMENTS[self.kind]
        return tuple(name for name in named[given[0] :] if name not in given[1])


_REGISTRY: dict[str, MetricSpec] = {}
_LOCK = threading.Lock()


def _key(name: str) -> str:
    """A metric name compared without case, and with ``-`` and spaces read as ``_``."""
    return str(name).strip().lower().replace("-", "_").replace(" ", "_")


def _lookup() -> dict[str, str]:
    """Every accepted spelling (names and aliases, as keys) -> the registered name."""
    table = {_key(alias): spec.name for spec in _REGISTRY.values() for alias in spec.aliases}
    table.update({_key(name): name for name in _REGISTRY})
    return table


def register_metric(
    name: str,
    *,
    kind: str,
    aliases: Sequence[str] = (),
    summarize: Callable[[Any], dict[str, Any]] | None = None,
    replace: bool = False,
) -> Callable[[F], F]:
    """Decorator that makes a metric function available to ``camscope.evaluate`` by ``name``.

    Args:
        name: the registry name (lower case, ``_`` between words).
        kind: what the runner passes to the function, one of :data:`METRIC_KINDS`.
        aliases: other names users may give (``rd`` for ``relative_drop``).
        summarize: dataset-level numbers from the joined per-sample result (optional).
        replace: allow replacing a registered metric of the same name (otherwise an error,
            so that a plug-in cannot silently shadow a built-in metric).

    Returns:
        The decorator; it returns the function unchanged.
    """
    if kind not in METRIC_KINDS:
        raise CamscopeError(f"metric kind must be one of {', '.join(METRIC_KINDS)}, got {kind!r}")
    if not isinstance(name, str) or not name.strip() or _key(name) != name:
        raise CamscopeError(f"a metric name is lower case with '_' between words, got {name!r}")

    def decorator(function: F) -> F:
        if not callable(function):
            raise CamscopeError(f"register_metric({name!r}) decorates a function, got {type(function).__name__}")
        spec = MetricSpec(name, function, kind, tuple(_key(a) for a in aliases), summarize)
        with _LOCK:
            taken = _lookup()
            clashes = [n for n in (name, *spec.aliases) if n in taken and taken[n] != name]
            if (name in _REGISTRY and not replace) or clashes:
                raise CamscopeError(
                    f"metric {name!r} is already registered"
                    + (f" (the names {clashes} belong to other metrics)" if clashes else "")
                    + ": choose another name, or pass replace=True to replace it"
                )
            _REGISTRY[name] = spec
        return function

    return decorator


def unregister_metric(name: str) -> None:
    """Remove a registered metric (by its name or an alias)."""
    with _LOCK:
        _REGISTRY.pop(_resolve(name), None)


def _resolve(name: str) -> str:
    key = _key(name)
    found = _lookup().get(key)
    if found is None:
        known = ", ".join(sorted(_lookup()))
        raise CamscopeError(f"unknown metric {name!r}; known metrics: {known}")
    return found


def canonical_metric_name(name: str) -> str:
    """The registered name of a metric, whatever its spelling or alias.

    Example:
        >>> canonical_metric_name("RD"), canonical_metric_name("Energy-Pointing")
        ('relative_drop', 'energy_pointing_game')
    """
    return _resolve(name)


def get_metric(name: str) -> MetricSpec:
    """The registered metric of a name or alias (case, ``-`` and spaces forgiven)."""
    with _LOCK:
        return _REGISTRY[_resolve(name)]


def available_metrics() -> dict[str, MetricSpec]:
    """Registered metrics by name."""
    with _LOCK:
        return dict(sorted(_REGISTRY.items()))
