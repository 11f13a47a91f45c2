// The scenarios third-party JS clients run against tokenwire, the same in Node
// (tests/conformance/node_clients.mjs) and in Chromium (a test page imports this file).
// They use only what every implementation has: the EventSource and WebSocket APIs.

/**
 * Read an SSE URL with `EventSource` until it stops reconnecting (a non-200 answer, such
 * as tokenwire's 204 once everything was delivered) or `limitMs` passes. Resolves with
 * every event (type, lastEventId, parsed data) and the readyState at each error.
 */
export function readEventSource(EventSource, url, { limitMs = 20000 } = {}) {
  return new Promise((resolve) => {
    const events = [];
    const errors = [];
    const es = new EventSource(url);
    let ended = false;
    const finish = (why) => {
      if (ended) return;
      ended = true;
      const readyState = es.readyState;
      clearTimeout(timer);
      clearInterval(watch);
      es.close();
      resolve({ events, errors, why, readyState });
    };
    const timer = setTimeout(() => finish("timeout"), limitMs);
    // Node 20's EventSource can go CLOSED without an event: look at readyState as well.
    const watch = setInterval(() => es.readyState === 2 && finish("closed"), 50);
    const onEvent = (e) =>
      events.push({ type: e.type, lastEventId: e.lastEventId, data: JSON.parse(e.data) });
    es.addEventListener("token", onEvent);
    es.addEventListener("done", onEvent);
    es.addEventListener("error", (e) => {
      if (typeof e.data === "string") return onEvent(e); // the stream's own error event
      errors.push(es.readyState);
      if (es.readyState === 2) finish("closed");
    });
  });
}

function open(WebSocket, url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    const queue = [];
    let wake = null;
    ws.addEventListener("message", (m) => {
      queue.push(JSON.parse(m.data));
      if (wake) wake();
    });
    ws.addEventListener("open", () =>
      resolve({
        send: (obj) => ws.send(JSON.stringify(obj)),
        async next() {
          while (!queue.length) await new Promise((r) => (wake = r));
          wake = null;
          return queue.shift();
        },
        close: () => ws.close(1000),
      }),
    );
    ws.addEventListener("error", () => reject(new Error(`cannot connect to ${url}`)));
  });
}

async function until(conn, stop) {
  const out = [];
  for (;;) {
    const msg = await conn.next();
    out.push(msg);
    if (stop(msg)) return out;
  }
}

/**
 * Generate, subscribe and cancel over two sockets: A generates; once A has seq 5, B
 * subscribes after seq 2; once B has its first event, A cancels. Both read to the end.
 */
export async function generateSubscribeCancel(WebSocket, url, body) {
  const a = await open(WebSocket, url);
  a.send({ op: "generate", ...body });
  const created = await a.next();
  const terminal = (m) => m.type === "done" || m.type === "error";
  const aEvents = await until(a, (m) => m.seq >= 5 || terminal(m));
  const b = await open(WebSocket, url);
  b.send({ op: "subscribe", stream: created.stream, after: 2 });
  const bEvents = await until(b, () => true);
  a.send({ op: "cancel", stream: created.stream });
  aEvents.push(...(await until(a, terminal)));
  if (!terminal(bEvents.at(-1))) bEvents.push(...(await until(b, terminal)));
  a.close();
  b.close();
  return { created, aEvents, bEvents };
}
