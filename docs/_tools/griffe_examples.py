"""A griffe extension: camscope's docstrings title their doctests ``Example:``; griffe reads them as examples.

griffe's Google parser knows ``Examples:`` as a section and turns any other ``Word:`` into an admonition,
whose ``>>>`` lines would then be rendered as prose. Reading ``Example:`` as ``Examples:`` renders them as
code, like the doctests they are.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:[ \t]*$", flags=re.M)


class ExampleSections(griffe.Extension):
    """Rename ``Example:`` section titles to ``Examples:`` in every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
