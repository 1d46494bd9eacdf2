"""Markdown tables, as every report and study writes them: pandas' `DataFrame.to_markdown` (tabulate's pipe
format), cells HTML-escaped (markdown renders HTML) and their pipes escaped (a pipe would end the cell)."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence

import pandas as pd


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    cells = [[_escaped(value) for value in row] for row in rows]
    return pd.DataFrame(cells, columns=[_escaped(c) for c in columns]).to_markdown(index=False, disable_numparse=True)


def _escaped(value: object) -> str:
    return html.escape(str(value), quote=False).replace("|", "\\|")
