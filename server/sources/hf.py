"""The ``hf`` source: a local ``transformers`` causal LM, streamed token by token.

``generate()`` runs in a worker thread per generation; pieces reach the loop through
``call_soon_threadsafe``, and a stop event checked after every step ends it on cancel.
Importing this module imports ``torch`` and ``transformers`` (the ``hf`` extra).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.generation.logits_process import (
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.generation.streamers import BaseStreamer

from server.errors import SourceError
from server.sources.base import MAX_SEED, Finish, GenerationRequest, Param, TokenSource

__all__ = ["THREAD_NAME_PREFIX", "HFSource", "IncrementalDecoder"]

#: Name prefix of the worker threads that run ``generate()`` (one thread per generation).
THREAD_NAME_PREFIX = "tokenwire-hf"

#: What a decoder produces for bytes that are not (yet) a whole UTF-8 character.
REPLACEMENT_CHAR = "\ufffd"

_thread_numbers = itertools.count(1)


class IncrementalDecoder:
    """Turn token ids, pushed one at a time, into text pieces that never split a character.

    Each :meth:`push` decodes the ids from ``prefix_offset`` (the start of the previously
    emitted token's window) to the end and returns the text beyond what the window up to
    ``read_offset`` already decoded to. Decoding with one already-emitted token in front keeps
    what a decoder does at the very start of a text (e.g. SentencePiece dropping a leading
    space) out of the pieces. While the decoded window ends in U+FFFD, the tail is held back:
    byte-level and byte-fallback decoders render an incomplete UTF-8 sequence that way, and a
    later token may complete it. :meth:`flush` releases whatever is still held at the end, so
    ``"".join(pieces) == tokenizer.decode(ids, skip_special_tokens=...)`` always holds.

    A token that adds no text (a skipped special token, or bytes of an unfinished character)
    yields ``""``; callers skip those.
    """

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, *, skip_special_tokens: bool = True
    ) -> None:
        self._tokenizer = tokenizer
        self._skip_special_tokens = skip_special_tokens
        self._ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0

    @property
    def ids(self) -> list[int]:
        """Every id pushed so far (a copy)."""
        return list(self._ids)

    def _decode(self, ids: list[int]) -> str:
        if not ids:
            return ""
        text = self._tokenizer.decode(ids, skip_special_tokens=self._skip_special_tokens)
        return cast(str, text)

    def push(self, token_id: int) -> str:
        """Add one generated id; return the new text it completes (``""`` if none yet)."""
        self._ids.append(token_id)
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset :])
        if len(new_text) <= len(prefix_text) or new_text.endswith(REPLACEMENT_CHAR):
            return ""
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        return new_text[len(prefix_text) :]

    def flush(self) -> str:
        """Return the held-back tail (it may contain U+FFFD if the ids end mid-character)."""
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset :])
        self._prefix_offset = self._read_offset = len(self._ids)
        return new_text[len(prefix_text) :]


class _QueueStreamer(BaseStreamer):
    """A ``generate()`` streamer that decodes each new id and hands the text to ``emit``.

    ``generate()`` first calls :meth:`put` with the prompt ids, then once per decoding step
    with the new id; :meth:`end` comes after the last step. Runs in the worker thread.
    """

    def __init__(self, decoder: IncrementalDecoder, emit: Callable[[str], None]) -> None:
        self._decoder = decoder
        self._emit = emit
        self._prompt_pending = True

    def put(self, value: torch.Tensor) -> None:
        """Receive the prompt ids (ignored) or one step's new id (batch size 1)."""
        if self._prompt_pending:
            self._prompt_pending = False
            return
        for token_id in value.reshape(-1).tolist():
            piece = self._decoder.push(int(token_id))
            if piece:
                self._emit(piece)

    def end(self) -> None:
        """Emit the tail the decoder still holds (the ids ended mid-character)."""
        tail = self._decoder.flush()
        if tail:
            self._emit(tail)


class _StopOnEvent(StoppingCriteria):
    """Stop ``generate()`` after the current step once ``event`` is set (checked each step)."""

    def __init__(self, event: threading.Event) -> None:
        self._event = event

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        stop = self._event.is_set()
        done = torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)
        return cast(torch.BoolTensor, done)


class _SampleWithGenerator(LogitsProcessor):
    """Sample the next token from a private RNG and leave only that token possible.

    ``generate()`` then runs in greedy mode and its ``argmax`` picks the sampled token. This
    keeps sampling off torch's process-wide RNG, which concurrent generations would share.
    Temperature, top-k and top-p are transformers' own warpers, applied in that order as
    ``generate(do_sample=True)`` would.
    """

    def __init__(
        self, *, temperature: float, top_k: int, top_p: float, generator: torch.Generator
    ) -> None:
        self._warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature)])
        if top_k > 0:
            self._warpers.append(TopKLogitsWarper(top_k=top_k))
        if top_p < 1.0:
            self._warpers.append(TopPLogitsWarper(top_p=top_p))
        self._generator = generator

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        warped = self._warpers(input_ids, scores)
        probs = torch.softmax(warped.float(), dim=-1)
        chosen = torch.multinomial(probs, num_samples=1, generator=self._generator)
        only_chosen = torch.full_like(scores, float("-inf"))
        return only_chosen.scatter_(-1, chosen, 0.0)


@dataclass(frozen=True, slots=True)
class _Loaded:
    """What :meth:`HFSource.start` loads."""

    tokenizer: PreTrainedTokenizerBase
    model: PreTrainedModel


@dataclass(frozen=True, slots=True)
class _Outcome:
    """The worker thread's last word: how ``generate()`` ended."""

    finish: Finish | None = None
    error: BaseException | None = None


async def _wait_through_cancellation(done: asyncio.Future[None]) -> None:
    """Wait until ``done`` resolves even if cancelled meanwhile, then re-raise the cancel.

    Used to let the worker thread finish its step in flight (it has been told to stop)
    without blocking the event loop and without leaving the thread running behind us.
    """
    cancelled = False
    while not done.done():
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError


class HFSource(TokenSource):
    """Stream tokens from a ``transformers`` causal LM running on this machine.

    Args:
        model: A hub model name or a local directory, passed to ``from_pretrained`` for both
            the tokenizer and the model.
        device: The torch device the model runs on (``"cpu"``, ``"cuda"``, ``"cuda:1"``...).
        max_concurrent: How many generations run at once; the others wait their turn.

    Params: :attr:`params`; ``top_p``, ``top_k`` and ``seed`` only matter when sampling
    (``temperature > 0``).
    """

    name = "hf"
    params = (
        Param(
            name="temperature",
            type="number",
            minimum=0,
            maximum=2,
            description="0 or absent: greedy decoding",
        ),
        Param(
            name="top_p",
            type="number",
            minimum=0,
            exclusive_minimum=True,
            maximum=1,
            description="nucleus sampling (absent: 1, no cut)",
        ),
        Param(
            name="top_k",
            type="integer",
            minimum=0,
            description="keep the k most likely tokens (absent: 0, no cut)",
        ),
        Param(
            name="seed",
            type="integer",
            minimum=0,
            maximum=MAX_SEED,
            description="makes sampling reproducible",
        ),
    )

    def __init__(self, model: str, *, device: str = "cpu", max_concurrent: int = 1) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self.model_name = model
        self.device = device
        self.max_concurrent = max_concurrent
        self._semaphore = asyncio.Semaphore(max_concurrent)
        # Encoding may reconfigure a fast tokenizer's truncation/padding state, which is not
        # safe to do from two threads at once.
        self._encode_lock = threading.Lock()
        self._loaded: _Loaded | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the tokenizer and the model (in a worker thread), in eval mode on the device."""
        if self._loaded is None:
            self._loaded = await asyncio.to_thread(self._load)

    def _load(self) -> _Loaded:
        tokenizer = AutoTokenizer.from_pretrained(self.model_name)
        model = AutoModelForCausalLM.from_pretrained(self.model_name)
        model.to(self.device)  # type: ignore[arg-type]  # `to` is typed through functools.wraps
        model.eval()  # type: ignore[no-untyped-call]
        return _Loaded(tokenizer=tokenizer, model=model)

    async def aclose(self) -> None:
        """Drop the model and tokenizer (call after every stream has ended)."""
        self._loaded = None

    def served_model(self) -> str:
        return self.model_name

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The loaded tokenizer (after :meth:`start`)."""
        return self._require_loaded().tokenizer

    @property
    def model(self) -> PreTrainedModel:
        """The loaded model (after :meth:`start`)."""
        return self._require_loaded().model

    def _require_loaded(self) -> _Loaded:
        if self._loaded is None:
            raise SourceError("not_ready", f"model {self.model_name!r} is not loaded")
        return self._loaded

    # -- params ---------------------------------------------------------------------------

    # -- streaming ------------------------------------------------------------------------

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str | Finish]:
        """Yield one text piece per generated token that adds text, then a ``Finish``.

        Raises ``SourceError("generation_failed", "<ExceptionType>: <message>")`` if
        ``generate()`` raises. Waits for a free slot first (``max_concurrent``).
        """
        params = self.validate_params(request.params)
        loaded = self._require_loaded()
        async with self._semaphore:
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue[str | _Outcome] = asyncio.Queue()
            done: asyncio.Future[None] = loop.create_future()
            stop = threading.Event()

            def complete(outcome: _Outcome) -> None:
                # Runs on the loop: the outcome is queued behind every piece already emitted.
                queue.put_nowait(outcome)
                if not done.done():
                    done.set_result(None)

            def emit(piece: str) -> None:
                loop.call_soon_threadsafe(queue.put_nowait, piece)

            def work() -> None:
                outcome = _Outcome(error=RuntimeError("the generation thread died"))
                try:
                    finish = self._generate(loaded, request, params, emit, stop)
                    outcome = _Outcome(finish=finish)
                except Exception as exc:
                    outcome = _Outcome(error=exc)
                finally:
                    # The loop may already be closed if the process is shutting down.
                    with contextlib.suppress(RuntimeError):
                        loop.call_soon_threadsafe(complete, outcome)

            thread = threading.Thread(
                target=work, name=f"{THREAD_NAME_PREFIX}-{next(_thread_numbers)}", daemon=True
            )
            thread.start()
            try:
                while True:
                    item = await queue.get()
                    if isinstance(item, str):
                        yield item
                        continue
                    if item.error is not None:
                        error = item.error
                        raise SourceError(
                            "generation_failed", f"{type(error).__name__}: {error}"
                        ) from error
                    if item.finish is not None:
                        yield item.finish
                    return
            finally:
                stop.set()
                await _wait_through_cancellation(done)
                # The thread's last act was to schedule ``complete``: this join returns at once.
                thread.join()

    def _generate(
        self,
        loaded: _Loaded,
        request: GenerationRequest,
        params: Mapping[str, Any],
        emit: Callable[[str], None],
        stop: threading.Event,
    ) -> Finish:
        """Run ``generate()`` (worker thread); return why it ended."""
        tokenizer, model = loaded.tokenizer, loaded.model
        with self._encode_lock:
            encoded = tokenizer(request.prompt, return_tensors="pt")
        input_ids = encoded["input_ids"]
        attention_mask = encoded.get("attention_mask")
        if input_ids.shape[1] == 0:
            # An empty prompt: start from BOS (or EOS, as GPT-2 does) when the model has one.
            start_id = tokenizer.bos_token_id
            if start_id is None:
                start_id = tokenizer.eos_token_id
            if start_id is None:
                raise ValueError("the prompt is empty and the tokenizer has no BOS/EOS token")
            input_ids = torch.tensor([[start_id]], dtype=torch.long)
            attention_mask = None
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        device = model.device
        input_ids = input_ids.to(device)
        attention_mask = attention_mask.to(device)

        eos_ids = self._eos_ids(loaded)
        kwargs: dict[str, Any] = {"do_sample": False}
        if model.generation_config.pad_token_id is None:
            # Without one, generate() picks EOS itself and logs about it on every call.
            pad = tokenizer.pad_token_id
            if pad is None and eos_ids:
                pad = eos_ids[0]
            if pad is not None:
                kwargs["pad_token_id"] = pad
        if model.generation_config.eos_token_id is None and eos_ids:
            kwargs["eos_token_id"] = eos_ids
        temperature = float(params.get("temperature", 0.0))
        if temperature > 0:
            generator = torch.Generator(device=device)
            if "seed" in params:
                generator.manual_seed(int(params["seed"]))
            else:
                generator.seed()
            kwargs["logits_processor"] = LogitsProcessorList(
                [
                    _SampleWithGenerator(
                        temperature=temperature,
                        top_k=int(params.get("top_k", 0)),
                        top_p=float(params.get("top_p", 1.0)),
                        generator=generator,
                    )
                ]
            )

        decoder = IncrementalDecoder(tokenizer, skip_special_tokens=True)
        # PreTrainedModel does not declare generate() (its GenerationMixin subclasses do).
        output = model.generate(  # type: ignore[operator]
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=request.max_tokens,
            streamer=_QueueStreamer(decoder, emit),
            stopping_criteria=StoppingCriteriaList([_StopOnEvent(stop)]),
            **kwargs,
        )
        generated: list[int] = output[0, input_ids.shape[1] :].tolist()
        if generated and generated[-1] in eos_ids:
            return Finish("stop")
        if len(generated) >= request.max_tokens:
            return Finish("length")
        return Finish("stop")

    @staticmethod
    def _eos_ids(loaded: _Loaded) -> list[int]:
        """The ids that end a generation: the model's generation config, else the tokenizer's."""
        configured = loaded.model.generation_config.eos_token_id
        if configured is None:
            configured = loaded.tokenizer.eos_token_id
        if configured is None:
            return []
        if isinstance(configured, int):
            return [configured]
        return [int(i) for i in configured]
