"""Result tables: per-item rows plus a mean row, written as Markdown and CSV.

A row is a dict {column: value}. Values are numbers, text, or `UNAVAILABLE` for a metric that could
not be computed here (its reason is kept once per table in `notes`, not repeated in every cell).
The mean row averages each numeric column over the items with a finite value; a text column keeps
its value when all items agree (e.g. the flow method) and is left empty otherwise.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from videomv.io import atomic_write_text

UNAVAILABLE = "unavailable"


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def mean_row(rows: list[dict], columns: list[str], label_column: str = "item", label: str = "mean") -> dict:
    """Column means over `rows` (see the module docstring)."""
    if not rows:
        raise ValueError("mean_row: no rows")
    out = {}
    for col in columns:
        values = [row.get(col) for row in rows]
        numbers = [float(v) for v in values if is_number(v) and math.isfinite(float(v))]
        if numbers:
            out[col] = sum(numbers) / len(numbers)
        elif all(v == UNAVAILABLE for v in values):
            out[col] = UNAVAILABLE
        elif any(is_number(v) for v in values):  # only non-finite numbers (e.g. identical images: inf dB)
            out[col] = float(values[[is_number(v) for v in values].index(True)])
        else:
            texts = {str(v) for v in values if v is not None}
            out[col] = texts.pop() if len(texts) == 1 else ""
    out[label_column] = label
    return out


def format_cell(value, digits: int = 4) -> str:
    if value is None:
        return ""
    if is_number(value):
        if isinstance(value, int):
            return str(value)
        if not math.isfinite(value):
            return str(value)
        return f"{value:.{digits}f}"
    return str(value)


def to_markdown(rows: list[dict], columns: list[str], digits: int = 4, notes: dict | None = None) -> str:
    """A GitHub Markdown table; `notes` ({metric: reason}) follow as a list."""
    escape = lambda text: text.replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(escape(format_cell(row.get(c), digits)) for c in columns) + " |")
    if notes:
        lines.append("")
        lines += [f"- {name}: {escape(str(reason))}" for name, reason in notes.items()]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict], columns: list[str]) -> str:
    """CSV with a header; numbers at full precision, unavailable metrics as `unavailable`."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: ("" if row.get(c) is None else (repr(row[c]) if isinstance(row[c], float) else row[c]))
                         for c in columns})
    return buffer.getvalue()


def read_csv(path: str | Path) -> list[dict]:
    """Rows of a CSV written by `to_csv`, numbers parsed back to floats."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for key, value in row.items():
            try:
                row[key] = float(value)
            except (TypeError, ValueError):
                pass
    return rows


def write_table(out_dir: str | Path, name: str, rows: list[dict], columns: list[str], notes: dict | None = None,
                settings: dict | None = None, label_column: str = "item") -> dict[str, Path]:
    """Write `<name>.md`, `<name>.csv` (item rows + mean row) and, given settings, `<name>_settings.json`.
    Returns {kind: path} and leaves the table text in the "markdown" entry's file."""
    if not rows:
        raise ValueError(f"write_table {name}: no rows to write")
    out_dir = Path(out_dir)
    table = rows + [mean_row(rows, columns, label_column)]
    paths = {"markdown": out_dir / f"{name}.md", "csv": out_dir / f"{name}.csv"}
    atomic_write_text(paths["markdown"], to_markdown(table, columns, notes=notes))
    atomic_write_text(paths["csv"], to_csv(table, columns))
    if settings is not None:
        paths["settings"] = out_dir / f"{name}_settings.json"
        atomic_write_text(paths["settings"], json.dumps({**settings, "notes": notes or {}}, indent=2, default=str))
    return paths
