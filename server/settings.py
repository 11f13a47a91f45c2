"""All server configuration in one frozen dataclass, read from flags and the environment.

Every field can be set by the ``TOKENWIRE_<FIELD>`` environment variable (upper case) or
the matching ``tokenwire serve --<field-with-dashes>`` flag; flags win over the environment.
The OpenAI source also honours the SDK's own ``OPENAI_API_KEY`` and ``OPENAI_BASE_URL``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from server.allowlists import HostList, OriginList

SourceName = Literal["synthetic", "hf", "openai"]

#: The ranges of the connection bounds (0 turns each off), checked at start.
CONNECTION_RANGES: dict[str, tuple[float, float]] = {
    "header_timeout_s": (0, 3600),
    "body_timeout_s": (0, 3600),
    "idle_timeout_s": (0, 3600),
    "max_connections_per_client": (0, 1_000_000),
}
SOURCE_NAMES: tuple[SourceName, ...] = typing.get_args(SourceName)
#: The URL schemes ``store`` accepts besides ``memory``: redis-py's for one Redis, and
#: the same with ``+cluster`` for a Redis Cluster (one startup node; the rest are found).
STORE_SCHEMES = ("redis://", "rediss://", "unix://")
CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")


def cluster_url(store: str) -> str | None:
    """redis-py's URL for the cluster a ``redis+cluster://`` store names; None if it names
    no cluster."""
    if not store.startswith(CLUSTER_SCHEMES):
        return None
    return store.replace("+cluster", "", 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Server settings. Defaults are what ``make run`` serves."""

    # --- listening ---
    host: str = "127.0.0.1"
    port: int = 8080
    backlog: int = 4096

    # --- sources ---
    source: SourceName = "synthetic"
    """Default source; ``synthetic`` is always enabled as well."""
    model: str | None = None
    """``hf``: hub name or local path (required).
    ``openai``: the model name sent upstream (default ``gpt-4o-mini``)."""
    base_url: str | None = None
    """``openai``: an OpenAI-compatible base URL (default: the SDK's, or OPENAI_BASE_URL)."""
    api_key: str | None = None
    hf_device: str = "cpu"
    hf_max_concurrent: int = 1
    openai_timeout_s: float = 60.0
    openai_max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    """Reasoning models on api.openai.com want ``max_completion_tokens``."""

    # --- synthetic source pacing (defaults; requests override within the caps) ---
    ttft_ms: float = 200.0
    tokens_per_s: float = 30.0
    jitter: float = 0.2
    seed: int = 0
    max_ttft_ms: float = 10_000.0
    max_tokens_per_s: float = 5_000.0
    max_unpaced_streams: int = 8
    """How many streams may run with ``tokens_per_s=0`` (as fast as possible) at once."""
    max_total_tokens_per_s: float = 100_000.0
    """The sum of the paces (``tokens_per_s``) the live paced streams may ask for; 0: no
    limit. With ``max_unpaced_streams`` it bounds what requests can make the source emit."""

    # --- caps ---
    default_max_tokens: int = 256
    max_tokens_cap: int = 4096
    max_prompt_chars: int = 8_000
    max_body_bytes: int = 64 * 1024
    max_live_streams: int = 1_000
    max_streams_per_client: int = 64
    max_log_events: int = 10_000
    """Events kept per stream; older positions answer ``gone``."""
    generation_timeout_s: float = 600.0

    # --- lifetimes ---
    retention_s: float = 300.0
    grace_s: float = 10.0
    heartbeat_s: float = 15.0
    send_timeout_s: float = 30.0
    sse_retry_ms: int = 1_000
    poll_timeout_s: float = 25.0
    max_poll_timeout_s: float = 60.0
    shutdown_timeout_s: float = 5.0
    shutdown_drain_s: float = 0.5
    """On stop: how long clients may still fetch the final events before the listener closes."""

    # --- WebSocket ---
    ws_max_msg_bytes: int = 64 * 1024
    ws_max_msgs_per_s: float = 50.0
    ws_heartbeat_s: float = 20.0
    ws_auth_timeout_s: float = 10.0
    """With ``auth_token``: how long a socket without the header may wait before its
    ``{"op":"auth"}`` message; then it is closed with 1008."""

    # --- connections: bounds against slow and hostile clients (docs/guarantees.md) ---
    header_timeout_s: float = 10.0
    """Time to send a request's line and headers: from the connection's start, or from the
    first byte of a later request. Then 408 (if anything came) and the connection closes."""
    body_timeout_s: float = 30.0
    """Time to send a whole request body; then ``408 request_timeout`` and close."""
    idle_timeout_s: float = 75.0
    """How long a kept-alive connection may sit idle between requests; then it closes."""
    max_connections_per_client: int = 2048
    """Open connections from one client address; one more is refused with ``429
    too_many_connections`` and closed (0: no limit). Behind a proxy every client has the
    proxy's address: raise it, or 0."""

    # --- store and processes ---
    store: str = "memory"
    """Where stream logs live: ``memory`` (this process only), a Redis URL,
    ``redis://HOST:PORT/DB``, or a Redis Cluster's, ``redis+cluster://HOST:PORT`` (one
    node; the others are discovered), shared by every process that names it."""
    workers: int = 1
    """Processes serving the same port (SO_REUSEPORT); more than 1 needs a Redis store."""
    node_id: str = ""
    """This process's name in logs and metrics (default: host and pid)."""
    redis_max_connections: int = 16
    """Connections to Redis per process for commands (plus one for reading new events);
    on a Redis Cluster, per cluster node (plus one per node for the news of its streams)."""
    redis_write_linger_ms: float = 0.0
    """How long the Redis store's writer waits before each round trip, so that more events
    share it: less CPU per token at a pace, that much more latency (0: none)."""
    max_retained_bytes: int = 256 * 1024 * 1024
    """Memory the logs of finished streams (kept ``retention_s`` for late readers) may take
    in all; past it the oldest finished streams are forgotten first (``410 gone``). 0: no
    limit."""
    max_retained_bytes_per_client: int = 64 * 1024 * 1024
    """The same bound for the finished streams of one client (its oldest go first)."""
    max_retained_events: int = 4_000_000
    """Events the logs of finished streams may keep in all (oldest streams forgotten first)."""
    max_retained_events_per_client: int = 1_000_000
    """The same bound for the finished streams of one client."""

    # --- who may talk to the server (docs/protocol.md#security) ---
    auth_token: str | None = field(default=None, repr=False)
    """When set, every API route (``/api/*`` but ``/api/info``, ``/v1/*``, ``/metrics``)
    needs ``Authorization: Bearer <token>``; a WebSocket may send it in its first message."""
    ws_allowed_origins: str = ""
    """Origins (``scheme://host[:port]``, comma-separated, or ``*``) whose pages may open a
    WebSocket, besides the server's own origin. A handshake without ``Origin`` (not a
    browser) is always allowed."""
    cors_origins: str = ""
    """Origins (comma-separated, or ``*``) whose pages may call the HTTP API (CORS). Empty:
    CORS off, and a request from another origin is refused (403 ``origin_not_allowed``)."""
    allowed_hosts: str = ""
    """``Host`` names the server answers to (comma-separated, or ``*``). Empty: loopback
    names only when listening on a loopback address (against DNS rebinding), else any."""

    def __post_init__(self) -> None:
        if self.source not in SOURCE_NAMES:
            raise ValueError(f"source must be one of {', '.join(SOURCE_NAMES)}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
                raise ValueError(f"{f.name} must be >= 0, got {value}")
        if self.max_tokens_cap < 1 or self.default_max_tokens < 1:
            raise ValueError("max_tokens_cap and default_max_tokens must be >= 1")
        if self.default_max_tokens > self.max_tokens_cap:  # a lower cap lowers the default
            object.__setattr__(self, "default_max_tokens", self.max_tokens_cap)
        for name, (low, high) in CONNECTION_RANGES.items():
            if not low <= getattr(self, name) <= high:
                raise ValueError(f"{name} must be from {low:g} to {high:g} (0: off)")
        if self.max_log_events < 2:
            raise ValueError("max_log_events must be >= 2")
        if not (self.store == "memory" or self.store.startswith(STORE_SCHEMES + CLUSTER_SCHEMES)):
            raise ValueError(
                "store must be 'memory', a Redis URL (redis://HOST:PORT/DB) or a Redis "
                f"Cluster's (redis+cluster://HOST:PORT), got {self.store!r}"
            )
        if cluster_url(self.store) is not None:
            path = self.store.split("://", 1)[1].partition("?")[0]
            if path.partition("/")[2] not in ("", "0"):
                raise ValueError(
                    f"a Redis Cluster has only database 0: store {self.store!r} names another"
                )
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        if self.workers > 1 and self.store == "memory":
            raise ValueError(
                "workers > 1 needs a shared store (--store redis://HOST:PORT/DB): "
                "the memory store lives in one process, so a stream made on one worker "
                "would be unknown to the others"
            )
        if self.redis_max_connections < 1:
            raise ValueError("redis_max_connections must be >= 1")
        if not 0 <= self.redis_write_linger_ms <= 100:
            raise ValueError("redis_write_linger_ms must be between 0 and 100")
        if self.auth_token is not None and (
            not self.auth_token or any(c.isspace() for c in self.auth_token)
        ):
            # An empty token (an unset shell variable) must not turn authentication off.
            raise ValueError("auth_token must be a non-empty string without whitespace")
        if self.source == "hf" and not self.model:
            # Without it the hub would be tried (and retried, offline) for a default model.
            raise ValueError(
                "source hf needs a model: --model (TOKENWIRE_MODEL), a local model directory "
                "or a hub id such as openai-community/gpt2"
            )
        if self.source == "openai" and not (
            self.api_key
            or self.base_url
            or os.environ.get("OPENAI_API_KEY")
            or os.environ.get("OPENAI_BASE_URL")
        ):
            raise ValueError(
                "source openai needs an API key: --api-key or OPENAI_API_KEY (a local "
                "OpenAI-compatible server needs none: --base-url or OPENAI_BASE_URL)"
            )
        # A bad origin or host list fails here, naming the setting.
        HostList.parse(self.allowed_hosts, self.host)
        OriginList.parse(self.ws_allowed_origins, "ws_allowed_origins")
        OriginList.parse(self.cors_origins, "cors_origins")

    @property
    def node(self) -> str:
        """``node_id``, or host and pid."""
        return self.node_id or f"{socket.gethostname()}-{os.getpid()}"

    @property
    def log_open_ttl_s(self) -> float:
        """How long a shared store keeps a log that never ends (its process died, or the
        store failed under it and never answered again): a generation's time limit
        (an hour without one), then ``retention_s``, and a minute to spare."""
        return (self.generation_timeout_s or 3600.0) + self.retention_s + 60

    @property
    def hf_model(self) -> str:
        """The ``hf`` model (``__post_init__`` refuses ``source="hf"`` without one)."""
        return self.model or ""

    @property
    def openai_model(self) -> str:
        return self.model or "gpt-4o-mini"

    @property
    def enabled_sources(self) -> tuple[SourceName, ...]:
        """The sources a request may name: ``synthetic`` plus the configured default."""
        return ("synthetic",) if self.source == "synthetic" else ("synthetic", self.source)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``TOKENWIRE_*`` variables, then apply ``overrides``."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            raw = env.get(f"TOKENWIRE_{f.name.upper()}")
            if raw is not None:
                values[f.name] = _parse(f.name, hints[f.name], raw)
        if "api_key" not in values and env.get("OPENAI_API_KEY"):
            values["api_key"] = env["OPENAI_API_KEY"]
        if "base_url" not in values and env.get("OPENAI_BASE_URL"):
            values["base_url"] = env["OPENAI_BASE_URL"]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _parse(name: str, hint: Any, raw: str) -> Any:
    """Convert an environment string to the field's type."""
    args = typing.get_args(hint)
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    if typing.get_origin(hint) is Literal:
        return raw
    try:
        if base is bool:
            return raw.lower() in ("1", "true", "yes", "on")
        if base is int:
            return int(raw)
        if base is float:
            return float(raw)
    except ValueError:
        raise ValueError(f"TOKENWIRE_{name.upper()}: not a number: {raw!r}") from None
    return raw


#: ``tokenwire serve --help``: one sentence per flag (its default is added after it).
FLAG_HELP: dict[str, str] = {
    # listening
    "host": "Interface to listen on; anything but a loopback address lets other machines in "
    "(see --allowed-hosts and --auth-token).",
    "port": "TCP port to listen on.",
    "backlog": "Connections the kernel queues before the server accepts them (many clients "
    "connecting at once need more than 128).",
    # sources
    "source": "The token source requests get by default; synthetic is always enabled too.",
    "model": "hf: a local model directory or a hub id (required with --source hf); openai: "
    "the model name sent upstream (default gpt-4o-mini).",
    "base_url": "openai: an OpenAI-compatible base URL, e.g. another server's /v1 (or "
    "OPENAI_BASE_URL).",
    "api_key": "openai: the API key (or OPENAI_API_KEY); a --base-url server may need none.",
    "hf_device": "hf: the torch device the model runs on, e.g. cpu or cuda.",
    "hf_max_concurrent": "hf: generations that run at once; more wait their turn.",
    "openai_timeout_s": "openai: seconds to wait for the upstream before the stream fails "
    "with upstream_timeout.",
    "openai_max_tokens_field": "openai: the request field that carries max_tokens "
    "(reasoning models on api.openai.com want max_completion_tokens).",
    # synthetic pacing
    "ttft_ms": "Synthetic: default milliseconds before the first token.",
    "tokens_per_s": "Synthetic: default pace in tokens per second; 0 sends as fast as possible.",
    "jitter": "Synthetic: default spread of the gaps between tokens, relative to the pace "
    "(0 to 1).",
    "seed": "Synthetic: default seed; with the prompt it picks the text.",
    "max_ttft_ms": "Synthetic: the largest ttft_ms a request may ask for.",
    "max_tokens_per_s": "Synthetic: the largest tokens_per_s a request may ask for.",
    "max_unpaced_streams": "Synthetic: streams that may run with tokens_per_s=0 at once; "
    "more are refused with 503.",
    "max_total_tokens_per_s": "Synthetic: the sum of the paces the live paced streams may ask "
    "for; more is refused with 503 (0: no limit).",
    # caps
    "default_max_tokens": "Tokens generated when a request does not say max_tokens.",
    "max_tokens_cap": "The largest max_tokens a request may ask for.",
    "max_prompt_chars": "The longest prompt accepted, in characters (413 beyond).",
    "max_body_bytes": "The largest request body accepted, in bytes (413 beyond).",
    "max_live_streams": "Streams generating at once, in total (503 beyond).",
    "max_streams_per_client": "Live streams one client address may create (429 beyond).",
    "max_log_events": "Events kept per stream for late readers and resumes; older "
    "positions answer 410 gone.",
    "generation_timeout_s": "Seconds a generation may run before it ends with a "
    "generation_timeout error.",
    # lifetimes
    "retention_s": "Seconds a finished stream stays readable; then it answers 410 gone.",
    "grace_s": "Seconds a stream may go without a reader before it is cancelled.",
    "heartbeat_s": "Seconds of silence after which SSE, chunked and /v1 responses get a "
    "keep-alive line.",
    "send_timeout_s": "Seconds a reader may leave its bytes untaken before it is dropped.",
    "sse_retry_ms": "The retry: delay SSE tells EventSource to wait before reconnecting.",
    "poll_timeout_s": "Seconds a long poll waits for events when the request does not say.",
    "max_poll_timeout_s": "The longest wait a long poll may ask for.",
    "shutdown_timeout_s": "On stop: seconds open responses get to finish.",
    "shutdown_drain_s": "On stop: seconds clients may still fetch the final events before "
    "the listener closes.",
    # WebSocket
    "ws_max_msg_bytes": "The largest WebSocket message accepted (close 1009 beyond).",
    "ws_max_msgs_per_s": "WebSocket messages per second a socket may send, bursts included "
    "(close 1008 beyond).",
    "ws_heartbeat_s": "Seconds between the server's WebSocket pings.",
    "ws_auth_timeout_s": "With --auth-token: seconds a socket without the header may take to "
    'send {"op":"auth"} (close 1008 after).',
    # security
    "auth_token": "When set, every API route needs Authorization: Bearer <token> (a "
    "WebSocket may send it as its first message).",
    "ws_allowed_origins": "Origins (comma-separated, or *) whose pages may open a WebSocket, "
    "besides the server's own.",
    "cors_origins": "Origins (comma-separated, or *) whose pages may call the HTTP API; empty: "
    "CORS off.",
    "allowed_hosts": "Host names the server answers to (comma-separated, or *); empty: "
    "loopback names on a loopback address, any name otherwise.",
    # store and processes
    "max_retained_bytes": "Memory the logs of finished streams may take in all; past it the "
    "oldest are forgotten first (410 gone; 0: no limit).",
    "max_retained_bytes_per_client": "The same memory bound for one client's finished "
    "streams (its oldest go first).",
    "max_retained_events": "Events the logs of finished streams may keep in all; the oldest "
    "streams are forgotten first.",
    "max_retained_events_per_client": "The same event bound for one client's finished "
    "streams (its oldest go first).",
    # connections
    "header_timeout_s": "Seconds a client has to send a request's line and headers (from the "
    "connection's start, or a later request's first byte); then 408 and the connection closes.",
    "body_timeout_s": "Seconds a client has to send a whole request body; then 408 and the "
    "connection closes, with nothing created.",
    "idle_timeout_s": "Seconds a kept-alive connection may sit idle between requests before "
    "it is closed.",
    "max_connections_per_client": "Open connections one client address may hold; one more "
    "is refused with 429 too_many_connections (0: no limit; behind a proxy every client has "
    "the proxy's address).",
    "redis_max_connections": "Connections each process keeps to Redis for commands (one more "
    "reads new events for all of its readers); on a Redis Cluster, per node.",
    "redis_write_linger_ms": "With a Redis store: wait this long before each write round trip, "
    "so that more events share it (less CPU per token at a pace, that much more latency; "
    "0: none).",
    "store": "Where stream logs live: memory (this process only), a Redis URL "
    "(redis://HOST:PORT/DB) or a Redis Cluster's (redis+cluster://HOST:PORT, one node), or "
    "TOKENWIRE_STORE; shared by every process that names it.",
    "workers": "Processes that serve the same port (SO_REUSEPORT); more than 1 needs a Redis "
    "--store.",
    "node_id": "This process's name in logs and metrics (default: the host name and pid).",
}

#: ``tokenwire serve --help``'s sections, in order: a title, a sentence, the fields. A field
#: named here that ``Settings`` does not have is skipped; a field no section names is listed
#: under "other".
FLAG_GROUPS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("listening", "Where the server listens.", ("host", "port", "backlog")),
    (
        "sources",
        "Where the tokens come from: synthetic (always on), hf (a local model) or openai "
        "(an OpenAI-compatible upstream).",
        (
            "source",
            "model",
            "base_url",
            "api_key",
            "hf_device",
            "hf_max_concurrent",
            "openai_timeout_s",
            "openai_max_tokens_field",
        ),
    ),
    (
        "synthetic pacing",
        "The synthetic source's defaults (requests override them within the caps) and caps.",
        (
            "ttft_ms",
            "tokens_per_s",
            "jitter",
            "seed",
            "max_ttft_ms",
            "max_tokens_per_s",
            "max_unpaced_streams",
            "max_total_tokens_per_s",
        ),
    ),
    (
        "caps",
        "What one request or one client may ask for.",
        (
            "default_max_tokens",
            "max_tokens_cap",
            "max_prompt_chars",
            "max_body_bytes",
            "max_live_streams",
            "max_streams_per_client",
            "max_log_events",
            "generation_timeout_s",
        ),
    ),
    (
        "lifetimes",
        "How long streams, readers and the server itself wait.",
        (
            "retention_s",
            "grace_s",
            "heartbeat_s",
            "send_timeout_s",
            "sse_retry_ms",
            "poll_timeout_s",
            "max_poll_timeout_s",
            "shutdown_timeout_s",
            "shutdown_drain_s",
        ),
    ),
    (
        "WebSocket",
        "Limits and keep-alive of /api/ws.",
        ("ws_max_msg_bytes", "ws_max_msgs_per_s", "ws_heartbeat_s", "ws_auth_timeout_s"),
    ),
    (
        "connections",
        "Bounds against slow and hostile clients (docs/guarantees.md).",
        ("header_timeout_s", "body_timeout_s", "idle_timeout_s", "max_connections_per_client"),
    ),
    (
        "security",
        "Who may talk to the server (docs/protocol.md, Security).",
        ("auth_token", "ws_allowed_origins", "cors_origins", "allowed_hosts"),
    ),
    (
        "store and processes",
        "Where the stream logs live, and how many server processes share them.",
        (
            "store",
            "store_url",
            "redis_url",
            "workers",
            "node_id",
            "redis_max_connections",
            "redis_write_linger_ms",
            "max_retained_bytes",
            "max_retained_bytes_per_client",
            "max_retained_events",
            "max_retained_events_per_client",
        ),
    ),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`Settings` field (``max_live_streams`` is ``--max-live-streams``),
    in the sections of :data:`FLAG_GROUPS`, each with its :data:`FLAG_HELP` sentence."""
    hints = typing.get_type_hints(Settings)
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    grouped = {name for _, _, names in FLAG_GROUPS for name in names}
    other = tuple(name for name in fields if name not in grouped)
    sections = [*FLAG_GROUPS, ("other", "More settings.", other)]
    for title, about, names in sections:
        present = [fields[n] for n in names if n in fields]
        if not present:
            continue
        group = parser.add_argument_group(title, about)
        for f in present:
            hint = hints[f.name]
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            kind = args[0] if args and typing.get_origin(hint) is not Literal else hint
            flag = "--" + f.name.replace("_", "-")
            default = "" if f.name in SECRET_FIELDS else f" (default: {f.default})"
            help_text = FLAG_HELP.get(f.name, f.name.replace("_", " ")) + default
            if typing.get_origin(hint) is Literal:
                group.add_argument(
                    flag, choices=typing.get_args(hint), default=None, help=help_text
                )
            elif kind in (int, float, str):
                group.add_argument(flag, type=kind, default=None, help=help_text)


#: Fields whose default ``--help`` does not print.
SECRET_FIELDS = frozenset({"api_key", "auth_token"})


def from_args(ns: argparse.Namespace) -> Settings:
    """Settings from parsed flags over the environment (flags win)."""
    overrides = {f.name: getattr(ns, f.name, None) for f in dataclasses.fields(Settings)}
    return Settings.from_env(**overrides)
