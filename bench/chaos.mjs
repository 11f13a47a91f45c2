// The JS side of bench/chaos.py: reads a plan of streams (JSON on stdin), reads them all at
// once with the tokenwire JS client, each through its own cutting proxy, and prints one
// JSON line with what each stream delivered to its caller.
//
//   node --experimental-websocket --experimental-eventsource bench/chaos.mjs < plan.json
//
// Plan: {"timeoutMs": N, "streams": [{"key", "url", "transport", "eventSource", "prompt",
// "max_tokens", "params", "clientCuts": [seq, ...]}]}. At each seq in `clientCuts` the caller
// stops reading (the client closes its connection) and subscribes again after that seq.
// Result per stream: {"key", "id", "seqs", "texts" (each token's), "text", "done", "error",
// "reconnects", "duplicates", "requests", "clientCuts"}. The checks are the Python side's.
// Across processes (bench/chaos.py --cluster): with "createUrl", the stream is created there
// and read from "url"; with "resumeUrls", the k-th client cut resumes on resumeUrls[k % n].

import { setMaxListeners } from "node:events";

import { Client } from "../clients/js/tokenwire.js";

async function readPlan() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString("utf8"));
}

function clientFor(url, spec) {
  return new Client(url, {
    backoffS: 0.02,
    maxBackoffS: 0.5,
    maxReconnects: 50,
    pollTimeoutS: 5,
    ...(spec.eventSource ? {} : { EventSource: null }),
  });
}

async function run(spec, signal) {
  const client = clientFor(spec.url, spec);
  const resumers = (spec.resumeUrls ?? [spec.url]).map((url) => clientFor(url, spec));
  const out = {
    key: spec.key,
    id: null,
    seqs: [],
    texts: [],
    text: "",
    done: null,
    error: null,
    reconnects: 0,
    duplicates: 0,
    requests: 0,
    clientCuts: 0,
  };
  const cuts = [...spec.clientCuts];
  let stream;
  try {
    if (spec.createUrl) {
      const id = await clientFor(spec.createUrl, spec).create(spec.prompt, {
        max_tokens: spec.max_tokens,
        params: spec.params,
        signal,
      });
      stream = client.subscribe(id, { transport: spec.transport, signal });
    } else {
      stream = client.stream(spec.prompt, {
        transport: spec.transport,
        max_tokens: spec.max_tokens,
        params: spec.params,
        signal,
      });
    }
    for (;;) {
      let cut = false;
      for await (const ev of stream) {
        out.seqs.push(ev.seq);
        if (ev.type === "token") {
          out.text += ev.text;
          out.texts.push(ev.text);
        } else out.done = ev;
        if (cuts.length && ev.seq === cuts[0]) {
          cuts.shift();
          cut = ev.type === "token";
          if (cut) break; // the client closes its connection mid-stream
        }
      }
      out.id = stream.id;
      out.reconnects += stream.stats.reconnects;
      out.duplicates += stream.stats.duplicates;
      out.requests += stream.stats.requests;
      if (!cut) break;
      out.clientCuts += 1;
      stream = resumers[(out.clientCuts - 1) % resumers.length].subscribe(stream.id, {
        after: out.seqs.at(-1),
        transport: spec.transport,
        signal,
      });
    }
  } catch (e) {
    out.error = `${e.name}: ${e.message}`;
  }
  if (signal.aborted && !out.error) out.error = "timed out";
  return out;
}

const plan = await readPlan();
// Not AbortSignal.timeout(): its timer does not keep Node running, and a stream that waits
// on nothing but a socket must still end with "timed out" rather than a silent exit.
const deadline = new AbortController();
const timer = setTimeout(() => deadline.abort(), plan.timeoutMs);
const { signal } = deadline;
setMaxListeners(plan.streams.length * 4 + 10, signal);
const results = await Promise.all(plan.streams.map((s) => run(s, signal)));
clearTimeout(timer);
// Exit once the output is flushed (a pipe is written asynchronously): sockets an
// EventSource or fetch left behind must not keep the process alive.
process.stdout.write(`${JSON.stringify(results)}\n`, () => process.exit(0));
