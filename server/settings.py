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
SOURCE_NAMES: tuple[SourceName, ...] = typing.get_args(SourceName)
#: The URL schemes ``store`` accepts besides ``memory`` (redis-py's).
STORE_SCHEMES = ("redis://", "rediss://", "unix://")


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
    """``hf``: hub name or local path (default ``openai-community/gpt2``).
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

    # --- store and processes ---
    store: str = "memory"
    """Where stream logs live: ``memory`` (this process only) or a Redis URL,
    ``redis://HOST:PORT/DB``, shared by every process that names it."""
    workers: int = 1
    """Processes serving the same port (SO_REUSEPORT); more than 1 needs a Redis store."""
    node_id: str = ""
    """This process's name in logs and metrics (default: host and pid)."""
    redis_max_connections: int = 16
    """Connections to Redis per process for commands (plus one for reading new events)."""
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
        if self.max_log_events < 2:
            raise ValueError("max_log_events must be >= 2")
        if not (self.store == "memory" or self.store.startswith(STORE_SCHEMES)):
            raise ValueError(
                f"store must be 'memory' or a Redis URL (redis://HOST:PORT/DB), got {self.store!r}"
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
        if self.auth_token is not None and (
            not self.auth_token or any(c.isspace() for c in self.auth_token)
        ):
            # An empty token (an unset shell variable) must not turn authentication off.
            raise ValueError("auth_token must be a non-empty string without whitespace")
        # A bad origin or host list fails here, naming the setting.
        HostList.parse(self.allowed_hosts, self.host)
        OriginList.parse(self.ws_allowed_origins, "ws_allowed_origins")
        OriginList.parse(self.cors_origins, "cors_origins")

    @property
    def node(self) -> str:
        """``node_id``, or host and pid."""
        return self.node_id or f"{socket.gethostname()}-{os.getpid()}"

    @property
    def hf_model(self) -> str:
        return self.model or "openai-community/gpt2"

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


#: ``--help`` text for the flags whose field name alone does not say enough.
FLAG_HELP = {
    "host": "interface to listen on",
    "port": "TCP port",
    "source": "default token source (synthetic is always enabled too)",
    "model": "hf: hub name or local path; openai: upstream model name",
    "base_url": "openai: an OpenAI-compatible base URL (or OPENAI_BASE_URL)",
    "api_key": "openai: API key (or OPENAI_API_KEY)",
    "tokens_per_s": "synthetic default pace; 0 = as fast as possible",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`Settings` field: ``max_live_streams`` is ``--max-live-streams``."""
    hints = typing.get_type_hints(Settings)
    for f in dataclasses.fields(Settings):
        hint = hints[f.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        kind = args[0] if args and typing.get_origin(hint) is not Literal else hint
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{FLAG_HELP.get(f.name, f.name.replace('_', ' '))} (default: {f.default})"
        if typing.get_origin(hint) is Literal:
            parser.add_argument(flag, choices=typing.get_args(hint), default=None, help=help_text)
        elif kind in (int, float, str):
            parser.add_argument(flag, type=kind, default=None, help=help_text)


def from_args(ns: argparse.Namespace) -> Settings:
    """Settings from parsed flags over the environment (flags win)."""
    overrides = {f.name: getattr(ns, f.name, None) for f in dataclasses.fields(Settings)}
    return Settings.from_env(**overrides)
