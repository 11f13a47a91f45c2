"""A tiny GPT-2 built on the spot, so tests can load a real model with ``from_pretrained``.

No model can be downloaded here, so :func:`build_tiny_gpt2` trains a byte-level BPE tokenizer
on a few local lines (English, Korean, emoji and other multi-byte text, so that many tokens
are partial UTF-8 characters), gives it a two-layer GPT-2 initialised from a fixed seed, and
saves both with ``save_pretrained``.

The random weights are then fitted to the same lines for a few dozen optimizer steps (about
a second on a CPU). Untrained, greedy decoding repeats one or two tokens, mostly stray
UTF-8 bytes; fitted, the model continues a line of :data:`CORPUS` from its first words, so
tests get real multi-byte text whose characters are split across tokens, EOS at the end of
a line, and known continuations. Everything is seeded: the same weights on every build.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

#: The end-of-text token (also the BOS and the padding token), as in GPT-2.
EOS_TOKEN = "<|endoftext|>"

#: The training text of the tokenizer: several scripts, so that BPE learns some merges of
#: multi-byte characters while other characters stay split into single-byte tokens.
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Tokens stream over SSE, WebSocket, long polling and chunked HTTP.",
    "Hello, world! Streaming one token at a time keeps the reader waiting less.",
    "안녕하세요, 세계! 한국어 문장은 여러 바이트로 된 글자를 씁니다.",
    "한국어 토큰은 가끔 글자의 중간에서 잘립니다.",
    "Emoji: 😀 🎉 🚀 👍🏽 ❤️ and a family 👨‍👩‍👧.",
    "Ünïcödé: naïve café, façade, jalapeño, smørrebrød, Straße.",
    "Ελληνικά: καλημέρα κόσμε. Русский: привет, мир.",
    "日本語のテキストと中文文本，混在しています。",
    "Math: ∑ x² ≤ ∞, arrows → ⇒, currency € £ ¥ ₩.",
]


def _train_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a GPT-2-style byte-level BPE tokenizer on :data:`CORPUS`."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=backend,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        clean_up_tokenization_spaces=False,
    )


def build_tiny_gpt2(
    path: Path, *, vocab_size: int = 320, seed: int = 0, train_steps: int = 80
) -> Path:
    """Build a tiny GPT-2 (tokenizer and weights) into ``path`` and return ``path``.

    The tokenizer is byte-level BPE with ``vocab_size`` entries (the 256 byte tokens, one
    special token and a few merges), so most tokens are one or two bytes and many are
    partial UTF-8 characters. The model has 2 layers, 2 heads and 32-wide embeddings,
    initialised from ``seed`` and fitted to :data:`CORPUS` (each line followed by EOS) for
    ``train_steps`` full-batch AdamW steps (0 keeps the random weights), without touching the
    caller's global torch RNG state or thread setting. ``AutoTokenizer.from_pretrained(path)`` and
    ``AutoModelForCausalLM.from_pretrained(path)`` load it back.
    """
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(vocab_size)
    eos_id = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    assert isinstance(eos_id, int)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=512,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        resid_pdrop=0.0,
    )
    # One intra-op thread: the same float results whatever the core count, and no OpenMP
    # spin-waiting against other busy processes (which made a 1 s build take 20 s or more).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = GPT2LMHeadModel(config)
            if train_steps > 0:
                _fit(model, tokenizer, eos_id, train_steps)
    finally:
        torch.set_num_threads(threads)
    model.eval()  # type: ignore[no-untyped-call]
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _fit(
    model: GPT2LMHeadModel, tokenizer: PreTrainedTokenizerFast, eos_id: int, steps: int
) -> None:
    """Fit ``model`` to the lines of :data:`CORPUS`, one full batch per step."""
    lines = [tokenizer(line)["input_ids"] + [eos_id] for line in CORPUS]
    width = max(len(ids) for ids in lines)
    input_ids = torch.full((len(lines), width), eos_id, dtype=torch.long)
    attention_mask = torch.zeros((len(lines), width), dtype=torch.long)
    labels = torch.full((len(lines), width), -100, dtype=torch.long)
    for row, ids in enumerate(lines):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
        labels[row, : len(ids)] = torch.tensor(ids)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-2)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
