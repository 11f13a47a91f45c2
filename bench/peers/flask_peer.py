"""The Flask peer: the contract subset as Flask's, flask-sock's and gunicorn's docs write it.

Streamed answers are generators handed to a ``Response`` (Flask, "Streaming Contents");
the WebSocket is a ``@sock.route`` function that calls ``ws.receive()``/``ws.send()``
(flask-sock); the fan-out is a ``gevent.queue.Queue`` per subscriber and a greenlet per
stream (gevent, "Queues" and "Greenlets"). It runs on gunicorn with the gevent worker
class, one worker, started as a "Custom Application" (gunicorn's ``BaseApplication``), so
``python -m bench.peers.flask_peer --host H --port P`` is the whole command. gunicorn's
master process forks the one worker: count the process tree's CPU, not the master's.

One WebSocket serves its ``generate`` requests one after another (the handler greenlet
writes the stream, simple-websocket's own greenlet keeps reading pings and closes).
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import gevent
from flask import Flask, Response, request
from flask_sock import Sock
from gevent.queue import Empty, Queue
from gunicorn.app.base import BaseApplication

from bench.peers import contract
from bench.peers.contract import BadRequest, Event, Generation

#: Live generations of this worker, for ``/healthz`` (one worker: one counter).
LIVE = contract.Counter()


def paced(gen: Generation) -> Iterator[Event]:
    """Every event of a generation at its pace, yielding to other greenlets between tokens."""
    if gen.ttft_s:
        gevent.sleep(gen.ttft_s)
    loop = gevent.get_hub().loop
    start = loop.now()
    for seq in range(len(gen)):
        if seq:
            gevent.sleep(max(0.0, gen.due(seq, start) - loop.now()) if gen.interval_s else 0)
        yield gen.token(seq)
    yield gen.done()


class Broadcast:
    """One stream's events, kept in order, and a gevent queue per subscriber."""

    def __init__(self, stream_id: str) -> None:
        self.id = stream_id
        self.events: list[Event] = []
        self.subscribers: set[Queue[Event]] = set()

    @property
    def finished(self) -> bool:
        return bool(self.events) and self.events[-1].terminal

    def has_after(self, after: int) -> bool:
        return len(self.events) > after + 1

    def publish(self, event: Event) -> None:
        self.events.append(event)
        for queue in self.subscribers:
            queue.put_nowait(event)

    @contextlib.contextmanager
    def subscribe(self, after: int) -> Iterator[Queue[Event]]:
        queue: Queue[Event] = Queue()
        for event in self.events[after + 1 :]:
            queue.put_nowait(event)
        self.subscribers.add(queue)
        try:
            yield queue
        finally:
            self.subscribers.discard(queue)


STREAMS: dict[str, Broadcast] = {}


class UnknownStream(LookupError):
    """No stream of that id: ``404 unknown_stream``."""


def generate(stream: Broadcast, gen: Generation) -> None:
    with LIVE.counting():
        for event in paced(gen):
            stream.publish(event)
    gevent.spawn_later(contract.RETENTION_S, STREAMS.pop, stream.id, None)


def events_of(queue: Queue[Event]) -> Iterator[Event]:
    while True:
        event = queue.get()
        yield event
        if event.terminal:
            return


def json_response(body: bytes, status: int = 200) -> Response:
    return Response(body, status=status, mimetype="application/json")


def read_create() -> contract.CreateRequest:
    return contract.parse_create(contract.parse_json(request.get_data()))


def stream_headers(stream_id: str) -> dict[str, str]:
    return {
        **contract.STREAM_HEADERS,
        "Tokenwire-Stream": stream_id,
        "Location": f"/api/streams/{stream_id}",
    }


def create_app() -> Flask:
    app = Flask(__name__)
    sock = Sock(app)

    @app.errorhandler(BadRequest)
    def bad_request(e: BadRequest) -> Response:
        return json_response(e.body(), 400)

    def find(stream_id: str) -> Broadcast:
        stream = STREAMS.get(stream_id)
        if stream is None:
            raise UnknownStream(stream_id)
        return stream

    @app.errorhandler(UnknownStream)
    def unknown(e: UnknownStream) -> Response:
        return json_response(contract.unknown_stream(str(e.args[0])), 404)

    @app.get("/healthz")
    def healthz() -> Response:
        return json_response(contract.health_body(LIVE.live))

    @app.post("/api/sse")
    def create_sse() -> Response:
        gen = Generation(contract.new_stream_id(), read_create())

        def frames() -> Iterator[bytes]:
            with LIVE.counting():
                yield contract.SSE_RETRY + contract.sse_created(gen.stream_id)
                for event in paced(gen):
                    yield contract.sse_frame(event)

        return Response(
            frames(), mimetype="text/event-stream", headers=stream_headers(gen.stream_id)
        )

    @app.post("/api/chunked")
    def create_chunked() -> Response:
        gen = Generation(contract.new_stream_id(), read_create())

        def lines() -> Iterator[bytes]:
            with LIVE.counting():
                yield contract.created_message(gen.stream_id) + b"\n"
                for event in paced(gen):
                    yield event.data + b"\n"

        return Response(
            lines(),
            content_type=contract.NDJSON_CONTENT_TYPE,
            headers=stream_headers(gen.stream_id),
        )

    @sock.route("/api/ws")
    def websocket(ws: Any) -> None:
        while True:
            text = ws.receive()
            try:
                body = contract.parse_json(text)
                if not isinstance(body, dict) or body.get("op") != "generate":
                    raise BadRequest("op: only 'generate' is served here", code="unknown_op")
                gen = Generation(contract.new_stream_id(), contract.parse_create(body, ("op",)))
            except BadRequest as e:
                ws.send(e.ws_message())
                continue
            ws.send(contract.created_message(gen.stream_id).decode())
            with LIVE.counting():
                for event in paced(gen):
                    ws.send(event.data.decode())

    @app.post("/api/streams")
    def create_stream() -> Response:
        req = read_create()
        stream = Broadcast(contract.new_stream_id())
        STREAMS[stream.id] = stream
        gevent.spawn(generate, stream, Generation(stream.id, req))
        resp = json_response(contract.created_body(stream.id), 201)
        resp.headers["Location"] = f"/api/streams/{stream.id}"
        return resp

    @app.get("/api/streams/<stream_id>/poll")
    def poll(stream_id: str) -> Response:
        stream = find(stream_id)
        after = contract.parse_after(request.args.get("after"))
        timeout = contract.parse_timeout(request.args.get("timeout"))
        events: list[Event] = []
        if stream.finished and not stream.has_after(after):
            timeout = 0  # nothing will come: answer at once, done
        with stream.subscribe(after) as queue:
            with contextlib.suppress(Empty):
                events.append(queue.get(timeout=timeout))
            while events and not events[-1].terminal and not queue.empty():
                if len(events) >= contract.MAX_POLL_BATCH:
                    break
                events.append(queue.get_nowait())
        done = events[-1].terminal if events else stream.finished
        resp = json_response(contract.poll_body(events, after, done))
        resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.get("/api/streams/<stream_id>/sse")
    def subscribe_sse(stream_id: str) -> Response:
        stream = find(stream_id)
        after = contract.parse_after(request.args.get("after"))
        last_id = request.headers.get("Last-Event-ID", "").strip()
        if last_id:
            after = contract.parse_after(last_id, "Last-Event-ID")
        if stream.finished and not stream.has_after(after):
            return Response(status=204)

        def frames() -> Iterator[bytes]:
            with stream.subscribe(after) as queue:
                yield contract.SSE_RETRY
                for event in events_of(queue):
                    yield contract.sse_frame(event)

        return Response(frames(), mimetype="text/event-stream", headers=contract.STREAM_HEADERS)

    @app.get("/api/streams/<stream_id>/chunked")
    def subscribe_chunked(stream_id: str) -> Response:
        stream = find(stream_id)
        after = contract.parse_after(request.args.get("after"))
        if stream.finished and not stream.has_after(after):
            return Response(status=204)

        def lines() -> Iterator[bytes]:
            with stream.subscribe(after) as queue:
                for event in events_of(queue):
                    yield event.data + b"\n"

        return Response(
            lines(), content_type=contract.NDJSON_CONTENT_TYPE, headers=contract.STREAM_HEADERS
        )

    return app


class GunicornServer(BaseApplication):  # type: ignore[misc]
    """gunicorn's "Custom Application": the options in code, the app built in the worker
    (after the gevent worker has monkey-patched it)."""

    def __init__(self, options: dict[str, object]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return create_app()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.peers.flask_peer", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8103)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    GunicornServer(
        {
            "bind": f"{args.host}:{args.port}",
            "workers": 1,
            "worker_class": "gevent",
            "worker_connections": 10_000,
            "backlog": 4096,
            "keepalive": 75,
            "timeout": 120,
            "graceful_timeout": 1,
            "accesslog": None,
            "loglevel": "warning",
        }
    ).run()


if __name__ == "__main__":
    main()
