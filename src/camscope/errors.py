"""Errors raised for user mistakes."""

__all__ = ["CamscopeError"]


class CamscopeError(ValueError):
    """A user mistake, with a message that says what was wrong and how to fix it."""
