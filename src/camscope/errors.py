"""Errors raised for user mistakes, and hints for their messages."""

import difflib

__all__ = ["CamscopeError", "suggest"]


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
