"""The Autobahn|Testsuite fuzzing cases (all 517, run by ``kosoku``) against the test-only
echo route built with ``GET /api/ws``'s WebSocket settings.

Every case passes (OK, NON-STRICT or INFORMATIONAL) except the documented ones
(``docs/autobahn.md``): messages of 64 KiB or more, refused with 1009 by
``ws_max_msg_bytes``; compression (12.x, 13.x), which the endpoint does not offer; and
7.9.5, aiohttp accepting the reserved close code 1006. The whole run takes seconds, so
the suite runs all of it; ``bench/autobahn.py`` writes kosoku's reports.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from tests.conformance.autobahn import ECHO_PATH, add_echo_route, expected_failure, run_cases
from tests.conformance.clients import ws_url
from tests.conftest import MakeServer


# Autobahn's own case files (kosoku runs them as they are) open their test data without
# closing it: ResourceWarnings from kosoku/cases/case12_x_x.py, not from tokenwire.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_autobahn_cases(make_server: MakeServer) -> None:
    srv = await make_server(setup=add_echo_route)
    async with asyncio.timeout(100):
        results = await run_cases(ws_url(srv, ECHO_PATH), None)
    assert len(results) == 517
    unexpected = {
        r.case_id: (r.behavior.value, r.behavior_close.value, r.result, r.result_close)
        for r in results
        if r.passed != (expected_failure(r.case_id) is None)
    }
    assert unexpected == {}
    verdicts = Counter((r.behavior.value, r.behavior_close.value) for r in results)
    assert verdicts == {
        ("OK", "OK"): 246,
        ("NON-STRICT", "OK"): 4,  # 6.4.1-6.4.4: invalid UTF-8 failed at the message's end
        ("INFORMATIONAL", "INFORMATIONAL"): 3,  # 7.1.6, 7.13.1, 7.13.2
        ("UNIMPLEMENTED", "OK"): 216,  # 12.x, 13.x: no permessage-deflate
        ("FAILED", "FAILED"): 47,  # 64 KiB or more: closed with 1009
        ("FAILED", "WRONG CODE"): 1,  # 7.9.5
    }
    too_big = [r for r in results if expected_failure(r.case_id) == "too big"]
    assert {r.remote_close_code for r in too_big} == {1009}
