"""The demo's plot: accuracy vs latency, marker area = file size, one colour per variant."""

from __future__ import annotations

from pathlib import Path


def accuracy_latency_plot(rows: list[dict], path: str | Path, title: str) -> Path:
    """rows: dicts with variant, format, accuracy (0..1), median_ms, size_bytes. Writes a PNG."""
    from pt2e_int8.app.extras import require
    from pt2e_int8.atomic import atomic_path

    require("matplotlib", "demo").use("Agg")  # files only: works with no display, on CI and boards
    plt = require("matplotlib.pyplot", "demo")

    variants = list(dict.fromkeys(r["variant"] for r in rows))
    colours = {v: plt.cm.tab10(i % 10) for i, v in enumerate(variants)}
    markers = {"pte": "o", "onnx": "s"}
    biggest = max(r["size_bytes"] for r in rows) or 1
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for i, r in enumerate(rows):
        ax.scatter(r["median_ms"], 100 * r["accuracy"], s=60 + 600 * r["size_bytes"] / biggest,
                   color=colours[r["variant"]], marker=markers.get(r["format"], "^"), alpha=0.75,
                   edgecolors="black", linewidths=0.6)
        # Points of equal accuracy crowd together: stagger their labels vertically.
        ax.annotate(f"{r['size_bytes'] / 1024:.0f} KiB", (r["median_ms"], 100 * r["accuracy"]),
                    textcoords="offset points", xytext=(9, -14 + 12 * (i % 3)), fontsize=7)
    for v in variants:
        ax.scatter([], [], color=colours[v], marker="o", label=v)
    for fmt, marker in markers.items():
        ax.scatter([], [], color="grey", marker=marker, label=f".{fmt}")
    ax.legend(fontsize=7, loc="best", framealpha=0.8)
    ax.set_xlabel("median latency, batch 1 (ms)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.margins(x=0.3, y=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)
