"""Errors raised for user mistakes, and hints for their messages."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["CamscopeError", "MissingExtraError", "needs_extra", "suggest"]


class CamscopeError(ValueError):
    """A user mistake, with a message that says what was wrong and how to fix it.

    It is a ``ValueError``, so code that catches bad values catches it too; the
    command line prints its message on one line and exits with status 2.

    Example:
        >>> import camscope, torch
        >>> from torchvision.models import resnet18
        >>> try:
        ...     camscope.explain(resnet18(num_classes=10), torch.randn(1, 3, 64, 64), layer="layer9")
        ... except camscope.CamscopeError as error:
        ...     print(error)
        unknown layer 'layer9'; did you mean layer4, layer3, layer2, layer1, layer4.1? (`camscope layers MODEL` lists the layers)
    """


class MissingExtraError(CamscopeError, ImportError):
    """An optional part of camscope whose extra is not installed (see :func:`needs_extra`).

    It is also an ``ImportError``, so code that falls back when an import fails keeps working.
    """


@contextmanager
def needs_extra(extra: str, purpose: str) -> Iterator[None]:
    """Import an optional dependency inside; if a module is missing, say which extra to install, on one line.

    ``pip install camscope`` installs the core (torch, torchvision, numpy, Pillow,
    safetensors): enough to explain a model. The rest comes with extras: ``cli``
    (typer, rich), ``plots`` (matplotlib), ``app`` (the explorer), ``reproduce``
    (scipy, scikit-learn, scikit-image), ``clip`` (transformers, open_clip),
    ``photo`` (timm and the default photo model), and ``all``.

    Args:
        extra: the extra that provides the imports (``"plots"``).
        purpose: what needs it, for the message (``"figures"``).

    Raises:
        MissingExtraError: ``camscope[EXTRA] is needed for PURPOSE: pip install 'camscope[EXTRA]'``.

    Example:
        >>> with needs_extra("plots", "figures"):
        ...     import a_module_that_is_not_installed
        Traceback (most recent call last):
        ...
        camscope.errors.MissingExtraError: camscope[plots] is needed for figures: pip install 'camscope[plots]' (a_module_that_is_not_installed is not installed)
    """
    try:
        yield
    except ModuleNotFoundError as error:
        missing = f" ({error.name} is not installed)" if error.name else ""
        raise MissingExtraError(
            f"camscope[{extra}] is needed for {purpose}: pip install 'camscope[{extra}]'{missing}"
        ) from error


def suggest(word: str, candidates: list[str], n: int = 5) -> str:
    """Format close matches of ``word`` among ``candidates`` as a hint sentence for an error message.

    Args:
        word: What the user typed.
        candidates: Valid values.
        n: Maximum number of suggestions.

    Returns:
        ``" Did you mean: a, b?"`` or an empty string.

    Example:
        >>> suggest("chelsae", ["chelsea", "coffee"])
        ' Did you mean: chelsea?'
    """
    close = difflib.get_close_matches(word, candidates, n=n, cutoff=0.6)
    return f" Did you mean: {', '.join(close)}?" if close else ""
