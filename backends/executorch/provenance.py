"""Which node of the graph we exported an edge / delegate node came from.

torch.export and to_edge record each node's origin in `meta["from_node"]` (a tree of
NodeSource with the graph id). Placement and the leftover check both read it, so it
lives here. Matching on the graph id keeps same-named nodes of other graphs (the float
export before quantization) from being mistaken for ours.
"""

from __future__ import annotations

from torch.fx import Node


def source_names(node: Node, graph_id: int) -> set[str]:
    """Names of the nodes of graph `graph_id` that `node` was derived from."""
    found: set[str] = set()
    stack = list(node.meta.get("from_node") or [])
    seen = 0
    while stack and seen < 10_000:  # the trees are small; the bound guards a cycle
        seen += 1
        src = stack.pop()
        if getattr(src, "graph_id", None) == graph_id:
            found.add(src.name)
            continue  # deeper entries are older graphs
        stack.extend(getattr(src, "from_node", None) or [])
    return found
