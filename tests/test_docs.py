"""The documentation's checked claims: every message quoted in the troubleshooting page is camscope's own.

The page is the fixture: its Python blocks run in order in one namespace; a block followed by a ``text`` block
that starts with ``CamscopeError:`` must raise exactly that error, one followed by ``UserWarning:`` must warn
exactly that (the block turns warnings into errors), and the other blocks must run without error.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from camscope.errors import CamscopeError

DOCS = Path(__file__).resolve().parents[1] / "docs"
_BLOCK = re.compile(r"```(python|text)\n(.*?)```", flags=re.S)


def _examples(page: Path) -> list[tuple[str, str | None]]:
    """``(code, expected)`` for every Python block, ``expected`` the quoted text block that follows it, if any."""
    blocks = _BLOCK.findall(page.read_text())
    examples: list[tuple[str, str | None]] = []
    for (language, body), following in zip(blocks, [*blocks[1:], ("", "")]):
        if language == "python":
            expected = following[1].strip() if following[0] == "text" else None
            examples.append((body, expected))
    return examples


def test_troubleshooting_quotes_camscopes_own_messages() -> None:
    examples = _examples(DOCS / "troubleshooting.md")
    quoted = [expected for _, expected in examples if expected]
    assert len(quoted) >= 9, "the page lost its quoted messages: update this test"
    namespace: dict = {}
    for code, expected in examples:
        if expected is None:
            exec(code, namespace)
        elif expected.startswith("CamscopeError: "):
            with pytest.raises(CamscopeError) as raised:
                exec(code, namespace)
            assert f"CamscopeError: {raised.value}" == expected
        else:
            assert expected.startswith("UserWarning: "), expected
            with pytest.raises(UserWarning) as raised:
                exec(code, namespace)
            assert f"UserWarning: {raised.value}" == expected
