"""The FastAPI peer: the contract subset as FastAPI's and sse-starlette's docs write it.

Pydantic models for the bodies and ``Query``/``Header`` parameters ("Request Body",
"Query Parameters and String Validations"), an exception handler that answers a
validation error with 400 ("Handling Errors": override ``RequestValidationError``),
sse-starlette's ``EventSourceResponse`` over an async generator that yields event dicts
(its README), Starlette's ``StreamingResponse`` for NDJSON ("Custom Response"),
``@app.websocket`` with ``iter_text()`` ("WebSockets"), a ``lifespan`` for shutdown.
Served by uvicorn with uvloop, httptools and websockets (``uvicorn[standard]``), one
worker.

``python -m bench.peers.fastapi_peer --host 127.0.0.1 --port 8102``
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import uvicorn
from fastapi import FastAPI, Header, Query, Request, Response, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sse_starlette import EventSourceResponse
from starlette.websockets import WebSocketDisconnect

from bench.peers import contract
from bench.peers.asyncio_streams import Broadcast, Streams, events_of, next_batch, paced
from bench.peers.contract import BadRequest, Counter, Event, Generation


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ttft_ms: float = Field(default=contract.DEFAULT_TTFT_MS, ge=0, le=contract.MAX_TTFT_MS)
    tokens_per_s: float = Field(
        default=contract.DEFAULT_TOKENS_PER_S, ge=0, le=contract.MAX_TOKENS_PER_S
    )
    jitter: float = Field(default=0.2, ge=0, le=1)  # accepted, ignored (see contract)
    seed: int = Field(default=0, ge=0)


class CreateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(max_length=contract.MAX_PROMPT_CHARS)
    max_tokens: int | None = Field(default=None, ge=1, le=contract.MAX_TOKENS)
    source: Literal["synthetic"] | None = None
    params: Params | None = None

    def request(self) -> contract.CreateRequest:
        params = self.params or Params()
        return contract.CreateRequest(
            prompt=self.prompt,
            max_tokens=self.max_tokens or contract.DEFAULT_MAX_TOKENS,
            seed=params.seed,
            tokens_per_s=params.tokens_per_s,
            ttft_ms=params.ttft_ms,
        )


class GenerateMessage(CreateBody):
    op: Literal["generate"]


class UnknownStream(Exception):
    def __init__(self, stream_id: str) -> None:
        super().__init__(stream_id)
        self.stream_id = stream_id


def json_response(body: bytes, status_code: int = 200) -> Response:
    return Response(body, status_code=status_code, media_type="application/json")


def validation_message(errors: Sequence[Any]) -> str:
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"] if part != "body") or "body"
    return f"{where}: {first['msg']}"


def create_app() -> FastAPI:
    counter = Counter()
    streams = Streams(counter)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await streams.close()

    app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        return json_response(
            contract.error_body("invalid_field", validation_message(exc.errors())), 400
        )

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest) -> Response:
        return json_response(exc.body(), 400)

    @app.exception_handler(UnknownStream)
    async def unknown(request: Request, exc: UnknownStream) -> Response:
        return json_response(contract.unknown_stream(exc.stream_id), 404)

    def find(stream_id: str) -> Broadcast:
        stream = streams.get(stream_id)
        if stream is None:
            raise UnknownStream(stream_id)
        return stream

    def sse_event(event: Event) -> dict[str, str]:
        return {"id": str(event.seq), "event": event.type, "data": event.data.decode()}

    def stream_headers(stream_id: str) -> dict[str, str]:
        return {
            **contract.STREAM_HEADERS,
            "Tokenwire-Stream": stream_id,
            "Location": f"/api/streams/{stream_id}",
        }

    @app.get("/healthz")
    async def healthz() -> Response:
        return json_response(contract.health_body(counter.live))

    @app.post("/api/sse")
    async def create_sse(body: CreateBody) -> EventSourceResponse:
        gen = Generation(contract.new_stream_id(), body.request())

        async def events() -> AsyncIterator[dict[str, Any]]:
            with counter.counting():
                yield {"retry": 1000}
                yield {"event": "created", "data": contract.created_message(gen.stream_id).decode()}
                async for event in paced(gen):
                    yield sse_event(event)

        return EventSourceResponse(events(), headers=stream_headers(gen.stream_id), sep="\n")

    @app.post("/api/chunked")
    async def create_chunked(body: CreateBody) -> StreamingResponse:
        gen = Generation(contract.new_stream_id(), body.request())

        async def lines() -> AsyncIterator[bytes]:
            with counter.counting():
                yield contract.created_message(gen.stream_id) + b"\n"
                async for event in paced(gen):
                    yield event.data + b"\n"

        return StreamingResponse(
            lines(), media_type=contract.NDJSON_CONTENT_TYPE, headers=stream_headers(gen.stream_id)
        )

    @app.websocket("/api/ws")
    async def websocket(ws: WebSocket) -> None:
        await ws.accept()
        tasks: set[asyncio.Task[None]] = set()

        async def generate(gen: Generation) -> None:
            with counter.counting():
                async for event in paced(gen):
                    await ws.send_text(event.data.decode())

        try:
            async for text in ws.iter_text():
                try:
                    msg = GenerateMessage.model_validate_json(text)
                except ValidationError as e:
                    message = validation_message(e.errors())
                    await ws.send_text(contract.ws_error("invalid_field", message))
                    continue
                gen = Generation(contract.new_stream_id(), msg.request())
                await ws.send_text(contract.created_message(gen.stream_id).decode())
                task = asyncio.create_task(generate(gen))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except WebSocketDisconnect:
            pass
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    @app.post("/api/streams", status_code=201)
    async def create_stream(body: CreateBody) -> Response:
        stream = streams.start(body.request())
        resp = json_response(contract.created_body(stream.id), 201)
        resp.headers["Location"] = f"/api/streams/{stream.id}"
        return resp

    @app.get("/api/streams/{stream_id}/poll")
    async def poll(
        stream_id: str,
        after: Annotated[int, Query(ge=-1)] = -1,
        wait_s: Annotated[
            float, Query(alias="timeout", ge=0, le=contract.MAX_POLL_TIMEOUT_S)
        ] = contract.DEFAULT_POLL_TIMEOUT_S,
    ) -> Response:
        stream = find(stream_id)
        events: list[Event] = []
        if not stream.finished or stream.has_after(after):  # else: answer at once, done
            with stream.subscribe(after) as queue:
                events = await next_batch(queue, wait_s, contract.MAX_POLL_BATCH)
        done = events[-1].terminal if events else stream.finished
        return Response(
            contract.poll_body(events, after, done),
            media_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    @app.get("/api/streams/{stream_id}/sse", response_model=None)
    async def subscribe_sse(
        stream_id: str,
        after: Annotated[int, Query(ge=-1)] = -1,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> EventSourceResponse | Response:
        stream = find(stream_id)
        if last_event_id:
            after = contract.parse_after(last_event_id.strip(), "Last-Event-ID")
        if stream.finished and not stream.has_after(after):
            return Response(status_code=204)

        async def events() -> AsyncIterator[dict[str, Any]]:
            with stream.subscribe(after) as queue:
                yield {"retry": 1000}
                async for event in events_of(queue):
                    yield sse_event(event)

        return EventSourceResponse(events(), headers=dict(contract.STREAM_HEADERS), sep="\n")

    @app.get("/api/streams/{stream_id}/chunked", response_model=None)
    async def subscribe_chunked(
        stream_id: str, after: Annotated[int, Query(ge=-1)] = -1
    ) -> StreamingResponse | Response:
        stream = find(stream_id)
        if stream.finished and not stream.has_after(after):
            return Response(status_code=204)

        async def lines() -> AsyncIterator[bytes]:
            with stream.subscribe(after) as queue:
                async for event in events_of(queue):
                    yield event.data + b"\n"

        return StreamingResponse(
            lines(),
            media_type=contract.NDJSON_CONTENT_TYPE,
            headers=dict(contract.STREAM_HEADERS),
        )

    return app


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.peers.fastapi_peer", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8102)
    return p.parse_args(argv)


def exit_cleanly(signum: int, frame: object) -> None:
    """SIGTERM once uvicorn has shut down gracefully: exit 0."""
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    # uvicorn (since 0.29, "cooperative signal handling") shuts down gracefully on SIGTERM,
    # then restores the handler it found and raises the signal again, so that the program's
    # own handler decides how the process ends. Without one the default handler kills the
    # process (exit -15); this one exits 0 after the graceful shutdown.
    signal.signal(signal.SIGTERM, exit_cleanly)
    uvicorn.run(
        create_app(),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        workers=1,
        backlog=4096,
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=1,
    )


if __name__ == "__main__":
    main()
