"""The one async interface every token source implements (:class:`TokenSource`), the
declaration of a source's request parameters (:class:`Param`), and paced output: the loop's
pacing clock (:class:`PaceClock`) and the clock-driven form a paced source may offer besides
its stream (:class:`Stepper`).
"""

from __future__ import annotations

import asyncio
import math
import typing
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Literal

from server.errors import InvalidField

FinishReason = Literal["stop", "length", "tool_calls"]
#: OpenAI's ``reasoning_effort`` values: how much reasoning a request asks for.
ReasoningEffort = Literal["low", "medium", "high"]
REASONING_EFFORTS: Final[tuple[ReasoningEffort, ...]] = typing.get_args(ReasoningEffort)


#: The seed range of sources that take any 63-bit seed (``hf``, ``synthetic``).
MAX_SEED: Final = 2**63 - 1
#: A signed 64-bit integer's range (OpenAI's ``seed``).
INT64_MIN: Final = -(2**63)

ParamType = Literal["number", "integer", "string"]


def _bound(value: float) -> str:
    """A bound as error messages write it: the 64-bit limits by name, others as ``%g``."""
    names = {MAX_SEED: "2^63-1", INT64_MIN: "-2^63"}
    if isinstance(value, int) and value in names:
        return names[value]
    return f"{value:g}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Param:
    """One request parameter of a source, declared once.

    Validation (:meth:`check`), its error message (:attr:`rule`), the OpenAPI schema
    (:meth:`schema`) and the defaults ``GET /api/info`` lists all derive from it.
    """

    name: str
    type: ParamType
    minimum: float | None = None
    maximum: float | None = None
    #: ``minimum`` itself is refused (``top_p``: greater than 0).
    exclusive_minimum: bool = False
    #: For a ``string``: the only values accepted (the synthetic ``corpus`` names).
    choices: tuple[str, ...] = ()
    #: Filled in when a request leaves it out; ``None``: the source decides (and
    #: ``description`` says how).
    default: Any = None
    description: str = ""

    @property
    def rule(self) -> str:
        """What a valid value is, as the error message says it (``must be ...``)."""
        if self.type == "string":
            if self.choices:
                return f"must be one of: {', '.join(self.choices)}"
            return "must be a non-empty string"
        kind = "a number" if self.type == "number" else "an integer"
        lo, hi = self.minimum, self.maximum
        if lo is not None and hi is not None:
            if self.exclusive_minimum:
                return f"must be {kind} greater than {_bound(lo)}, at most {_bound(hi)}"
            return f"must be {kind} from {_bound(lo)} to {_bound(hi)}"
        if lo is not None:
            return f"must be {kind} {'>' if self.exclusive_minimum else '>='} {_bound(lo)}"
        if hi is not None:
            return f"must be {kind} <= {_bound(hi)}"
        return f"must be {kind}"

    def _in_range(self, value: float) -> bool:
        lo, hi = self.minimum, self.maximum
        if lo is not None and not (value > lo if self.exclusive_minimum else value >= lo):
            return False
        return hi is None or value <= hi  # (NaN fails both comparisons)

    def check(self, value: Any) -> Any:
        """The cleaned value (a number as ``float``); raise ``InvalidField`` if not valid."""
        if self.type == "string":
            ok = isinstance(value, str) and bool(value.strip())
            ok = ok and (not self.choices or value in self.choices)
        else:
            kinds = (int, float) if self.type == "number" else (int,)
            ok = not isinstance(value, bool) and isinstance(value, kinds) and self._in_range(value)
        if not ok:
            raise InvalidField(f"params.{self.name}", self.rule)
        return float(value) if self.type == "number" else value

    def schema(self) -> dict[str, Any]:
        """The JSON Schema of a valid value (OpenAPI)."""
        out: dict[str, Any] = {"type": self.type}
        if self.choices:
            out["enum"] = list(self.choices)
        elif self.type == "string":
            out["pattern"] = r"\S"
        if self.minimum is not None:
            out["exclusiveMinimum" if self.exclusive_minimum else "minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        if self.default is not None:
            out["default"] = self.default
        if self.description:
            out["description"] = self.description
        return out


def check_param_names(params: Any, allowed: Collection[str]) -> None:
    """Refuse ``params`` that is not an object or holds a key outside ``allowed``.

    The error names the first unknown key in sorted order and lists the allowed keys, so
    every source answers the same way: ``params.<key>: unknown parameter (allowed: ...)``.
    """
    if not isinstance(params, Mapping):
        raise InvalidField("params", "must be an object")
    unknown = sorted(str(key) for key in params if key not in allowed)
    if unknown:
        raise InvalidField(
            f"params.{unknown[0]}", f"unknown parameter (allowed: {', '.join(sorted(allowed))})"
        )


def check_params(declared: Sequence[Param], params: Any) -> dict[str, Any]:
    """``params`` checked against ``declared``: the given values cleaned, the declared
    defaults filled in; ``InvalidField`` on the first bad key or value (declared order)."""
    check_param_names(params, [p.name for p in declared])
    out = {p.name: p.default for p in declared if p.default is not None}
    for p in declared:
        if p.name in params:
            out[p.name] = p.check(params[p.name])
    return out


@dataclass(frozen=True, slots=True)
class Finish:
    """Optional last item of a source's stream: why the generation ended."""

    reason: FinishReason


@dataclass(frozen=True, slots=True)
class Reasoning:
    """A piece of reasoning text, yielded beside the answer's ``str`` pieces."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a tool call. The first piece of an ``index`` opens the call (``id`` and
    ``name``; the hub makes an id if the source has none); later pieces carry the next
    characters of its argument JSON (``id``/``name`` on them are ignored)."""

    index: int
    args: str = ""
    id: str | None = None
    name: str | None = None


#: What a source's ``stream()`` yields: answer text, typed parts, and an optional ``Finish``.
SourceItem = str | Reasoning | ToolCallDelta | Finish


#: The pacing clock's tick: a paced piece is due at the first tick at or after its deadline.
#: A millisecond, the resolution of libuv's (uvloop's) timers anyway.
TICKS_PER_S = 1000


#: Ticks per slot of the clock's coarse wheel: a deadline further ahead than two slots waits
#: in a slot that ends at least one slot before it, then moves to its own tick.
COARSE_TICKS = 100


class PaceClock:
    """One loop timer per tick wakes every paced stream due in it.

    ``asyncio.sleep(delay)`` per piece is a timer (and a future) per token per stream: at
    200 streams of 50 tokens/s that is 10,000 timers a second, each created, fired and
    freed (a libuv timer per call under uvloop). Deadlines rounded up to the tick share
    one: about ``TICKS_PER_S`` timers a second at most, whatever the number of streams.

    A tick holds futures (:meth:`until`: a task waiting for its next piece; cancelling it
    cancels only that future, and the tick skips it) and plain calls (:meth:`call`: a
    stream stepped by the clock itself, see :class:`Stepper`, with no task step at all).

    A deadline more than ``2 * COARSE_TICKS`` ahead (a long ``ttft``: an idle stream) waits
    in a coarse slot first, which moves it to its tick at least ``COARSE_TICKS`` early:
    idle streams opened in different milliseconds then share a timer per slot instead of
    each holding a tick of its own (its list, timer handle and arguments: about 400 B).
    """

    __slots__ = ("loop", "_slots", "_ticks")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._ticks: dict[int, list[asyncio.Future[None] | Callable[[], object]]] = {}
        self._slots: dict[int, list[tuple[int, asyncio.Future[None] | Callable[[], object]]]] = {}

    def until(self, deadline: float) -> asyncio.Future[None] | None:
        """A future done at the first tick at or after ``deadline`` (loop time); ``None``
        if that tick is already past."""
        fut = self.loop.create_future()
        return fut if self._add(deadline, fut) else None

    def call(self, deadline: float, step: Callable[[], object]) -> bool:
        """Call ``step()`` at the first tick at or after ``deadline`` (loop time); ``False``
        (and no call) if that tick is already past. ``step`` must not raise."""
        return self._add(deadline, step)

    def _add(self, deadline: float, entry: asyncio.Future[None] | Callable[[], object]) -> bool:
        tick = math.ceil(deadline * TICKS_PER_S)
        now = self.loop.time() * TICKS_PER_S
        if tick <= now:
            return False
        if tick - now > 2 * COARSE_TICKS:
            slot = (tick - COARSE_TICKS) // COARSE_TICKS  # ends COARSE_TICKS or more early
            parked = self._slots.get(slot)
            if parked is None:
                self._slots[slot] = [(tick, entry)]
                self.loop.call_at(slot * COARSE_TICKS / TICKS_PER_S, self._unpark, slot)
            else:
                parked.append((tick, entry))
            return True
        self._at(tick, entry)
        return True

    def _at(self, tick: int, entry: asyncio.Future[None] | Callable[[], object]) -> None:
        due = self._ticks.get(tick)
        if due is None:
            self._ticks[tick] = [entry]
            self.loop.call_at(tick / TICKS_PER_S, self._fire, tick)
        else:
            due.append(entry)

    def _unpark(self, slot: int) -> None:
        for tick, entry in self._slots.pop(slot):
            if not (isinstance(entry, asyncio.Future) and entry.done()):
                self._at(tick, entry)  # a tick already past fires at the loop's next turn

    def _fire(self, tick: int) -> None:
        for entry in self._ticks.pop(tick):
            if isinstance(entry, asyncio.Future):
                if not entry.done():  # a cancelled stream's future is done
                    entry.set_result(None)
            else:
                entry()


_clocks: dict[asyncio.AbstractEventLoop, PaceClock] = {}


def pace_clock() -> PaceClock:
    """The running loop's pacing clock (one per loop, shared by every source)."""
    loop = asyncio.get_running_loop()
    clock = _clocks.get(loop)
    if clock is None:
        for old in [k for k in _clocks if k.is_closed()]:  # loops of finished tests
            del _clocks[old]
        clock = _clocks[loop] = PaceClock(loop)
    return clock


class Stepper(ABC):
    """A paced source's items for one request, handed out one at a time with the loop time
    each is due at: sans-I/O (no loop, no awaits), so that the pacing clock can call the
    whole per-token path of a stream synchronously in its tick (see
    ``server.streams.generation``) instead of waking a task per token.

    ``due`` is when the item the next :meth:`next` returns is due; :meth:`next` returns
    it and moves ``due`` on to the following one. The last item is a :class:`Finish`.
    Items due at the same time as the one before them (the ``Finish``) follow it at once.
    """

    __slots__ = ()

    due: float

    @abstractmethod
    def next(self) -> SourceItem:
        """The next item (the one due at ``due``); may raise ``SourceError``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Tool:
    """A function the model may call: its name, description and JSON Schema of arguments
    (each dialect's tool shape is parsed into this)."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)


ChatRole = Literal["system", "developer", "user", "assistant"]
#: The roles a ``/v1`` chat message may have.
CHAT_ROLES: Final[tuple[ChatRole, ...]] = typing.get_args(ChatRole)


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of a chat conversation (``/v1/chat/completions``), text only."""

    role: ChatRole
    content: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GenerationRequest:
    """What one generation is asked to do (already validated against the server's caps).

    ``messages`` is set when the request came as a chat conversation (``/v1``); ``prompt``
    is then that conversation flattened to text. A source that speaks chat (``openai``)
    sends ``messages`` as they are; the others read ``prompt``.
    """

    prompt: str
    max_tokens: int
    params: Mapping[str, Any] = field(default_factory=dict)
    messages: tuple[ChatMessage, ...] = ()
    #: Reasoning asked for (``None``: none; a source streams ``Reasoning`` only if set).
    reasoning_effort: ReasoningEffort | None = None
    #: The functions offered; a source streams ``ToolCallDelta`` only if there are some.
    tools: tuple[Tool, ...] = ()
    #: The name of the function the request forces (``None``: the source decides).
    tool_choice: str | None = None


class TokenSource(ABC):
    """Base class of every token source.

    ``stream(request)`` is an async generator of non-empty text pieces (and, when the
    request asks for them, :class:`Reasoning` and :class:`ToolCallDelta` pieces), optionally
    ending with one :class:`Finish` (without it the hub infers ``length``, ``tool_calls``
    or ``stop``). The hub
    owns seq numbers, the log, fan-out and errors. On cancel the hub cancels the iterating
    task and calls ``aclose()``: stop upstream work promptly, never swallow
    ``CancelledError``. Raise :class:`~server.errors.SourceError` for failures a user
    should see. ``params`` declares the accepted ``params`` (checked before the stream is
    created: bad input is a 400, not an error event); ``start()``/``aclose()`` load and
    release long-lived resources.
    """

    #: The name clients use in the create body's ``source`` field.
    name: str = ""

    #: Whether it can stream typed parts (``Reasoning``, ``ToolCallDelta``): a request that
    #: asks a source without them for reasoning or tools is refused (400) before it starts.
    typed_parts: ClassVar[bool] = False

    #: The source-specific ``params`` it accepts (see :class:`Param`).
    params: tuple[Param, ...] = ()

    def validate_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Return cleaned source-specific params; raise ``InvalidField`` on bad input."""
        if not self.params:
            if params:
                raise InvalidField("params", f"source {self.name!r} takes no params")
            return {}
        return check_params(self.params, params)

    def param_defaults(self) -> dict[str, Any]:
        """The ``params`` with a default, and that default (``GET /api/info`` lists them)."""
        return {p.name: p.default for p in self.params if p.default is not None}

    def served_model(self) -> str | None:
        """The model it serves (``hf``: hub name or path, ``openai``: the upstream name), or
        ``None`` for a source without model names. ``/v1`` model ids are built from it."""
        return None

    def is_unpaced(self, params: Mapping[str, Any]) -> bool:
        """True if these params ask for output as fast as possible (capped server-wide)."""
        return False

    def requested_pace(self, params: Mapping[str, Any]) -> float:
        """The tokens per second these params ask for (their sum over live streams is
        capped server-wide); 0 for a source that keeps its own pace, or an unpaced one."""
        return 0.0

    @abstractmethod
    def stream(self, request: GenerationRequest) -> AsyncIterator[SourceItem]:
        """Yield the generation's pieces, then optionally one ``Finish``."""

    def stepper(self, request: GenerationRequest, now: float) -> Stepper | None:
        """The same items as ``stream(request)`` started at loop time ``now``, as a
        :class:`Stepper`, for a paced request of a source that can say in advance when each
        piece is due; ``None`` (the default): the hub iterates ``stream()``."""
        return None

    async def start(self) -> None:  # noqa: B027 - optional hook with a default
        """Load what the source needs (a model, an HTTP client). Called once at startup."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook with a default
        """Release long-lived resources. Called once at server shutdown."""
