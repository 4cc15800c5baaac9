"""Tables of result rows (dicts) as aligned text (terminal), markdown (docs/benchmarks.md) or HTML
(reports): one cell format for all three, so a figure reads the same everywhere."""

from __future__ import annotations

from html import escape


def cell(value, floatfmt: str = "{:.4f}") -> str:
    """Floats with `floatfmt`, None as an empty cell, anything else as its str()."""
    if isinstance(value, float):
        return floatfmt.format(value)
    return "" if value is None else str(value)


def _columns(rows: list[dict], columns: list[str] | None) -> list[str]:
    return list(columns) if columns else list(rows[0])


def text_table(rows: list[dict], columns: list[str] | None = None, floatfmt: str = "{:.4f}") -> str:
    """Left-aligned columns under a dashed rule ("" for no rows)."""
    if not rows:
        return ""
    columns = _columns(rows, columns)
    cells = [[cell(row.get(c), floatfmt) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines) + "\n"


def markdown_table(rows: list[dict], columns: list[str] | None = None, floatfmt: str = "{:.4f}") -> str:
    if not rows:
        return "(no rows)\n"
    columns = _columns(rows, columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(row.get(c), floatfmt) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def html_table(rows: list[dict], columns: list[str], floatfmt: str = "{:.3f}") -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{escape(cell(r.get(c), floatfmt))}</td>" for c in columns) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
