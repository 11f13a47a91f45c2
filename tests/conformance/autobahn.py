"""Running the Autobahn cases in the test process (kosoku's public ``run_fuzzingclient``)
against the echo route of ``bench/autobahn.py`` (built like ``GET /api/ws``), whose
expected failures the tests share. ``bench/autobahn.py`` runs every case and writes
kosoku's reports; ``test_autobahn.py`` runs them here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import kosoku

from bench.autobahn import ECHO_PATH, add_echo_route, expected_failure

__all__ = ["ECHO_PATH", "add_echo_route", "expected_failure", "run_cases"]


async def run_cases(
    url: str, cases: Sequence[str] | None, exclude: Sequence[str] = (), concurrency: int = 2
) -> list[Any]:
    """Every selected case's result (kosoku's case results), passed or not (kosoku raises
    on a failure)."""
    try:
        return list(await kosoku.run_fuzzingclient(url, cases, list(exclude), concurrency))
    except kosoku.FailureError as e:
        return list(e.results)
