"""No import circle between camscope's modules, function-level imports included (the layering is `lint-imports`')."""

from __future__ import annotations

import grimp

#: The one circle kept: the deprecated ``ClassSimilarity.plot`` (for 0.1.0 users) draws with the viz layer.
ALLOWED = [{"camscope.analyses.similarity", "camscope.viz.analysis"}]


def import_circles(graph: grimp.ImportGraph, package: str = "camscope") -> list[set[str]]:
    """The strongly connected sets of modules (more than one module) of ``package``'s import graph."""
    modules = sorted(graph.modules)
    edges = {module: sorted(graph.find_modules_directly_imported_by(module)) for module in modules}
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []
    for root in modules:  # Tarjan's algorithm, iterative (no recursion limit)
        if root in order:
            continue
        work = [(root, 0)]
        while work:
            node, next_edge = work.pop()
            if next_edge == 0:
                order[node] = low[node] = len(order)
                stack.append(node)
            for i in range(next_edge, len(edges[node])):
                child = edges[node][i]
                if child not in order:
                    work += [(node, i + 1), (child, 0)]
                    break
                if child in stack:
                    low[node] = min(low[node], order[child])
            else:
                if low[node] == order[node]:
                    circle = set()
                    while True:
                        member = stack.pop()
                        circle.add(member)
                        if member == node:
                            break
                    if len(circle) > 1:
                        found.append(circle)
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
    return found


def test_the_circle_finder_finds_a_circle_through_a_function_level_import() -> None:
    graph = grimp.ImportGraph()
    for module in ("p", "p.a", "p.b", "p.c"):
        graph.add_module(module)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.c")
    graph.add_import(importer="p.c", imported="p.a")
    assert import_circles(graph, "p") == [{"p.a", "p.b", "p.c"}]


def test_no_import_circle() -> None:
    graph = grimp.build_graph("camscope", cache_dir=None, exclude_type_checking_imports=True)
    circles = [circle for circle in import_circles(graph) if circle not in ALLOWED]
    assert not circles, f"import circles (break each, e.g. by moving what both sides need): {circles}"
