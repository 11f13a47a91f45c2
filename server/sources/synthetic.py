"""The synthetic source: deterministic, paced sub-word pieces of a bundled text.

Two texts (``params.corpus``, names in :data:`CORPUS_NAMES`): ``prose`` (the default,
``server/data/prose.txt``), short paragraphs that read like an answer; the prompt and seed
pick the paragraph it opens with. ``hard-cases`` (``server/data/hard-cases.txt``) holds
what breaks naive framing (CJK, emoji, CR/LF, lines starting with ``data:``...) and may
start at any piece. Output is a pure function of ``(prompt, seed, max_tokens, corpus)``;
the pacing params change timing only.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import re
from collections.abc import AsyncIterator, Mapping
from functools import cache
from importlib import resources
from typing import Any, Final, Literal, get_args

from server.sources.base import MAX_SEED, Finish, GenerationRequest, Param, TokenSource

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


#: The pacing clock's tick: a paced piece is due at the first tick at or after its deadline.
#: A millisecond, the resolution of libuv's (uvloop's) timers anyway.
TICKS_PER_S = 1000


class PaceClock:
    """One loop timer per tick wakes every paced stream due in it.

    ``asyncio.sleep(delay)`` per piece is a timer (and a future) per token per stream: at
    200 streams of 50 tokens/s that is 10,000 timers a second, each created, fired and
    freed (a libuv timer per call under uvloop). Deadlines rounded up to the tick share
    one: about ``TICKS_PER_S`` timers a second at most, whatever the number of streams.
    Each waiting stream still has its own future (cancelling one stream's task cancels
    only that future; the tick skips it).
    """

    __slots__ = ("loop", "_ticks")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._ticks: dict[int, list[asyncio.Future[None]]] = {}

    def until(self, deadline: float) -> asyncio.Future[None] | None:
        """A future done at the first tick at or after ``deadline`` (loop time); ``None``
        if that tick is already past."""
        tick = math.ceil(deadline * TICKS_PER_S)
        if tick <= self.loop.time() * TICKS_PER_S:
            return None
        fut = self.loop.create_future()
        due = self._ticks.get(tick)
        if due is None:
            self._ticks[tick] = [fut]
            self.loop.call_at(tick / TICKS_PER_S, self._fire, tick)
        else:
            due.append(fut)
        return fut

    def _fire(self, tick: int) -> None:
        for fut in self._ticks.pop(tick):
            if not fut.done():  # a cancelled stream's future is done
                fut.set_result(None)


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


def synthetic_text(
    prompt: str, seed: int, max_tokens: int, corpus: CorpusName = DEFAULT_CORPUS
) -> list[str]:
    """The exact pieces the synthetic source emits for a prompt, seed and corpus: the
    corpus's pieces in a ring, from the start that ``sha256(f"{seed}\\0{prompt}")`` picks."""
    pieces, starts = corpus_pieces(corpus), corpus_starts(corpus)
    digest = hashlib.sha256(f"{seed}\x00{prompt}".encode()).digest()
    start = starts[int.from_bytes(digest[:8], "big") % len(starts)]
    return [pieces[(start + i) % len(pieces)] for i in range(max_tokens)]


class SyntheticSource(TokenSource):
    """Paced, deterministic pieces of a bundled text. Needs no model and no network."""

    name = "synthetic"

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
        self._clock: PaceClock | None = None

    def clock(self) -> PaceClock:
        """This source's pacing clock on the running loop."""
        loop = asyncio.get_running_loop()
        clock = self._clock
        if clock is None or clock.loop is not loop:
            clock = self._clock = PaceClock(loop)
        return clock

    def is_unpaced(self, params: Mapping[str, Any]) -> bool:
        return self._pace(params) == 0.0

    def requested_pace(self, params: Mapping[str, Any]) -> float:
        return self._pace(params)

    def _pace(self, params: Mapping[str, Any]) -> float:
        return float(params.get("tokens_per_s", self.defaults["tokens_per_s"]))

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str | Finish]:
        p = {**self.defaults, **request.params}
        rate = float(p["tokens_per_s"])
        jitter = float(p["jitter"])
        pacing = int(p["seed"]) ^ 0x5EED
        ttft = float(p["ttft_ms"]) / 1000.0
        clock = self.clock()
        deadline = clock.loop.time() + ttft
        if ttft > 0:
            first = clock.until(deadline)
            if first is not None:
                await first
        pieces = synthetic_text(request.prompt, int(p["seed"]), request.max_tokens, p["corpus"])
        burst = 0  # pieces since the last yield to the loop
        for i, piece in enumerate(pieces):
            if i and rate > 0:
                # Schedule against an absolute clock so pacing does not drift with load.
                if jitter:
                    pacing, spread = _jitter(pacing)
                    deadline += (1.0 / rate) * (1.0 + jitter * spread)
                else:
                    deadline += 1.0 / rate  # no spread: no generator step per piece
                due = clock.until(deadline)
                if due is None:
                    await asyncio.sleep(0)  # behind: still yield
                else:
                    await due
            elif i and burst >= BURST:
                await asyncio.sleep(0)  # unpaced: still let every other stream run
                burst = 0
            burst += 1
            yield piece
        yield Finish("length")
