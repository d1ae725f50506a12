"""Accumulator states as tensors plus JSON: what checkpoints store and what ranks exchange.

An accumulator's ``state_dict()`` is a tree of dicts, lists and tuples whose
leaves are tensors and plain values. :func:`flatten_state` splits it into a
flat ``{name: tensor}`` dict and a JSON-safe description of the tree (the
tensors replaced by their names); :func:`unflatten_state` puts it back together
exactly (dict keys keep their type: an ``int`` label stays an ``int``). Nothing
is pickled.

Example:
    >>> import torch
    >>> tensors, tree = flatten_state({"counts": torch.tensor([2, 3]), "names": {0: "cat"}, "bins": (4, 8)})
    >>> sorted(tensors), tree["d"][1]
    (['t0'], [{'s': 'names'}, {'d': [[{'i': 0}, 'cat']]}])
    >>> state = unflatten_state(tensors, tree)
    >>> state["counts"].tolist(), state["names"], state["bins"]
    ([2, 3], {0: 'cat'}, (4, 8))
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from camscope.errors import CamscopeError

__all__ = ["flatten_state", "unflatten_state"]


def _key(key: Any) -> Any:
    if isinstance(key, bool) or key is None:
        return {"j": key}
    if isinstance(key, int):
        return {"i": key}
    if isinstance(key, str):
        return {"s": key}
    raise CamscopeError(f"cannot store a state whose dict key is a {type(key).__name__} ({key!r})")


def _restore_key(key: dict[str, Any]) -> Any:
    (kind, value), *_ = key.items()
    return int(value) if kind == "i" else value


def flatten_state(state: Any) -> tuple[dict[str, Tensor], Any]:
    """``(tensors, tree)``: the tensors of ``state`` by name and a JSON-safe tree that refers to them.

    Raises:
        CamscopeError: for a leaf that is neither a tensor nor a JSON value.
    """
    tensors: dict[str, Tensor] = {}

    def walk(value: Any) -> Any:
        if isinstance(value, Tensor):
            name = f"t{len(tensors)}"
            tensors[name] = value.detach()
            return {"T": name}
        if isinstance(value, dict):
            return {"d": [[_key(k), walk(v)] for k, v in value.items()]}
        if isinstance(value, list):
            return {"l": [walk(v) for v in value]}
        if isinstance(value, tuple):
            return {"u": [walk(v) for v in value]}
        if isinstance(value, float) and not math.isfinite(value):
            return {"f": repr(value)}
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, torch.device):
            return {"f": None, "dev": str(value)}
        raise CamscopeError(f"cannot store a state value of type {type(value).__name__} ({value!r:.60})")

    return tensors, walk(state)


def unflatten_state(tensors: dict[str, Tensor], tree: Any) -> Any:
    """The state that :func:`flatten_state` split into ``tensors`` and ``tree``.

    Raises:
        CamscopeError: for a tree that names a missing tensor or is malformed.
    """

    def walk(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        if "T" in node:
            if node["T"] not in tensors:
                raise CamscopeError(f"the state refers to a tensor {node['T']!r} that is missing")
            return tensors[node["T"]]
        if "dev" in node:
            return torch.device(node["dev"])
        if "d" in node:
            return {_restore_key(k): walk(v) for k, v in node["d"]}
        if "l" in node:
            return [walk(v) for v in node["l"]]
        if "u" in node:
            return tuple(walk(v) for v in node["u"])
        if "f" in node:
            return float(node["f"])
        raise CamscopeError(f"a malformed state entry: {node!r:.80}")

    return walk(tree)
