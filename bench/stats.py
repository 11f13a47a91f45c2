"""Figures and tables: nearest-rank percentiles, medians of what is known, the bytes of a
response head, and one table printer (rich, or plain aligned text) for every benchmark."""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Iterable, Mapping, Sequence, Sized


def nearest_rank(n: int, q: float) -> int:
    """The 1-based rank of the ``q``-th percentile among ``n`` ordered values."""
    return min(n, max(1, math.ceil(q / 100 * n)))


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """Nearest-rank ``q``-th percentile of sorted values (None when there are none)."""
    if not ordered:
        return None
    return ordered[nearest_rank(len(ordered), q) - 1]


def histogram_percentile(hist: Mapping[float, int], q: float) -> float | None:
    """Nearest-rank ``q``-th percentile of a histogram, bucket -> count (None when empty)."""
    n = sum(hist.values())
    if n == 0:
        return None
    rank = nearest_rank(n, q)
    seen = 0
    for bucket in sorted(hist):
        seen += hist[bucket]
        if seen >= rank:
            return bucket
    return max(hist)


def jain_index(values: Sequence[float]) -> float | None:
    """Jain's fairness index, (sum x)^2 / (n * sum x^2): 1 when every value is equal, 1/n
    when one takes everything (None when there is nothing to share)."""
    squares = sum(x * x for x in values)
    if not values or squares == 0:
        return None
    return sum(values) ** 2 / (len(values) * squares)


def median_of_known(values: Iterable[float | None]) -> float | None:
    """Median of the values that are not None (None if none is)."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def response_head_bytes(reason: str, headers: Iterable[tuple[Sized, Sized]]) -> int:
    """Bytes of an HTTP/1.1 response's status line and header block, as sent (long polling
    pays them for every poll): ``HTTP/1.1 200 OK`` CRLF, ``name: value`` CRLF each, CRLF."""
    status_line = len("HTTP/1.1 200 ") + len(reason) + 2
    return status_line + sum(len(k) + len(v) + 4 for k, v in headers) + 2


def or_dash(value: float | None, spec: str = ".0f") -> str:
    """``value`` formatted with ``spec``, or ``-`` when it is unknown."""
    return "-" if value is None else format(value, spec)


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    plain: bool = False,
    sections: Iterable[int] = (),
    wrap: Sequence[str] = (),
) -> None:
    """A table on stdout: rich when installed (and not ``plain``), else aligned text.

    The first column is left-aligned, the others right-aligned; ``sections`` are the
    indices of the rows that start a new section; ``wrap`` the columns that may wrap.
    """
    rows = [list(r) for r in rows]
    starts = set(sections)
    if not plain:
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            plain = True
        else:
            from rich import box

            # No vertical rules: a table of 8-10 columns fits a 100-column terminal.
            table = Table(
                title=title,
                title_justify="left",
                box=box.SIMPLE_HEAD,
                padding=(0, 1),
                pad_edge=False,
            )
            for i, col in enumerate(columns):
                table.add_column(
                    col, justify="left" if i == 0 else "right", no_wrap=col not in wrap
                )
            for i, row in enumerate(rows):
                if i in starts and i:
                    table.add_section()
                table.add_row(*row)
            Console(width=None if sys.stdout.isatty() else 100).print(table)
            return
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(columns)]
    print(title)
    for row in [list(columns), *rows]:
        print(
            "  ".join(
                v.rjust(w) if i else v.ljust(w)
                for i, (v, w) in enumerate(zip(row, widths, strict=True))
            )
        )
