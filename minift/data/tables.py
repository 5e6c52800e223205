"""Labelled texts from a table: a GLUE-style TSV or a CSV, columns named by the user.

    rows = load_table("dev.tsv", text_column="sentence", label_column="label")

The first line names the columns. Each row gives {"text": ..., "label": ...} (the label
as written; minift.data.tasks maps label names to indices). The delimiter follows the
suffix (.tsv: tab, .csv: comma) and quoting is the csv module's. A missing column, an
empty text or a short row is an error naming the file, the line and the columns there.
GLUE's TSVs are unquoted, so quote characters are read as text there.
"""

from __future__ import annotations

import csv
import os
import pathlib

from minift.errors import UserError

TABLE_SUFFIXES = (".tsv", ".csv")


def is_table(path: str | os.PathLike) -> bool:
    return pathlib.Path(path).suffix.lower() in TABLE_SUFFIXES


def load_table(
    path: str | os.PathLike, text_column: str = "text", label_column: str | None = "label"
) -> list[dict]:
    """Rows {"text", "label"} (no "label" when ``label_column`` is None) of a TSV/CSV file."""
    path = pathlib.Path(path)
    if not is_table(path):
        raise UserError(f"{path}: a table must end in {' or '.join(TABLE_SUFFIXES)}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    tsv = path.suffix.lower() == ".tsv"
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t" if tsv else ",", quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)  # fmt: skip
        header = next(reader, None)
        if not header:
            raise UserError(f"{path} is empty: the first line must name the columns")
        wanted = [c for c in (text_column, label_column) if c is not None]
        for c in wanted:
            if c not in header:
                raise UserError(f"{path} has no column {c!r}; its columns are {header}")
        ti = header.index(text_column)
        li = header.index(label_column) if label_column is not None else None
        rows = []
        for line, cells in enumerate(reader, start=2):
            if not cells:
                continue  # a blank line
            if len(cells) < len(header):
                raise UserError(f"{path}, line {line}: {len(cells)} cells, the header names {len(header)}")  # fmt: skip
            text = cells[ti]
            if not text.strip():
                raise UserError(f"{path}, line {line}: the {text_column!r} cell is empty")
            row = {"text": text}
            if li is not None:
                row["label"] = cells[li].strip()
            rows.append(row)
    if not rows:
        raise UserError(f"{path} has a header but no rows")
    return rows
