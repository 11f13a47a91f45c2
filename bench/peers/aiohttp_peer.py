"""The aiohttp peer: the contract subset as aiohttp's docs write a streaming server.

``web.StreamResponse`` with ``prepare()`` and one ``write()`` per event ("Streaming
responses"), ``web.WebSocketResponse`` with ``async for msg in ws`` ("WebSockets"), typed
app state in ``web.AppKey``s and cleanup in ``on_cleanup`` ("Application's config",
"Graceful shutdown"), served by ``web.run_app`` on a uvloop event loop with a 4096 backlog.

``python -m bench.peers.aiohttp_peer --host 127.0.0.1 --port 8101``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

import uvloop
from aiohttp import WSMsgType, web
from aiohttp.typedefs import Handler

from bench.peers import contract
from bench.peers.asyncio_streams import (
    Broadcast,
    Streams,
    events_of,
    next_batch,
    paced,
)
from bench.peers.contract import BadRequest, Counter, Event, Generation

COUNTER = web.AppKey("counter", Counter)
STREAMS = web.AppKey("streams", Streams)


def json_response(body: bytes, status: int = 200, **headers: str) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json", headers=headers)


@web.middleware
async def bad_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except BadRequest as e:
        return json_response(e.body(), status=400)


async def read_create(request: web.Request) -> contract.CreateRequest:
    return contract.parse_create(contract.parse_json(await request.read()))


async def stream_out(
    request: web.Request,
    content_type: str,
    first: bytes,
    frames: AsyncIterator[bytes],
    headers: dict[str, str] | None = None,
) -> web.StreamResponse:
    """A chunked streaming response: ``first``, then one ``write()`` per frame. A client
    that leaves ends it quietly (``prepare()`` and ``write()`` raise ConnectionResetError)."""
    resp = web.StreamResponse(
        headers={"Content-Type": content_type, **contract.STREAM_HEADERS, **(headers or {})}
    )
    resp.enable_chunked_encoding()
    with contextlib.suppress(ConnectionResetError):
        await resp.prepare(request)
        if first:
            await resp.write(first)
        async for frame in frames:
            await resp.write(frame)
        await resp.write_eof()
    return resp


async def sse_frames(events: AsyncIterator[Event]) -> AsyncIterator[bytes]:
    async for event in events:
        yield contract.sse_frame(event)


async def ndjson_lines(events: AsyncIterator[Event]) -> AsyncIterator[bytes]:
    async for event in events:
        yield event.data + b"\n"


def created_headers(stream_id: str) -> dict[str, str]:
    return {"Tokenwire-Stream": stream_id, "Location": f"/api/streams/{stream_id}"}


async def healthz(request: web.Request) -> web.Response:
    return json_response(contract.health_body(request.app[COUNTER].live))


async def create_sse(request: web.Request) -> web.StreamResponse:
    gen = Generation(contract.new_stream_id(), await read_create(request))
    first = contract.SSE_RETRY + contract.sse_created(gen.stream_id)
    with request.app[COUNTER].counting():
        return await stream_out(
            request,
            contract.SSE_CONTENT_TYPE,
            first,
            sse_frames(paced(gen)),
            created_headers(gen.stream_id),
        )


async def create_chunked(request: web.Request) -> web.StreamResponse:
    gen = Generation(contract.new_stream_id(), await read_create(request))
    first = contract.ndjson_line(contract.created_message(gen.stream_id))
    with request.app[COUNTER].counting():
        return await stream_out(
            request,
            contract.NDJSON_CONTENT_TYPE,
            first,
            ndjson_lines(paced(gen)),
            created_headers(gen.stream_id),
        )


async def websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(compress=False, max_msg_size=64 * 1024)
    await ws.prepare(request)
    counter = request.app[COUNTER]
    tasks: set[asyncio.Task[None]] = set()

    async def generate(gen: Generation) -> None:
        with counter.counting():
            async for event in paced(gen):
                await ws.send_frame(event.data, WSMsgType.TEXT)

    # The loop keeps reading (pings, close frames, more generates) while tasks write.
    async for msg in ws:
        if msg.type != WSMsgType.TEXT:
            continue
        try:
            body = contract.parse_json(msg.data)
            if not isinstance(body, dict) or body.get("op") != "generate":
                raise BadRequest("op: only 'generate' is served here", code="unknown_op")
            gen = Generation(contract.new_stream_id(), contract.parse_create(body, ("op",)))
        except BadRequest as e:
            await ws.send_str(e.ws_message())
            continue
        await ws.send_frame(contract.created_message(gen.stream_id), WSMsgType.TEXT)
        task = asyncio.create_task(generate(gen))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return ws


async def create_stream(request: web.Request) -> web.Response:
    stream = request.app[STREAMS].start(await read_create(request))
    return json_response(
        contract.created_body(stream.id), status=201, Location=f"/api/streams/{stream.id}"
    )


def find(request: web.Request) -> Broadcast:
    stream_id = request.match_info["id"]
    stream = request.app[STREAMS].get(stream_id)
    if stream is None:
        raise web.HTTPNotFound(
            body=contract.unknown_stream(stream_id), content_type="application/json"
        )
    return stream


async def poll(request: web.Request) -> web.Response:
    stream = find(request)
    after = contract.parse_after(request.query.get("after"))
    timeout = contract.parse_timeout(request.query.get("timeout"))
    events: list[Event] = []
    if not stream.finished or stream.has_after(after):  # else: answer at once, done
        with stream.subscribe(after) as queue:
            events = await next_batch(queue, timeout, contract.MAX_POLL_BATCH)
    done = events[-1].terminal if events else stream.finished
    return web.Response(
        body=contract.poll_body(events, after, done),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def subscribe_sse(request: web.Request) -> web.StreamResponse:
    stream = find(request)
    after = contract.parse_after(request.query.get("after"))
    last_id = request.headers.get("Last-Event-ID", "").strip()
    if last_id:
        after = contract.parse_after(last_id, "Last-Event-ID")
    if stream.finished and not stream.has_after(after):
        return web.Response(status=204)
    with stream.subscribe(after) as queue:
        return await stream_out(
            request, contract.SSE_CONTENT_TYPE, contract.SSE_RETRY, sse_frames(events_of(queue))
        )


async def subscribe_chunked(request: web.Request) -> web.StreamResponse:
    stream = find(request)
    after = contract.parse_after(request.query.get("after"))
    if stream.finished and not stream.has_after(after):
        return web.Response(status=204)
    with stream.subscribe(after) as queue:
        return await stream_out(
            request, contract.NDJSON_CONTENT_TYPE, b"", ndjson_lines(events_of(queue))
        )


async def close_streams(app: web.Application) -> None:
    await app[STREAMS].close()


def create_app() -> web.Application:
    app = web.Application(middlewares=[bad_requests])
    counter = Counter()
    app[COUNTER] = counter
    app[STREAMS] = Streams(counter)
    app.on_cleanup.append(close_streams)
    app.add_routes(
        [
            web.get("/healthz", healthz),
            web.post("/api/sse", create_sse),
            web.post("/api/chunked", create_chunked),
            web.get("/api/ws", websocket),
            web.post("/api/streams", create_stream),
            web.get("/api/streams/{id}/poll", poll),
            web.get("/api/streams/{id}/sse", subscribe_sse),
            web.get("/api/streams/{id}/chunked", subscribe_chunked),
        ]
    )
    return app


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.peers.aiohttp_peer", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8101)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        web.run_app(
            create_app(),
            host=args.host,
            port=args.port,
            backlog=4096,
            access_log=None,
            print=None,
            shutdown_timeout=1.0,
            loop=uvloop.new_event_loop(),
        )


if __name__ == "__main__":
    main()
