"""Errors raised for user mistakes."""

__all__ = ["CamscopeError"]


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
