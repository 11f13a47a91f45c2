"""Locust users for tokenwire: one per transport and per dialect (``/v1`` Chat Completions,
Responses, Anthropic Messages), and fan-out subscribers of one shared stream.

Every user reads whole streams with the clients' decoders, checks each one with
:class:`clients.check.StreamCheck` and reports through Locust's request event (request
type: the transport's label, ``SSE`` ... ``OPENAI``, ``RESPONSES``, ``ANTHROPIC``,
``SSE-FANOUT`` ...; name: the metric).
Locust runs on gevent: the users read with ``FastHttpUser`` (geventhttpclient) and
``websocket-client``, never asyncio. What each row means and how to run it: docs/bench.md.
"""

from __future__ import annotations

import os
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import gevent
import orjson
import websocket
from locust import FastHttpUser, User, constant, events, stats, tag
from locust.argument_parser import LocustArgumentParser
from locust.contrib.fasthttp import FastResponse
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import STATE_RUNNING, WorkerRunner

from bench.dialects import ROUTES, DialectReader, request_body
from bench.stats import response_head_bytes
from clients.check import IncompleteStream, StreamCheck
from clients.decoders import NDJSONDecoder, SSEDecoder, ws_frame_header
from wire import Reader

JSON = {"Content-Type": "application/json"}
_locust_bucket = stats.bucket_response_time


def fine_bucket(response_time: float) -> float:
    """Locust keeps response times rounded to whole milliseconds under 100 ms; loopback
    latencies are fractions of one, so keep tenths below 10 ms (Locust's documented hook
    for custom bucketing; the rest is Locust's own rounding)."""
    if 0 <= response_time < 10:
        return round(response_time, 1)
    return _locust_bucket(response_time)


stats.bucket_response_time = fine_bucket  # type: ignore[assignment]  # (tenths: floats)


@events.init_command_line_parser.add_listener
def _add_options(parser: LocustArgumentParser) -> None:
    group = parser.add_argument_group("tokenwire")
    group.add_argument("--tw-tokens", type=int, default=200, help="max_tokens of each stream")
    group.add_argument("--tw-pace", type=float, default=20.0, help="tokens_per_s of each stream")
    group.add_argument("--tw-ttft-ms", type=float, default=200.0, help="ttft_ms of each stream")
    group.add_argument(
        "--tw-poll-timeout", type=float, default=10.0, help="server-side wait of one long poll"
    )
    group.add_argument(
        "--tw-run-time",
        type=float,
        default=0.0,
        help="seconds; then stop, letting every stream in flight finish (up to --stop-timeout), "
        "also in distributed mode, where Locust's --run-time quits the workers at once",
    )
    group.add_argument(
        "--tw-stream",
        default="",
        help="fan-out: the shared stream's id (default: created when the test starts)",
    )
    group.add_argument(
        "--tw-token",
        default=os.environ.get("TOKENWIRE_AUTH_TOKEN", ""),
        help="the server's bearer token (default: TOKENWIRE_AUTH_TOKEN)",
    )


def auth_headers(env: Environment) -> dict[str, str]:
    """``Authorization: Bearer …`` for a server started with ``--auth-token``."""
    token = _option(env, "tw_token")
    return {"Authorization": f"Bearer {token}"} if token else {}


def _option(env: Environment, name: str) -> Any:
    return getattr(env.parsed_options, name)


def source_params(env: Environment, ttft_ms: float | None = None) -> dict[str, float]:
    """The synthetic source at a fixed pace: no jitter, so every gap is 1/pace."""
    ttft = _option(env, "tw_ttft_ms") if ttft_ms is None else ttft_ms
    return {"tokens_per_s": _option(env, "tw_pace"), "ttft_ms": ttft, "jitter": 0}


def http_failure(resp: FastResponse, what: str) -> IncompleteStream:
    error = getattr(resp, "error", None)
    if error is not None:
        return IncompleteStream(f"{what}: {error!r}")
    body = (resp.content or b"")[:200].decode(errors="replace")
    return IncompleteStream(f"{what}: HTTP {resp.status_code} {body}")


def body_as_it_arrives(resp: FastResponse) -> Iterator[bytes]:
    """The response body (de-chunked), each block as soon as the socket has it, for the
    decoders. (``FastResponse.iter_content(n)`` waits until ``n`` bytes are buffered, which
    holds paced tokens back; this reads geventhttpclient's response as its ``readline``
    does, without looking for any separator.)"""
    raw = resp._response
    if raw is None:
        return
    try:
        while True:
            if raw._body_buffer:
                block = bytes(raw._body_buffer)
                del raw._body_buffer[:]
                yield block
            elif raw.message_complete:
                return
            elif raw._sock is None:
                raise IncompleteStream("the connection closed before the end of the body")
            else:
                data = raw._sock.recv(raw.block_size)
                raw.feed(data)
                if not data and not raw.message_complete:
                    raise IncompleteStream("the connection closed before the end of the body")
    finally:
        raw.release()  # back to the pool when the body was read to its end, else closed


class TokenwireUser(FastHttpUser):
    """What every tokenwire user shares: stream bodies, the check and the reporting."""

    abstract = True
    wait_time = constant(0)
    connection_timeout = 30.0
    transport: ClassVar[Reader]
    """``sse``, ``ws``, ``poll``, ``chunked``, ``openai``, ``responses`` or ``anthropic``:
    reads with ``read_<transport>``."""
    scenario: ClassVar[str]
    """``streams`` or ``fanout``."""
    label: ClassVar[str]
    """Request type of this user's rows: ``SSE``, ``WS``, ... (fan-out: ``SSE-FANOUT``)."""
    _ws: websocket.WebSocket | None = None
    deadline: ClassVar[float] = float("inf")
    """``time.monotonic()`` after which no new stream starts (``--tw-run-time``)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A concrete user names its transport; it gets its label and one task,
        tagged with its scenario and its label in lower case (``--tags streams``,
        ``--tags sse``, ``--tags sse-fanout``)."""
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("abstract"):
            return
        suffix = "-FANOUT" if cls.scenario == "fanout" else ""
        cls.label = cls.transport.upper() + suffix

        def next_stream(user: TokenwireUser) -> None:
            user.next()

        cls.tasks = [tag(cls.scenario, cls.label.lower())(next_stream)]

    def next(self) -> None:
        """Read the next stream (the task)."""
        raise NotImplementedError

    def on_start(self) -> None:
        self.streams = 0
        # FastHttpSession's own header for every request (meant for basic auth in the URL).
        self.client.auth_header = auth_headers(self.environment).get("Authorization")

    def stream_body(self) -> dict[str, Any]:
        self.streams += 1
        return {
            "prompt": f"bench {self.label} user {id(self):x} stream {self.streams}",
            "max_tokens": _option(self.environment, "tw_tokens"),
            "params": source_params(self.environment),
        }

    def report(self, name: str, ms: float, nbytes: int, exc: BaseException | None = None) -> None:
        self.environment.events.request.fire(
            request_type=self.label,
            name=name,
            response_time=ms,
            response_length=nbytes,
            exception=exc,
            context={},
        )

    def check_stream(self, read: Callable[[StreamCheck], None], stream_id: str | None) -> bool:
        """Read one stream with ``read``; report it, as a failure if it was not whole.
        True if it was whole."""
        max_tokens = _option(self.environment, "tw_tokens") if stream_id is None else None
        sent = time.time_ns()
        check = StreamCheck(self.report, sent_ns=sent, max_tokens=max_tokens, stream_id=stream_id)
        error: Exception | None = None
        try:
            read(check)
            check.end()
        except Exception as e:  # every way a stream can go wrong is a failure, none is dropped
            error = e
        self.report("stream_total", (time.time_ns() - sent) / 1e6, check.bytes, error)
        return error is None

    # --- the transports: each reads a new stream (body) or a shared one (check.stream_id)

    def read(self, check: StreamCheck, body: dict[str, Any] | None) -> None:
        """Read one stream over this user's transport (one of the ``read_*`` below)."""
        reader: Callable[[StreamCheck, dict[str, Any] | None], None]
        reader = getattr(self, f"read_{self.transport}")
        reader(check, body)

    def read_sse(self, check: StreamCheck, body: dict[str, Any] | None) -> None:
        if body is not None:
            resp = self.client.post(
                "/api/sse", data=orjson.dumps(body).decode(), headers=JSON, stream=True
            )
        else:
            url = f"/api/streams/{check.stream_id}/sse"
            resp = self.client.get(url, name="/api/streams/[id]/sse", stream=True)
        if resp.status_code != 200:
            raise http_failure(resp, "SSE")
        decoder = SSEDecoder()
        for block in body_as_it_arrives(resp):
            now = time.time_ns()
            check.received(len(block))
            for msg in decoder.feed(block):
                ev = orjson.loads(msg.data)
                if msg.event != ev.get("type") or msg.last_event_id != str(ev.get("seq", "")):
                    raise IncompleteStream(f"SSE event/id fields do not match {msg.data[:200]}")
                check.event(ev, now)

    def read_chunked(self, check: StreamCheck, body: dict[str, Any] | None) -> None:
        if body is not None:
            data = orjson.dumps(body).decode()
            resp = self.client.post("/api/chunked", data=data, headers=JSON, stream=True)
        else:
            url = f"/api/streams/{check.stream_id}/chunked"
            resp = self.client.get(url, name="/api/streams/[id]/chunked", stream=True)
        if resp.status_code != 200:
            raise http_failure(resp, "chunked")
        decoder = NDJSONDecoder()
        for block in body_as_it_arrives(resp):
            now = time.time_ns()
            check.received(len(block))
            for ev in decoder.feed(block):
                check.event(ev, now)

    def read_poll(self, check: StreamCheck, body: dict[str, Any] | None) -> None:
        if body is not None:
            resp = self.client.post("/api/streams", data=orjson.dumps(body).decode(), headers=JSON)
            if resp.status_code != 201:
                raise http_failure(resp, "create")
            check.stream_id = str(resp.json()["id"])
        url = f"/api/streams/{check.stream_id}/poll"
        timeout = _option(self.environment, "tw_poll_timeout")
        after = -1
        for _ in range(_option(self.environment, "tw_tokens") + 1000):  # polls, bounded
            resp = self.client.get(
                f"{url}?after={after}&timeout={timeout:g}", name="/api/streams/[id]/poll"
            )
            now = time.time_ns()
            if resp.status_code != 200:
                raise http_failure(resp, "poll")
            headers = resp.headers.items() if resp.headers is not None else ()
            check.received(len(resp.content or b"") + response_head_bytes("OK", headers))
            page = orjson.loads(resp.content or b"")
            for ev in page["events"]:
                check.event(ev, now)
            after = page["next"]
            if page["done"]:
                return
        raise IncompleteStream("poll: no end after the maximum number of polls")

    def read_ws(self, check: StreamCheck, body: dict[str, Any] | None) -> None:
        if body is not None:
            op = {"op": "generate", **body}
        else:
            op = {"op": "subscribe", "stream": check.stream_id, "after": -1}
        ws = self.websocket()
        try:
            ws.send(orjson.dumps(op).decode())
            while not check.finished:
                opcode, data = ws.recv_data()
                now = time.time_ns()
                if opcode != websocket.ABNF.OPCODE_TEXT:
                    raise IncompleteStream(f"WebSocket opcode {opcode}: {data[:200]!r}")
                check.received(len(data) + ws_frame_header(len(data)))
                check.event(orjson.loads(data), now)
        except BaseException:
            self.close_websocket()  # unknown state: the next stream gets a new socket
            raise

    def websocket(self) -> websocket.WebSocket:
        """This user's one socket: several streams share it, as a chat client's would."""
        ws = self._ws
        if ws is None:
            assert self.host, "--host is required"
            url = "ws" + self.host.removeprefix("http") + "/api/ws"
            start = time.perf_counter()
            error: Exception | None = None
            try:
                ws = websocket.create_connection(
                    url,
                    timeout=self.network_timeout,
                    skip_utf8_validation=True,
                    header=[f"{k}: {v}" for k, v in auth_headers(self.environment).items()],
                )
            except Exception as e:
                error = e
                raise
            finally:
                self.report("connect", (time.perf_counter() - start) * 1000, 0, error)
            self._ws = ws
        return ws

    def close_websocket(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            ws.close(timeout=1)

    def on_stop(self) -> None:
        self.close_websocket()

    def read_openai(self, check: StreamCheck, body: dict[str, Any] | None) -> None:
        assert body is not None, "/v1 starts its own stream"
        request = {
            "model": "synthetic",
            "messages": [{"role": "user", "content": body["prompt"]}],
            "max_tokens": body["max_tokens"],
            "stream": True,
            "stream_options": {"include_usage": True},
            "params": body["params"],
        }
        data = orjson.dumps(request).decode()
        resp = self.client.post("/v1/chat/completions", data=data, headers=JSON, stream=True)
        if resp.status_code != 200:
            raise http_failure(resp, "/v1")
        stream_id = resp.headers.get("Tokenwire-Stream") if resp.headers else None
        check.stream_id = stream_id if isinstance(stream_id, str) else None
        decoder = SSEDecoder()
        for block in body_as_it_arrives(resp):
            now = time.time_ns()
            check.received(len(block))
            for msg in decoder.feed(block):
                if msg.data == "[DONE]":
                    check.openai_done()
                else:
                    check.openai_chunk(orjson.loads(msg.data), now)
        self.check_native_done(check)

    def check_native_done(self, check: StreamCheck) -> None:
        """A dialect carries no digest: compare the stream's own ``done`` (fetched once
        the dialect's stream ended) with what arrived."""
        if not check.finished:
            return
        url = f"/api/streams/{check.stream_id}/poll?after={check.tokens - 1}&timeout=5"
        resp = self.client.get(url, name=f"/api/streams/[id]/poll ({self.transport} check)")
        if resp.status_code == 410:
            raise IncompleteStream(
                f"{self.label} check: the stream was already forgotten (410): this client ran "
                "more than the server's --retention-s behind"
            )
        if resp.status_code != 200:
            raise http_failure(resp, f"{self.label} check")
        check.done(orjson.loads(resp.content or b"")["events"][-1])

    def read_dialect(self, check: StreamCheck, body: dict[str, Any] | None) -> None:
        """Responses or Anthropic Messages: the dialect's events fed to the check as Chat
        Completions chunks would be (:class:`bench.dialects.DialectReader`)."""
        assert body is not None, "a dialect starts its own stream"
        data = request_body(self.transport, body["prompt"], body["max_tokens"], body["params"])
        route = ROUTES[self.transport]
        resp = self.client.post(route, data=data.decode(), headers=JSON, stream=True)
        if resp.status_code != 200:
            raise http_failure(resp, route)
        stream_id = resp.headers.get("Tokenwire-Stream") if resp.headers else None
        check.stream_id = stream_id if isinstance(stream_id, str) else None
        reader = DialectReader(self.transport, check)
        decoder = SSEDecoder()
        for block in body_as_it_arrives(resp):
            now = time.time_ns()
            check.received(len(block))
            for msg in decoder.feed(block):
                reader.feed(msg.event, msg.data, now)
        self.check_native_done(check)

    read_responses = read_dialect
    read_anthropic = read_dialect


class StreamsUser(TokenwireUser):
    """Starts one stream after another, with no pause."""

    abstract = True
    scenario = "streams"

    def next(self) -> None:
        if time.monotonic() >= self.deadline:
            raise StopUser()  # the run is over; the stream in flight has finished
        if not self.check_stream(lambda check: self.read(check, self.stream_body()), None):
            gevent.sleep(1.0)  # as a client would back off, instead of a busy loop of failures


class FanoutUser(TokenwireUser):
    """Reads the one shared stream from its start, once, then stops."""

    abstract = True
    scenario = "fanout"
    shared_stream: ClassVar[str] = ""

    def next(self) -> None:
        stream_id = _option(self.environment, "tw_stream") or FanoutUser.shared_stream
        if not stream_id:
            raise StopUser("no shared stream (see --tw-stream)")
        self.check_stream(lambda check: self.read(check, None), stream_id)
        raise StopUser()


class SSEUser(StreamsUser):
    transport = "sse"


class WSUser(StreamsUser):
    transport = "ws"


class PollUser(StreamsUser):
    transport = "poll"


class ChunkedUser(StreamsUser):
    transport = "chunked"


class OpenAIUser(StreamsUser):
    transport = "openai"


class ResponsesUser(StreamsUser):
    transport = "responses"


class AnthropicUser(StreamsUser):
    transport = "anthropic"


class SSEFanout(FanoutUser):
    transport = "sse"


class WSFanout(FanoutUser):
    transport = "ws"


class PollFanout(FanoutUser):
    transport = "poll"


class ChunkedFanout(FanoutUser):
    transport = "chunked"


def _task_tags(user_class: type[User]) -> set[str]:
    return set().union(*(getattr(t, "locust_tag_set", set()) for t in user_class.tasks))


@events.init.add_listener
def _select_by_tags(environment: Environment, **_kwargs: Any) -> None:
    """``--tags sse`` runs only ``SSEUser``: leave out the classes the tags leave empty."""
    options = environment.parsed_options
    tags = set(getattr(options, "tags", None) or ())
    excluded = set(getattr(options, "exclude_tags", None) or ())
    if not tags and not excluded:
        return
    keep = [
        u
        for u in environment.user_classes
        if (not tags or _task_tags(u) & tags) and not _task_tags(u) <= excluded
    ]
    if keep:
        environment.user_classes[:] = keep


@events.test_start.add_listener
def _create_shared_stream(environment: Environment, **_kwargs: Any) -> None:
    """Fan-out without ``--tw-stream``: create the shared stream once (master or local
    runner; workers get its id with the master's options)."""
    options = environment.parsed_options
    fanout = any(issubclass(u, FanoutUser) for u in environment.user_classes)
    if not fanout or options is None or options.tw_stream:
        return
    if isinstance(environment.runner, WorkerRunner):
        return
    # The first token comes --tw-ttft-ms after every subscriber had the time to connect.
    spawn_s = (options.num_users or 1) / (options.spawn_rate or 1)
    ttft_ms = min(10_000.0, 1000 * spawn_s + options.tw_ttft_ms)
    body = {
        "prompt": "bench fan-out",
        "max_tokens": options.tw_tokens,
        "params": source_params(environment, ttft_ms),
    }
    url = f"{environment.host}/api/streams"
    headers = JSON | auth_headers(environment)
    req = urllib.request.Request(url, data=orjson.dumps(body), headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        stream_id = str(orjson.loads(resp.read())["id"])
    options.tw_stream = FanoutUser.shared_stream = stream_id


@events.test_start.add_listener
def _end_after_run_time(environment: Environment, **_kwargs: Any) -> None:
    """``--tw-run-time``: every node's users start no new stream after it, and the master
    (or the local runner) quits once no user is left."""
    options = environment.parsed_options
    if options is None or not options.tw_run_time:
        return
    TokenwireUser.deadline = time.monotonic() + options.tw_run_time
    if not isinstance(environment.runner, WorkerRunner):
        limit = options.tw_run_time + (options.stop_timeout or 0) + 5
        gevent.spawn(_quit_when_no_user_is_left, environment, limit)


def _quit_when_no_user_is_left(environment: Environment, limit_s: float) -> None:
    runner = environment.runner
    assert runner is not None
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        gevent.sleep(0.5)
        if runner.state == STATE_RUNNING and runner.user_count == 0:
            gevent.sleep(stats.CSV_STATS_INTERVAL_SEC + 0.2)  # the CSV files catch up
            break
    runner.quit()
