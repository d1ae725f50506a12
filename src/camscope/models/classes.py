"""ImageNet-1k class names and resolving a class given by name or index.

Example:
    >>> from camscope.models.classes import class_index, imagenet_classes
    >>> imagenet_classes()[281], class_index("tabby"), class_index("7")
    ('tabby', 281, 7)
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from importlib import resources

from camscope.errors import CamscopeError

__all__ = ["class_index", "imagenet_classes"]


@functools.lru_cache(maxsize=1)
def _imagenet_classes_cached() -> tuple[str, ...]:
    """Read the bundled ImageNet-1k class names once.

    Returns:
        The 1000 names in index order.
    """
    text = resources.files("camscope").joinpath("assets/imagenet_classes.json").read_text(encoding="utf-8")
    names = json.loads(text)
    if not isinstance(names, list) or len(names) != 1000 or not all(isinstance(n, str) for n in names):
        raise RuntimeError("camscope/assets/imagenet_classes.json is corrupt: expected a list of 1000 strings")
    return tuple(names)


def imagenet_classes() -> list[str]:
    """Return the ImageNet-1k class names in index order (as used by torchvision).

    Returns:
        A new list of 1000 names, e.g. ``imagenet_classes()[281] == "tabby"``.
    """
    return list(_imagenet_classes_cached())


def _format_classes(indices: list[int], names: tuple[str, ...], limit: int = 10) -> str:
    """Format ``index 'name'`` pairs for error messages.

    Args:
        indices: Class indices.
        names: All class names.
        limit: How many to show before eliding.

    Returns:
        A comma-separated list.
    """
    shown = ", ".join(f"{i} {names[i]!r}" for i in indices[:limit])
    return shown + (f", ... ({len(indices) - limit} more)" if len(indices) > limit else "")


def class_index(name_or_id: str | int, num_classes: int = 1000) -> int:
    """Resolve a class given by ImageNet name or by index.

    Names are matched case-insensitively: first an exact match, then a unique
    substring match (``"persian"`` -> ``"Persian cat"``).

    Args:
        name_or_id: An integer index, a string holding one (``"281"``), or an ImageNet
            class name (``"tabby"``).
        num_classes: Number of outputs of the model; indices must lie in
            ``[0, num_classes)``. Names need an ImageNet-1k model (1000 classes).

    Returns:
        The class index.

    Raises:
        CamscopeError: If the index is out of range, or the name is unknown or
            ambiguous (the message lists candidates).
    """
    if isinstance(name_or_id, bool):
        raise CamscopeError(f"Class must be a name or an integer index, got {name_or_id!r}.")
    index: int | None = None
    if isinstance(name_or_id, str):
        query = name_or_id.strip()
        if re.fullmatch(r"[+-]?\d+", query):
            index = int(query)
    else:
        try:
            index = int(name_or_id.__index__())  # ints and numpy integers
        except (AttributeError, TypeError):
            raise CamscopeError(f"Class must be a name or an integer index, got {name_or_id!r}.") from None
    if index is not None:
        if not 0 <= index < num_classes:
            raise CamscopeError(
                f"Class index {index} is out of range: the model has {num_classes} classes (0..{num_classes - 1})."
            )
        return index

    if not query:
        raise CamscopeError("Class name is empty: give an ImageNet class name (e.g. 'tabby') or an index.")
    if num_classes != 1000:
        raise CamscopeError(
            f"Class names are only known for ImageNet-1k models (1000 classes), but this model has "
            f"{num_classes} outputs: give the class as an integer index 0..{num_classes - 1}."
        )
    names = _imagenet_classes_cached()
    lowered = [n.casefold() for n in names]
    needle = query.casefold()
    exact = [i for i, n in enumerate(lowered) if n == needle]
    if len(exact) == 1:
        return exact[0]
    if len(exact) > 1:
        raise CamscopeError(
            f"Class name {query!r} is ambiguous: {_format_classes(exact, names)}. Give the index instead."
        )
    partial = [i for i, n in enumerate(lowered) if needle in n]
    if len(partial) == 1:
        return partial[0]
    if len(partial) > 1:
        raise CamscopeError(
            f"Class name {query!r} is ambiguous; it matches {len(partial)} ImageNet classes: "
            f"{_format_classes(partial, names)}. Use a longer name or give the index."
        )
    close = difflib.get_close_matches(needle, lowered, n=5, cutoff=0.6)
    hint = (
        f" Did you mean: {_format_classes([lowered.index(c) for c in close], names)}?"
        if close
        else " See camscope.models.imagenet_classes() for all names."
    )
    raise CamscopeError(f"Unknown ImageNet class {query!r}.{hint}")
