"""Chaos: many concurrent streams on every transport, ``/v1`` and the Responses dialect,
cut at random points.

Python and JS clients and the openai SDK read streams through one cutting proxy each
(``bench.cutproxy``), which cuts connections mid-frame and mid-character; callers also
stop and resume (a Responses reader by ``responses.retrieve(id, stream=True,
starting_after=N)``, and every ``sequence_number`` must arrive once). Every stream must
end with exactly the server's text and every ``seq`` once. Method and counts: docs/bench.md
("Chaos"). ``python -m bench.chaos --help``.

``--cluster N`` runs N tokenwire processes on one ``redis-server`` (issue 16; both started
here on free loopback ports): each stream is created on one process, read through cuts on
another, and resumed after each caller's stop on a third (the ``/v1`` streams: created
through cuts on one, the rest read on another; the Responses streams: created and resumed
through cuts on one), all chosen at random by the seed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import aiohttp
import httpx
import openai

from bench.cutproxy import CutProxy
from bench.lab import REPO, Server, spawn_server, start_redis, stop_server, wait_ready
from bench.stats import print_table
from clients import Client
from server.sources.synthetic import CorpusName, synthetic_text
from wire import TRANSPORTS, Transport

PY_KINDS = ("py-sse", "py-ws", "py-poll", "py-chunked", "py-openai", "py-responses")
#: The kinds that create their stream on a dialect route (the cuts land there).
DIALECT_KINDS = ("py-openai", "py-responses")
#: A text-only response's first token delta: ``sequence_number`` = seq + this.
RESPONSES_OPENING = 4
JS_KINDS = ("js-sse-es", "js-sse-fetch", "js-ws", "js-poll", "js-chunked")
KINDS = PY_KINDS + JS_KINDS
CHAOS_MJS = Path(__file__).resolve().parent / "chaos.mjs"
NODE_FLAGS = ("--experimental-websocket", "--experimental-eventsource")
#: Roughly the wire bytes of one token on the fattest transport: the cut positions' scale.
BYTES_PER_TOKEN = 120

#: The text every stream carries: the hard cases, so that cuts land inside multi-byte
#: characters and CR LF pairs too.
CORPUS: CorpusName = "hard-cases"


@dataclass(slots=True)
class Spec:
    """One planned stream."""

    key: str
    kind: str
    prompt: str
    tokens: int
    cuts: list[int]
    mid_char: bool
    client_cuts: list[int]
    resume_transport: Transport = "chunked"
    #: Which process creates, reads and resumes it (``--cluster``; all 0 otherwise).
    create_node: int = 0
    read_node: int = 0
    resume_node: int = 0

    @property
    def transport(self) -> Transport:
        name = self.kind.split("-")[1]
        return "sse" if name == "sse" else cast(Transport, name)


@dataclass(slots=True)
class Outcome:
    """What one stream's caller received, and what its proxy did."""

    key: str
    kind: str
    id: str | None = None
    seqs: list[int] = field(default_factory=list)
    text: str = ""
    texts: list[str] = field(default_factory=list)
    done: dict[str, Any] | None = None
    error: str | None = None
    reconnects: int = 0
    wire_dups: int = 0
    client_cuts: int = 0
    server_cuts: int = 0
    mid_char_cuts: int = 0
    openai_recreated: int = 0
    #: Every Responses ``sequence_number`` received, across the resumed reads.
    sequences: list[int] = field(default_factory=list)


@dataclass(slots=True)
class Row:
    """The counts of one kind."""

    kind: str
    streams: int = 0
    tokens: int = 0
    server_cuts: int = 0
    mid_char_cuts: int = 0
    client_cuts: int = 0
    reconnects: int = 0
    openai_recreated: int = 0
    losses: int = 0
    duplicates: int = 0
    wire_dups: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)


@dataclass(slots=True, frozen=True)
class Route:
    """Where one stream goes across processes: created on ``create_url`` (``None``: where
    it is read), read on its own URL, resumed after a caller's stop on ``resume_url``."""

    create_url: str | None = None
    resume_url: str | None = None


def make_plan(
    kinds: Sequence[str],
    streams: int,
    tokens: int,
    max_cuts: int,
    max_client_cuts: int,
    seed: int,
    nodes: int = 1,
) -> list[Spec]:
    """The streams to run: the same seed gives the same plan for each stream."""
    specs = []
    for kind in kinds:
        for i in range(streams):
            rng = random.Random(f"{seed}/{kind}/{i}")  # the same stream whatever else runs
            # The processes from their own generator: the cuts stay those of one process.
            where = random.Random(f"{seed}/{kind}/{i}/nodes")
            create, read, resume = (where.randrange(nodes) for _ in range(3))
            n_cuts = rng.randint(1, max_cuts)
            scale = max(2, tokens * BYTES_PER_TOKEN // (n_cuts + 1))
            specs.append(
                Spec(
                    key=f"{kind}-{i}",
                    kind=kind,
                    prompt=f"chaos {seed} {kind} {i}",
                    tokens=tokens,
                    cuts=[rng.randint(1, scale) for _ in range(n_cuts)],
                    mid_char=rng.random() < 0.5,
                    client_cuts=sorted(
                        rng.sample(range(tokens - 1), rng.randint(0, max_client_cuts))
                    ),
                    resume_transport=rng.choice(TRANSPORTS),
                    create_node=create,
                    read_node=read,
                    resume_node=resume,
                )
            )
    return specs


# ---------------------------------------------------------------------------------------
# The callers


def record(out: Outcome, ev: dict[str, Any]) -> None:
    out.seqs.append(ev["seq"])
    if ev["type"] == "token":
        out.text += ev["text"]
        out.texts.append(ev["text"])
    else:
        out.done = ev


def py_client(url: str) -> Client:
    return Client(url, backoff_s=0.02, max_backoff_s=0.5, max_reconnects=50, poll_timeout_s=5)


async def read_py(
    spec: Spec, url: str, params: dict[str, Any], route: Route | None = None
) -> Outcome:
    """The Python client, stopping and subscribing again at each client cut."""
    out = Outcome(spec.key, spec.kind)
    cuts = list(spec.client_cuts)
    t = spec.transport
    route = route or Route()
    async with contextlib.AsyncExitStack() as clients:
        c = await clients.enter_async_context(py_client(url))
        resumer = c
        if route.resume_url is not None:
            resumer = await clients.enter_async_context(py_client(route.resume_url))
        try:
            if route.create_url is not None:
                async with py_client(route.create_url) as creator:
                    sid = await creator.create(spec.prompt, max_tokens=spec.tokens, params=params)
                stream = c.subscribe(sid, transport=t)
            else:
                stream = c.stream(spec.prompt, transport=t, max_tokens=spec.tokens, params=params)
            while True:
                agen = cast(AsyncGenerator[dict[str, Any], None], stream.__aiter__())
                cut = False
                try:
                    async for ev in agen:
                        record(out, ev)
                        if cuts and ev["seq"] == cuts[0]:
                            cuts.pop(0)
                            cut = ev["type"] == "token"
                            if cut:
                                break  # the caller closes its connection mid-stream
                finally:
                    await agen.aclose()
                out.id = stream.id
                out.reconnects += stream.stats.reconnects
                out.wire_dups += stream.stats.duplicates
                if not cut:
                    break
                out.client_cuts += 1
                assert stream.id is not None
                stream = resumer.subscribe(stream.id, after=out.seqs[-1], transport=t)
        except Exception as e:  # reported per stream, never raised
            out.error = f"{type(e).__name__}: {e}"
    return out


_S = TypeVar("_S")


async def created(out: Outcome, route: str, create: Callable[[], Awaitable[_S]]) -> tuple[_S, str]:
    """An SDK's streamed create, tried again (20 times at most) while a cut comes before
    the answer's headers (no id yet to resume by): the stream, and its id."""
    for _ in range(20):
        try:
            stream = await create()
        except openai.APIConnectionError:
            out.openai_recreated += 1
            continue
        return stream, stream.response.headers["Tokenwire-Stream"]  # type: ignore[attr-defined]
    raise RuntimeError(f"no {route} answer in 20 attempts")


async def read_openai(spec: Spec, url: str, resume_url: str | None = None) -> Outcome:
    """The openai SDK on /v1; after a cut, the rest over ``resume_transport`` by the id
    (on ``resume_url`` if given)."""
    out = Outcome(spec.key, spec.kind)
    async with openai.AsyncOpenAI(
        base_url=f"{url}/v1", api_key="chaos", max_retries=0, timeout=30
    ) as oa:
        try:
            stream, out.id = await created(
                out,
                "/v1",
                lambda: oa.chat.completions.create(
                    model="synthetic",
                    messages=[{"role": "user", "content": spec.prompt}],
                    max_tokens=spec.tokens,
                    stream=True,
                ),
            )
            cut = False
            try:
                async for chunk in stream:
                    content = chunk.choices[0].delta.content if chunk.choices else None
                    if content:  # one content chunk per token, in order: chunk k is seq k
                        out.seqs.append(len(out.seqs))
                        out.text += content
                        out.texts.append(content)
            except Exception:  # the SDK's transport error at a cut: resume elsewhere
                cut = True
            finally:
                await stream.close()
            out.reconnects += cut  # the read over another transport
            async with py_client(resume_url or url) as c:
                rest = c.subscribe(out.id, after=len(out.seqs) - 1, transport=spec.resume_transport)
                async for ev in rest:
                    record(out, ev)
                out.reconnects += rest.stats.reconnects
                out.wire_dups += rest.stats.duplicates
        except Exception as e:
            out.error = f"{type(e).__name__}: {e}"
    return out


async def read_js(
    specs: list[tuple[Spec, str]],
    params: dict[str, Any],
    timeout_s: float,
    routes: dict[str, Route] | None = None,
) -> list[Outcome]:
    """All the JS streams in one Node process (bench/chaos.mjs); ``routes`` by key."""
    routes = routes or {}
    node = shutil.which("node")
    if node is None:
        raise SystemExit("node is not on PATH (the js-* kinds need it)")
    plan = {
        "timeoutMs": int(timeout_s * 1000),
        "streams": [
            {
                "key": s.key,
                "url": url,
                "transport": s.transport,
                "eventSource": s.kind == "js-sse-es",
                "prompt": s.prompt,
                "max_tokens": s.tokens,
                "params": params,
                "clientCuts": s.client_cuts,
                **js_route(routes.get(s.key)),
            }
            for s, url in specs
        ],
    }
    proc = await asyncio.create_subprocess_exec(
        node,
        *NODE_FLAGS,
        str(CHAOS_MJS),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    try:
        async with asyncio.timeout(timeout_s + 15):
            stdout, stderr = await proc.communicate(json.dumps(plan).encode())
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"node exited with {proc.returncode}: {stderr.decode()[-2000:]}")
    kinds = {s.key: s.kind for s, _ in specs}
    outcomes = []
    for r in json.loads(stdout):
        outcomes.append(
            Outcome(
                key=r["key"],
                kind=kinds[r["key"]],
                id=r["id"],
                seqs=r["seqs"],
                text=r["text"],
                texts=r["texts"],
                done=r["done"],
                error=r["error"],
                reconnects=r["reconnects"],
                wire_dups=r["duplicates"],
                client_cuts=r["clientCuts"],
            )
        )
    return outcomes


def js_route(route: Route | None) -> dict[str, Any]:
    if route is None:
        return {}
    return {
        **({"createUrl": route.create_url} if route.create_url else {}),
        **({"resumeUrls": [route.resume_url]} if route.resume_url else {}),
    }


# ---------------------------------------------------------------------------------------
# The checks


async def read_responses(spec: Spec, url: str, params: dict[str, Any]) -> Outcome:
    """The openai SDK on ``/v1/responses`` (``background``, streamed); after a cut or a
    caller's stop, ``responses.retrieve(id, stream=True, starting_after=<the last
    sequence_number>)`` on the same route, until ``response.completed``/``incomplete``."""
    out = Outcome(spec.key, spec.kind)
    cuts = list(spec.client_cuts)
    async with openai.AsyncOpenAI(
        base_url=f"{url}/v1", api_key="chaos", max_retries=0, timeout=30
    ) as oa:
        try:
            stream, out.id = await created(
                out,
                "/v1/responses",
                lambda: oa.responses.create(
                    model="synthetic",
                    input=spec.prompt,
                    max_output_tokens=spec.tokens,
                    stream=True,
                    background=True,
                    extra_body={"params": params},
                ),
            )
            resumed: Any = stream
            for _ in range(4 * len(spec.cuts) + len(cuts) + 20):
                if resumed is None:
                    after = out.sequences[-1] if out.sequences else -1
                    try:
                        resumed = await oa.responses.retrieve(
                            f"resp_{out.id}", stream=True, starting_after=after
                        )
                    except openai.APIConnectionError:
                        out.reconnects += 1  # cut before the headers: try again
                        continue
                stream, resumed = resumed, None
                ended = stop = False
                try:
                    async for ev in stream:
                        out.sequences.append(ev.sequence_number)
                        if ev.type == "response.output_text.delta":
                            out.seqs.append(ev.sequence_number - RESPONSES_OPENING)
                            out.text += ev.delta
                            out.texts.append(ev.delta)
                            if cuts and out.seqs[-1] == cuts[0]:
                                cuts.pop(0)
                                stop = True
                                break  # the caller closes its connection mid-stream
                        elif ev.type == "response.output_text.done":  # the log's done seq
                            out.seqs.append(ev.sequence_number - RESPONSES_OPENING)
                            out.done = {"type": "done"}
                        elif ev.type in ("response.completed", "response.incomplete"):
                            ended = True
                        elif ev.type in ("response.failed", "error"):
                            raise RuntimeError(f"the response ended with {ev.type}")
                except (openai.APIConnectionError, httpx.HTTPError):
                    out.reconnects += 1  # a cut: resume after the last number received
                finally:
                    await stream.close()
                if ended:
                    break
                out.client_cuts += stop
            else:
                raise RuntimeError("the response did not end within the resumes planned")
        except Exception as e:
            out.error = f"{type(e).__name__}: {e}"
    return out


async def server_log(session: aiohttp.ClientSession, base: str, sid: str) -> list[dict[str, Any]]:
    """The stream's whole log, read directly (no proxy) once it has ended."""
    async with Client(base, session=session) as c:
        return [ev async for ev in c.subscribe(sid, transport="chunked")]


def check(out: Outcome, spec: Spec, log: list[dict[str, Any]] | None, row: Row) -> None:
    row.streams += 1
    row.server_cuts += out.server_cuts
    row.mid_char_cuts += out.mid_char_cuts
    row.client_cuts += out.client_cuts
    row.reconnects += out.reconnects
    row.openai_recreated += out.openai_recreated
    row.wire_dups += out.wire_dups
    row.tokens += sum(1 for _ in out.seqs) - (1 if out.done else 0)
    problems = []
    if out.error:
        problems.append(out.error)
    if log is not None:
        want = [e["seq"] for e in log]
        got = set(out.seqs)
        row.losses += sum(1 for s in want if s not in got)
        row.duplicates += len(out.seqs) - len(got)
        if out.seqs != want:
            problems.append(f"seqs differ from the log's ({len(out.seqs)} vs {len(want)})")
        log_texts = [e["text"] for e in log if e["type"] == "token"]
        if out.text != "".join(log_texts) or out.texts != log_texts:
            problems.append("text differs from the log's")
        end = log[-1]
        if end.get("sha256") != hashlib.sha256(out.text.encode()).hexdigest():
            problems.append(f"sha256 differs (log ends {end['type']})")
        if spec.kind != "py-openai" and out.text != "".join(
            synthetic_text(spec.prompt, 0, spec.tokens, CORPUS)
        ):
            problems.append("text differs from the synthetic source's")
    else:
        problems.append("no stream id")
    if spec.kind == "py-responses" and out.sequences != list(range(len(out.sequences))):
        problems.append("sequence_number not each once and in order")
    if problems:
        row.failed += 1
        row.failures.append(f"{spec.key} ({out.id}): {'; '.join(problems)}")


# ---------------------------------------------------------------------------------------
# The run


def stop_and_report(server: Server) -> None:
    code = stop_server(server)
    if server.log_path is not None:
        if code == 0:
            server.log_path.unlink(missing_ok=True)
        else:
            print(f"server stopped (exit {code}); its log: {server.log_path}")


def stop_redis(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def port_of(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


async def chaos(args: argparse.Namespace, bases: Sequence[str]) -> list[Row]:
    """Run the plan on the servers at ``bases`` (more than one: across processes)."""
    kinds = [k for k in KINDS if k in args.kinds]
    cluster = len(bases) > 1
    specs = make_plan(
        kinds,
        args.streams,
        args.tokens,
        args.max_cuts,
        args.max_client_cuts,
        args.seed,
        len(bases),
    )
    params = {"tokens_per_s": args.rate, "ttft_ms": 0, "jitter": 0, "corpus": CORPUS}
    async with contextlib.AsyncExitStack() as stack:
        session = await stack.enter_async_context(aiohttp.ClientSession())

        async def proxy(s: Spec, node: int) -> CutProxy:
            p = CutProxy(port_of(bases[node]), s.cuts, mid_char=s.mid_char, shared=True)
            return await stack.enter_async_context(p)

        # The cuts land where the stream is read (the /v1 streams: where they are created),
        # and, across processes, again where it is resumed.
        proxies = {
            s.key: await proxy(s, s.create_node if s.kind in DIALECT_KINDS else s.read_node)
            for s in specs
        }
        resumes = {s.key: await proxy(s, s.resume_node) for s in specs} if cluster else {}
        routes = {
            s.key: Route(
                create_url=bases[s.create_node] if s.kind not in DIALECT_KINDS else None,
                resume_url=resumes[s.key].url,
            )
            for s in specs
            if cluster
        }
        started = time.monotonic()
        tasks: list[asyncio.Future[Any]] = []
        js = [(s, proxies[s.key].url) for s in specs if s.kind in JS_KINDS]
        if js:
            tasks.append(asyncio.ensure_future(read_js(js, params, args.timeout, routes)))
        for s in specs:
            url, route = proxies[s.key].url, routes.get(s.key)
            if s.kind == "py-openai":
                resume_url = route.resume_url if route else None
                tasks.append(asyncio.ensure_future(read_openai(s, url, resume_url)))
            elif s.kind == "py-responses":  # resumed where it was created, even in a cluster
                tasks.append(asyncio.ensure_future(read_responses(s, url, params)))
            elif s.kind in PY_KINDS:
                tasks.append(asyncio.ensure_future(read_py(s, url, params, route)))
        async with asyncio.timeout(args.timeout + 30):
            results = await asyncio.gather(*tasks)
        elapsed = time.monotonic() - started
        outcomes: list[Outcome] = []
        for r in results:
            outcomes.extend(r if isinstance(r, list) else [r])
        by_key = {s.key: s for s in specs}
        rows = {k: Row(k) for k in kinds}
        for out in outcomes:
            used = [proxies[out.key], *([resumes[out.key]] if cluster else [])]
            out.server_cuts = sum(p.cut_count for p in used)
            out.mid_char_cuts = sum(p.mid_char_cuts for p in used)
            log = await server_log(session, bases[0], out.id) if out.id else None
            check(out, by_key[out.key], log, rows[out.kind])
    where = f", {len(bases)} processes on one Redis" if cluster else ""
    print(f"{len(specs)} streams in {elapsed:.1f} s (seed {args.seed}{where})")
    return list(rows.values())


COLUMNS = (
    ("kind", "kind"),
    ("streams", "streams"),
    ("tokens", "tokens"),
    ("server cuts", "server_cuts"),
    ("mid-char", "mid_char_cuts"),
    ("client cuts", "client_cuts"),
    ("reconnects", "reconnects"),
    ("openai re-creates", "openai_recreated"),
    ("losses", "losses"),
    ("duplicates", "duplicates"),
    ("wire dups", "wire_dups"),
    ("failed", "failed"),
)


def total(rows: Sequence[Row]) -> Row:
    t = Row("total")
    for r in rows:
        for _, name in COLUMNS[1:]:
            setattr(t, name, getattr(t, name) + getattr(r, name))
    return t


def print_rows(rows: Sequence[Row], plain: bool) -> None:
    cells = [[str(getattr(r, name)) for _, name in COLUMNS] for r in [*rows, total(rows)]]
    print_table(
        "tokenwire chaos: exactly once, in order, through cuts",
        [header for header, _ in COLUMNS],
        cells,
        plain=plain,
        sections=[len(rows)],  # the total
    )
    for r in rows:
        for f in r.failures:
            print(f"FAILED {f}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--streams", type=int, default=20, help="streams per kind (default 20)")
    p.add_argument("--tokens", type=int, default=200, help="tokens per stream (default 200)")
    p.add_argument("--rate", type=float, default=200, help="tokens/s per stream (default 200)")
    p.add_argument("--seed", type=int, default=1, help="the plan's random seed (default 1)")
    p.add_argument("--max-cuts", type=int, default=3, help="proxy cuts per stream, 1..N (3)")
    p.add_argument(
        "--max-client-cuts", type=int, default=2, help="caller stops per stream, 0..N (2)"
    )
    p.add_argument("--kinds", default=",".join(KINDS), help="comma-separated kinds (all)")
    p.add_argument("--timeout", type=float, default=300, help="limit for the run, s (300)")
    p.add_argument(
        "--cluster",
        type=int,
        default=0,
        metavar="N",
        help="N processes on one redis-server started here (default: one, in memory)",
    )
    p.add_argument("--json", type=Path, help="also write the counts here")
    p.add_argument("--plain", action="store_true", help="a plain table, no rich")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = sorted(set(args.kinds) - set(KINDS))
    if unknown or args.streams < 1 or args.tokens < 2 or args.max_cuts < 1 or args.cluster < 0:
        raise SystemExit(f"bad arguments (unknown kinds: {unknown})")
    with contextlib.ExitStack() as stack:
        extra = []
        if args.cluster:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="chaos-")))
            redis_proc, url = start_redis(directory)
            stack.callback(stop_redis, redis_proc)
            extra = ["--store", url]
        servers = []
        for n in range(max(1, args.cluster)):
            server = spawn_server(
                4 * len(KINDS) * args.streams + 64,
                max(4096, args.tokens),
                600,
                [
                    *("--sse-retry-ms", "50", "--tokens-per-s", str(args.rate)),
                    *("--ttft-ms", "0", "--jitter", "0", *extra),
                    *(("--node-id", f"chaos-{n}") if args.cluster else ()),
                ],
            )
            stack.callback(stop_and_report, server)
            servers.append(server)
        for server in servers:
            wait_ready(server, 30)
        rows = asyncio.run(chaos(args, [s.base for s in servers]))
    print_rows(rows, args.plain)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in [*rows, total(rows)]], indent=1))
    t = total(rows)
    return 1 if (t.failed or t.losses or t.duplicates or t.wire_dups) else 0


if __name__ == "__main__":
    sys.exit(main())
