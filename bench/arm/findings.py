"""Result files whose tables are generated and whose findings are written by hand below them."""

from __future__ import annotations

from pathlib import Path

MARKER = "<!-- findings -->"


def write_keeping_findings(md: Path, text: str) -> None:
    """Write the generated `text` to `md`, keeping the hand-written part below MARKER if `md` has one."""
    if md.is_file() and MARKER in md.read_text():
        text += "\n" + MARKER + md.read_text().split(MARKER, 1)[1]
    md.write_text(text)
