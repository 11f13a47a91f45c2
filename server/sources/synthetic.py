"""The synthetic source: deterministic, paced sub-word pieces of a bundled text.

Two texts (``params.corpus``, names in :data:`CORPUS_NAMES`): ``prose`` (the default,
``server/data/prose.txt``), short paragraphs that read like an answer; the prompt and seed
pick the paragraph it opens with. ``hard-cases`` (``server/data/hard-cases.txt``) holds
what breaks naive framing (CJK, emoji, CR/LF, lines starting with ``data:``...) and may
start at any piece. Output is a pure function of ``(prompt, seed, max_tokens, corpus)``
and the typed parts the request asks for (``reasoning_effort``, ``tools`` and
``tool_choice``: :func:`synthetic_items`); the pacing params change timing only.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
from collections.abc import AsyncIterator, Mapping
from functools import cache
from importlib import resources
from typing import Any, ClassVar, Final, Literal, get_args

import msgspec

from server.errors import SourceError
from server.sources.base import (
    MAX_SEED,
    Finish,
    FinishReason,
    GenerationRequest,
    PaceClock,
    Param,
    Reasoning,
    ReasoningEffort,
    SourceItem,
    Stepper,
    TokenSource,
    Tool,
    ToolCallDelta,
    pace_clock,
)

#: Pieces an unpaced stream emits between two yields to the loop: its readers then write
#: one batch of them (one write, not one per piece), and every other stream still runs
#: after each burst (fairness: see FIELD-NOTES, "Yield between events"). A burst costs tens
#: of microseconds. A paced stream yields before every piece, even when it is behind.
BURST = 32

_MASK64 = (1 << 64) - 1


def _jitter(state: int) -> tuple[int, float]:
    """One splitmix64 step: the next state and a uniform float in ``[-1, 1)``.

    The pacing jitter's generator: an int of state per stream, where ``random.Random``
    holds 2.5 KB (its Mersenne Twister) for the whole life of every paced stream.
    """
    state = (state + 0x9E3779B97F4A7C15) & _MASK64
    z = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return state, (z ^ (z >> 31)) / 2.0**63 - 1.0


# GPT-2's pre-tokenizer pattern, with ``[^\W\d_]`` standing for ``\p{L}`` and
# ``(?:[^\s\w]|_)`` for ``[^\s\p{L}\p{N}]`` (``\w`` holds ``_``, which is punctuation there).
_PRETOKEN = re.compile(
    r"""'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+""",
)


def split_pieces(text: str, rng: random.Random) -> list[str]:
    """Cut ``text`` into realistic sub-word pieces; ``"".join(result) == text``."""
    pieces: list[str] = []
    for m in _PRETOKEN.finditer(text):
        word = m.group()
        # Keep CR LF together, as byte-level BPE merges usually do.
        while len(word) > 5 and "\r\n" not in word:
            n = rng.randint(2, 5)
            pieces.append(word[:n])
            word = word[n:]
        pieces.append(word)
    assert "".join(pieces) == text
    return pieces


def count_pieces(text: str) -> int:
    """How many pieces :func:`split_pieces` cuts ``text`` into, always the same for a text
    (``/v1`` reports it as ``prompt_tokens``: the same unit the synthetic source emits)."""
    return len(split_pieces(text, random.Random(0)))


CorpusName = Literal["prose", "hard-cases"]
#: The texts a request may pick with ``params.corpus`` (declared once: validation, the
#: error message and the OpenAPI ``enum`` derive from it).
CORPUS_NAMES: Final[tuple[CorpusName, ...]] = get_args(CorpusName)
DEFAULT_CORPUS: Final[CorpusName] = "prose"


@cache
def corpus(name: CorpusName = DEFAULT_CORPUS) -> str:
    """A bundled text (``server/data/<name>.txt``)."""
    return resources.files("server").joinpath(f"data/{name}.txt").read_bytes().decode("utf-8")


@cache
def corpus_pieces(name: CorpusName = DEFAULT_CORPUS) -> tuple[str, ...]:
    """A bundled text cut into pieces, the same on every run."""
    return tuple(split_pieces(corpus(name), random.Random(0)))


@cache
def corpus_starts(name: CorpusName = DEFAULT_CORPUS) -> tuple[int, ...]:
    """The piece indices a stream may start at: ``prose`` opens a paragraph (the piece after
    a blank line), ``hard-cases`` any piece."""
    pieces = corpus_pieces(name)
    if name == "hard-cases":
        return tuple(range(len(pieces)))
    starts, text = [0], ""
    for i, piece in enumerate(pieces[:-1]):
        text += piece
        if text.endswith("\n\n"):
            starts.append(i + 1)
    return tuple(starts)


def _start(tag: str, seed: int, prompt: str, n: int) -> int:
    """A start in ``range(n)`` picked by the prompt and seed, a different one per ``tag``."""
    digest = hashlib.sha256(f"{tag}{seed}\x00{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % n


def synthetic_text(
    prompt: str, seed: int, max_tokens: int, corpus: CorpusName = DEFAULT_CORPUS
) -> list[str]:
    """The exact pieces the synthetic source emits for a prompt, seed and corpus: the
    corpus's pieces in a ring, from the start that ``sha256(f"{seed}\\0{prompt}")`` picks."""
    pieces, starts = corpus_pieces(corpus), corpus_starts(corpus)
    start = starts[_start("", seed, prompt, len(starts))]
    return [pieces[(start + i) % len(pieces)] for i in range(max_tokens)]


#: Reasoning pieces the synthetic source emits before its answer, per ``reasoning_effort``.
REASONING_PIECES: Final[Mapping[ReasoningEffort, int]] = {"low": 8, "medium": 32, "high": 128}


def synthetic_reasoning(
    prompt: str, seed: int, count: int, corpus: CorpusName = DEFAULT_CORPUS
) -> list[str]:
    """The synthetic reasoning: ``count`` pieces of the same ring as the answer, from
    another start than the answer's (the one ``sha256(f"reasoning\\0{seed}\\0{prompt}")``
    picks among the others)."""
    pieces, starts = corpus_pieces(corpus), corpus_starts(corpus)
    answer = _start("", seed, prompt, len(starts))
    other = 1 + _start("reasoning\x00", seed, prompt, len(starts) - 1) if len(starts) > 1 else 0
    start = starts[(answer + other) % len(starts)]
    return [pieces[(start + i) % len(pieces)] for i in range(count)]


@cache
def corpus_words(name: CorpusName = DEFAULT_CORPUS) -> tuple[str, ...]:
    """The words a synthetic tool call's strings are taken from: ``prose``'s runs of
    letters; ``hard-cases``' runs of non-space (quotes, backslashes, ``data:``, emoji)."""
    text = corpus(name)
    return tuple(text.split() if name == "hard-cases" else re.findall(r"[^\W\d_]+", text))


class _Arguments:
    """Builds one synthetic call's argument value from a JSON Schema (see
    :func:`synthetic_arguments`); total: a malformed keyword is ignored, never raised on."""

    def __init__(self, prompt: str, seed: int, corpus: CorpusName) -> None:
        self.seed = seed
        self.words = corpus_words(corpus)
        self.next_word = _start("words\x00", seed, prompt, len(self.words))

    def word(self) -> str:
        word = self.words[self.next_word % len(self.words)]
        self.next_word += 1
        return word

    def value(self, schema: Any) -> Any:
        if not isinstance(schema, Mapping):
            return self.word()  # ``true`` (or anything else): any value is valid
        if "const" in schema:
            return schema["const"]
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            return enum[0]
        kind = schema.get("type")
        if isinstance(kind, list):  # ``["string", "null"]``: the first type that is not null
            kind = next((k for k in kind if k != "null"), "null" if kind else None)
        if kind is None:
            if "properties" in schema:
                kind = "object"
            elif "items" in schema:
                kind = "array"
            else:
                for key in ("anyOf", "oneOf"):
                    options = schema.get(key)
                    if isinstance(options, list) and options:
                        return self.value(options[0])
        if kind == "object":
            return self.object(schema)
        if kind == "array":
            return [self.value(schema.get("items", {}))]
        if kind == "integer":
            return self.seed % 100
        if kind == "number":
            return (self.seed % 100) / 4
        if kind == "boolean":
            return self.seed % 2 == 0
        if kind == "null":
            return None
        return self.word()  # ``string``, or no type: a string is valid

    def object(self, schema: Mapping[str, Any]) -> dict[str, Any]:
        properties = schema.get("properties")
        if not isinstance(properties, Mapping):
            properties = {}
        required = schema.get("required")
        if isinstance(required, list):
            names = [k for k in properties if k in required]
            names += [k for k in required if isinstance(k, str) and k not in properties]
        else:  # no ``required``: every property (a call that shows each of them)
            names = list(properties)
        out: dict[str, Any] = {}
        for name in names:
            if name not in out:
                out[name] = self.value(properties.get(name, {}))
        return out


def synthetic_arguments(
    parameters: Mapping[str, Any], prompt: str, seed: int, corpus: CorpusName = DEFAULT_CORPUS
) -> str:
    """The argument JSON of a synthetic call of a tool with these ``parameters``: an object
    of each ``required`` property in ``properties`` order (all of them if ``required`` is
    absent), each value by its schema: ``const``; ``enum`` -> its first value; ``string``
    (or no type) -> the next corpus word (:func:`corpus_words`, from an offset the prompt
    and seed pick); ``integer`` -> ``seed % 100``; ``number`` -> that / 4; ``boolean`` ->
    ``seed`` is even; ``null``; ``object`` recursively; ``array`` -> one item. A type list
    takes its first type that is not ``null``; without a type, ``properties`` means an
    object, ``items`` an array, ``anyOf``/``oneOf`` their first schema. Other keywords
    (``minimum``, ``pattern``, ``format``, ...) are not honoured. Compact JSON, UTF-8."""
    value = _Arguments(prompt, seed, corpus).object(parameters)
    return msgspec.json.encode(value).decode()


def split_arguments(arguments: str, prompt: str, seed: int) -> list[str]:
    """``arguments`` cut into pieces of 1 to 7 characters by a generator seeded with
    ``sha256(f"args\\0{seed}\\0{prompt}")``; ``"".join(result) == arguments``."""
    rng = random.Random(_start("args\x00", seed, prompt, 2**64))
    pieces, i = [], 0
    while i < len(arguments):
        n = rng.randint(1, 7)
        pieces.append(arguments[i : i + n])
        i += n
    return pieces


def synthetic_items(
    request: GenerationRequest, seed: int, corpus: CorpusName = DEFAULT_CORPUS
) -> tuple[list[SourceItem], FinishReason]:
    """Everything the synthetic source yields for ``request`` (at most ``max_tokens``
    items), and its finish reason.

    With ``reasoning_effort``: first :data:`REASONING_PIECES` ``Reasoning`` pieces
    (:func:`synthetic_reasoning`). With a ``tool_choice`` (which must name one of
    ``tools``): one call of it, index 0, the hub's id, its arguments
    (:func:`synthetic_arguments`) in pieces (:func:`split_arguments`), and no answer text
    (as OpenAI's models with a forced call), ending ``tool_calls``. Otherwise the answer
    (:func:`synthetic_text`) fills the rest of ``max_tokens``, ending ``length``. Offered
    ``tools`` without ``tool_choice`` are not called. Reaching ``max_tokens`` (cut there, or
    a call that ends exactly there): ``length``, as the hub says.
    """
    prompt, budget = request.prompt, request.max_tokens
    items: list[SourceItem] = []
    if request.reasoning_effort is not None:
        count = min(REASONING_PIECES[request.reasoning_effort], budget)
        items += map(Reasoning, synthetic_reasoning(prompt, seed, count, corpus))
    if request.tool_choice is None:
        items += synthetic_text(prompt, seed, budget - len(items), corpus)
        return items, "length"
    tool = _forced(request.tools, request.tool_choice)
    items.append(ToolCallDelta(0, "", name=tool.name))
    arguments = synthetic_arguments(tool.parameters, prompt, seed, corpus)
    items += (ToolCallDelta(0, piece) for piece in split_arguments(arguments, prompt, seed))
    if len(items) >= budget:  # the hub ends a stream that reaches max_tokens ``length``
        return items[:budget], "length"
    return items, "tool_calls"


def _forced(tools: tuple[Tool, ...], name: str) -> Tool:
    for tool in tools:
        if tool.name == name:
            return tool
    raise SourceError("source_error", f"tool_choice names no tool in tools: {name!r}")


class SyntheticStepper(Stepper):
    """The synthetic source's items for one request and when each is due (sans-I/O): the
    one definition of its pacing, which :meth:`SyntheticSource.stream` awaits and the hub's
    clock-driven generation steps.

    The first piece is due ``ttft_ms`` after ``now``; each next one ``1 / tokens_per_s``
    later (an absolute schedule, so pacing does not drift with load), spread by ``jitter``
    (:func:`_jitter`, seeded by ``seed``); the ``Finish`` at once after the last piece.
    At ``tokens_per_s`` 0 every item is due at the first one's time. The items
    (:func:`synthetic_items`) are made at the first :meth:`next`, after the ttft: an idle
    stream holds only these slots.
    """

    __slots__ = (
        "corpus",
        "due",
        "finish",
        "gap",
        "i",
        "items",
        "jitter",
        "pacing",
        "request",
        "seed",
    )

    def __init__(self, request: GenerationRequest, params: Mapping[str, Any], now: float) -> None:
        self.request = request
        self.seed = int(params["seed"])
        self.corpus: CorpusName = params["corpus"]
        rate = float(params["tokens_per_s"])
        self.gap = 1.0 / rate if rate > 0 else 0.0
        self.jitter = float(params["jitter"])
        self.pacing = self.seed ^ 0x5EED
        self.due = now + float(params["ttft_ms"]) / 1000.0
        self.items: list[SourceItem] | None = None
        self.finish: FinishReason = "length"
        self.i = 0

    def next(self) -> SourceItem:
        items = self.items
        if items is None:
            items, self.finish = synthetic_items(self.request, self.seed, self.corpus)
            self.items = items
        i = self.i
        if i >= len(items):
            return Finish(self.finish)
        self.i = i + 1
        if i + 1 < len(items) and self.gap:
            if self.jitter:
                self.pacing, spread = _jitter(self.pacing)
                self.due += self.gap * (1.0 + self.jitter * spread)
            else:
                self.due += self.gap  # no spread: no generator step per piece
        return items[i]


class SyntheticSource(TokenSource):
    """Paced, deterministic pieces of a bundled text. Needs no model and no network."""

    name = "synthetic"
    typed_parts: ClassVar[bool] = True

    def __init__(
        self,
        *,
        ttft_ms: float = 200.0,
        tokens_per_s: float = 30.0,
        jitter: float = 0.2,
        seed: int = 0,
        max_ttft_ms: float = 10_000.0,
        max_tokens_per_s: float = 5_000.0,
        corpus: CorpusName = DEFAULT_CORPUS,
    ) -> None:
        self.params = (
            Param(
                name="ttft_ms",
                type="number",
                minimum=0,
                maximum=max_ttft_ms,
                default=ttft_ms,
                description="milliseconds before the first token",
            ),
            Param(
                name="tokens_per_s",
                type="number",
                minimum=0,
                maximum=max_tokens_per_s,
                default=tokens_per_s,
                description="0: as fast as possible (at most max_unpaced_streams at once)",
            ),
            Param(
                name="jitter",
                type="number",
                minimum=0,
                maximum=1,
                default=jitter,
                description="relative spread of the gaps between tokens",
            ),
            Param(
                name="seed",
                type="integer",
                minimum=0,
                maximum=MAX_SEED,
                default=seed,
                description="with the prompt, picks where the text starts",
            ),
            Param(
                name="corpus",
                type="string",
                choices=CORPUS_NAMES,
                default=corpus,
                description=(
                    "the text: prose (readable paragraphs) or hard-cases (CJK, emoji, CR/LF, "
                    "SSE look-alike lines: what breaks naive framing)"
                ),
            ),
        )
        self.defaults = self.param_defaults()

    def clock(self) -> PaceClock:
        """The pacing clock of the running loop (:func:`~server.sources.base.pace_clock`)."""
        return pace_clock()

    def is_unpaced(self, params: Mapping[str, Any]) -> bool:
        return self._pace(params) == 0.0

    def requested_pace(self, params: Mapping[str, Any]) -> float:
        return self._pace(params)

    def _pace(self, params: Mapping[str, Any]) -> float:
        return float(params.get("tokens_per_s", self.defaults["tokens_per_s"]))

    def stepper(self, request: GenerationRequest, now: float) -> SyntheticStepper | None:
        """A paced request's :class:`SyntheticStepper`; ``None`` for an unpaced one (its
        bursts are ``stream()``'s), or when a subclass redefines ``stream()`` (the stepper
        would not say what it yields)."""
        params = {**self.defaults, **request.params}
        if float(params["tokens_per_s"]) == 0 or type(self).stream is not SyntheticSource.stream:
            return None
        return SyntheticStepper(request, params, now)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[SourceItem]:
        clock = self.clock()
        last = clock.loop.time()
        steps = SyntheticStepper(request, {**self.defaults, **request.params}, last)
        burst = 0  # pieces since the last yield to the loop
        first = True
        while True:
            if steps.due > last:  # the ttft, or a paced piece's gap
                last = steps.due
                burst = 0
                due = clock.until(last)
                if due is not None:
                    await due
                elif not first:
                    await asyncio.sleep(0)  # behind: still yield
            elif burst >= BURST:
                await asyncio.sleep(0)  # unpaced: still let every other stream run
                burst = 0
            item = steps.next()
            yield item
            if isinstance(item, Finish):
                return
            burst += 1
            first = False
