"""Asset metadata people would rather look at than read: previews, column schemas and plots."""

from __future__ import annotations

import base64
import io

import dagster as dg
import pyarrow as pa

PREVIEW_ROWS = 10


def preview_markdown(data: pa.Table | None, masked: set[str] = frozenset()) -> dg.MetadataValue:
    """A first-rows table for the UI; `masked` columns (personal data) show as •••."""
    if data is None or data.num_rows == 0:
        return dg.MetadataValue.md("_no rows_")
    rows = data.slice(0, PREVIEW_ROWS).to_pylist()
    names = [n for n in data.column_names if not n.startswith("_")]
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for row in rows:
        lines.append("| " + " | ".join("•••" if n in masked else str(row[n]) for n in names) + " |")
    return dg.MetadataValue.md("\n".join(lines))


def arrow_table_schema(schema: pa.Schema, descriptions: dict[str, str] | None = None) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(f.name, str(f.type), description=(descriptions or {}).get(f.name))
                                   for f in schema])


def new_figure(width: float = 7, height: float = 2.6, rows: int = 1, cols: int = 1):
    import matplotlib

    matplotlib.use("Agg")  # no display: render to PNG only
    import matplotlib.pyplot as plt

    return plt.subplots(rows, cols, figsize=(width, height), dpi=100, squeeze=rows * cols == 1)


def figure_markdown(fig, alt: str) -> dg.MetadataValue:
    """Embed a matplotlib figure as a PNG in Markdown metadata (the UI renders it inline)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()})")
