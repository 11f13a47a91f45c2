"""A failing source ends its stream with one exact ``error`` event on every transport and
``/v1``; the server keeps serving, and a stream running beside it is untouched.

The failures: an exception the source did not expect (``source_error``), a source that
hangs (ended by ``generation_timeout_s``), and an OpenAI-compatible upstream that closes or
drops its stream mid-answer (``upstream_error``, the openai source against
``tests/openai_standin.py``). ``test_v1.py`` covers a ``SourceError`` before and during a
``/v1`` stream, ``test_source_openai.py`` the openai source's own mapping of each upstream
failure; this file checks the end-to-end picture over the four transports at once.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from openai.types.chat import ChatCompletionChunk

from server.sources.base import Finish, GenerationRequest, TokenSource
from server.sources.openai import CLOSED_EARLY_MESSAGE
from tests.conftest import MakeServer, base_url, create
from tests.openai_standin import Behavior, OpenAIStandIn
from tests.readers import TRANSPORTS, read, text_of

PIECES = ["Hel", "lo", " 세계", " 🚀", "\r\n"]
WAIT = 30


class ScriptedSource(TokenSource):
    """Yields ``PIECES`` (paced), then does what the prompt says: ``raise`` raises a
    ``RuntimeError``, ``hang`` waits forever, anything else ends normally."""

    name = "synthetic"

    def __init__(self) -> None:
        self.hanging = 0

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str | Finish]:
        for piece in PIECES:
            await asyncio.sleep(0.01)
            yield piece
        if request.prompt == "raise":
            raise RuntimeError("boom: the model fell over")
        if request.prompt == "hang":
            self.hanging += 1
            try:
                await asyncio.Event().wait()
            finally:
                self.hanging -= 1
        yield Finish("stop")


def error_event(events: list[dict[str, Any]]) -> dict[str, Any]:
    return {k: events[-1][k] for k in ("type", "seq", "code", "message")}


async def read_everywhere(
    session: aiohttp.ClientSession, base: str, sid: str
) -> list[list[dict[str, Any]]]:
    """The stream over the four transports at once, each from the start."""
    return list(await asyncio.gather(*(read(session, base, t, sid) for t in TRANSPORTS)))


async def openai_error(base: str, model: str, prompt: str) -> tuple[str, dict[str, Any]]:
    """A ``/v1`` stream read with the SDK until its in-band error: (text, error body)."""
    pieces: list[str] = []

    async def consume(stream: openai.AsyncStream[ChatCompletionChunk]) -> None:
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)

    async with openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0) as oa:
        stream = await oa.chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt}], stream=True
        )
        with pytest.raises(openai.APIError) as info:
            await consume(stream)
    assert isinstance(info.value.body, dict)
    return "".join(pieces), info.value.body


async def check_bystander(session: aiohttp.ClientSession, base: str, sid: str) -> None:
    """The stream that ran beside the failures ended normally with every piece."""
    for events in await read_everywhere(session, base, sid):
        assert [e["seq"] for e in events] == list(range(len(PIECES) + 1))
        assert text_of(events) == "".join(PIECES)
        assert (events[-1]["type"], events[-1]["finish_reason"]) == ("done", "stop")
        assert events[-1]["sha256"] == hashlib.sha256("".join(PIECES).encode()).hexdigest()


@pytest.mark.parametrize(
    ("prompt", "code", "message"),
    [
        pytest.param(
            "raise", "source_error", "RuntimeError: boom: the model fell over", id="raise"
        ),
        pytest.param("hang", "generation_timeout", "generation took longer than 1 s", id="hang"),
    ],
)
async def test_a_failing_source_ends_with_an_error_event_everywhere(
    make_server: MakeServer,
    session: aiohttp.ClientSession,
    prompt: str,
    code: str,
    message: str,
) -> None:
    source = ScriptedSource()
    srv = await make_server(sources={"synthetic": source}, generation_timeout_s=1)
    base = base_url(srv)
    async with asyncio.timeout(WAIT):
        bystander = await create(session, srv, prompt="fine")
        failing = [await create(session, srv, prompt=prompt) for _ in range(3)]
        openai_text, openai_body = await openai_error(base, "synthetic", prompt)
        for sid in failing:
            results = await read_everywhere(session, base, sid)
            for events in results:
                assert events == results[0]
            events = results[0]
            assert [e["seq"] for e in events] == list(range(len(PIECES) + 1))
            assert text_of(events) == "".join(PIECES)
            assert error_event(events) == {
                "type": "error",
                "seq": len(PIECES),
                "code": code,
                "message": message,
            }
        # /v1: the answer so far, then OpenAI's in-band error with the same code.
        assert openai_text == "".join(PIECES)
        expected = {"message": message, "type": "server_error", "param": None, "code": code}
        assert openai_body == expected
        await check_bystander(session, base, bystander)
        # The server goes on serving.
        after = await create(session, srv, prompt="after")
        assert text_of(await read(session, base, "ws", after)) == "".join(PIECES)
        async with session.get(f"{base}/healthz") as resp:
            assert (resp.status, (await resp.json())["live_streams"]) == (200, 0)
    assert source.hanging == 0  # the timeout closed every hung generator


@pytest.mark.parametrize(
    "behavior",
    [
        Behavior(pieces=PIECES, close_after=3),
        Behavior(pieces=PIECES, abort_after=3),
        Behavior(pieces=PIECES, finish_reason=None, send_done=False),
    ],
    ids=["clean-close", "connection-drop", "eof-without-finish"],
)
async def test_an_upstream_closing_mid_stream_is_an_upstream_error(
    make_server: MakeServer, session: aiohttp.ClientSession, behavior: Behavior
) -> None:
    async with OpenAIStandIn(behavior=behavior) as standin:
        srv = await make_server(source="openai", base_url=standin.url, api_key="k", model="m")
        base = base_url(srv)
        async with asyncio.timeout(WAIT):
            bystander = await create(
                session,
                srv,
                prompt="b",
                source="synthetic",
                max_tokens=40,
                params={"tokens_per_s": 200},
            )
            sid = await create(session, srv, prompt="upstream", source="openai")
            results = await read_everywhere(session, base, sid)
            sent = (
                len(PIECES) if behavior.close_after is None and behavior.abort_after is None else 3
            )
            for events in results:
                assert events == results[0]
                assert text_of(events) == "".join(PIECES[:sent])
                assert error_event(events) == {
                    "type": "error",
                    "seq": sent,
                    "code": "upstream_error",
                    "message": CLOSED_EARLY_MESSAGE,
                }
            # The same through /v1 (model openai/m): the SDK raises on the in-band error.
            text, body = await openai_error(base, "openai/m", "u")
            assert text == "".join(PIECES[:sent])
            assert body == {
                "message": CLOSED_EARLY_MESSAGE,
                "type": "server_error",
                "param": None,
                "code": "upstream_error",
            }
            # A synthetic stream beside it: whole.
            events = await read(session, base, "chunked", bystander)
            assert [e["seq"] for e in events] == list(range(41))
            assert events[-1]["finish_reason"] == "length"
