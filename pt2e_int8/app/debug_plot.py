"""The debugger's plot: per-layer local SQNR as bars, accumulated SQNR as a line, in graph order.

A layer whose bar is short is a cause (its own quantization hurts); a line that falls while the
bars stay tall is error carried in from upstream.
"""

from __future__ import annotations

from pathlib import Path

# An exact match (inf dB, null in JSON) is drawn at this height, above any real measurement.
_EXACT_DB = 80.0


def _db(value) -> float:
    return _EXACT_DB if value is None else min(float(value), _EXACT_DB)


def layer_sqnr_plot(layers: list[dict], path: str | Path, title: str) -> Path:
    """layers: rows of `LayerErrorReport.to_dict()["layers"]`. Writes a PNG; float rows are grey."""
    from pt2e_int8.app.extras import require
    from pt2e_int8.atomic import atomic_path

    require("matplotlib", "demo").use("Agg")  # files only: no display needed
    plt = require("matplotlib.pyplot", "demo")

    rows = [r for r in layers if r.get("acc_max_error") is not None]
    xs = list(range(len(rows)))
    local = [_db(r["local_sqnr"]) for r in rows]
    acc = [_db(r["acc_sqnr"]) for r in rows]
    colours = ["tab:blue" if r["scheme"] else "lightgrey" for r in rows]
    fig, ax = plt.subplots(figsize=(max(7.0, 0.22 * len(rows) + 2), 4.5), dpi=120)
    ax.bar(xs, local, color=colours, label="local SQNR (this layer alone, float inputs)")
    ax.plot(xs, acc, color="tab:red", marker=".", label="accumulated SQNR (whole int8 model up to here)")
    ax.set_xticks(xs)
    ax.set_xticklabels([r["name"] for r in rows], rotation=90, fontsize=6)
    ax.set_ylabel("SQNR vs float (dB)")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="lower left", framealpha=0.9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)
