"""The one table printer: aligned text for terminals, Markdown for reports.

Every table pt2e-int8 prints (coverage, bench, compare, demo, examples) and every Markdown
table it writes (report.md, bench/RESULTS.md) goes through here, so they look alike.
"""

from __future__ import annotations

from collections.abc import Sequence


def _cells(header: Sequence, rows: Sequence[Sequence]) -> list[list[str]]:
    return [[str(c) for c in header]] + [["" if c is None else str(c) for c in row] for row in rows]


def text_table(header: Sequence, rows: Sequence[Sequence], *, right: Sequence[int] = (),
               rule: bool = False) -> str:
    """Columns padded to their widest cell, two spaces apart; `right` lists right-aligned columns.

    Example:
        print(text_table(("layer", "int8"), [("fc1", "yes")]))
    """
    cells = _cells(header, rows)
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    lines = []
    for n, row in enumerate(cells):
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(parts).rstrip())
        if rule and n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(header: Sequence, rows: Sequence[Sequence], *, right: Sequence[int] = ()) -> str:
    """A GitHub Markdown table; `|` and newlines inside cells are escaped."""
    cells = [[c.replace("|", "\\|").replace("\n", " ") for c in row] for row in _cells(header, rows)]
    align = ["---:" if i in right else "---" for i in range(len(cells[0]))]
    return "\n".join("| " + " | ".join(row) + " |" for row in [cells[0], align, *cells[1:]])
