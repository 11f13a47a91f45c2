// Evaluated in a Chromium page of the lab's origin (bench/net/probes.py): reads one stream
// with the browser's own EventSource, fetch or WebSocket, and returns what arrived.
// Argument: {kind: "eventsource"|"fetch"|"websocket", body: {prompt, max_tokens, params},
// timeoutMs}. Result: {text, tokens, done, digestOk, firstMs, lastMs, startedMs,
// latenciesMs, reconnects, error, protocols}.
async ({ kind, body, timeoutMs }) => {
  performance.clearResourceTimings();
  const out = {
    text: "", tokens: 0, done: null, digestOk: null, startedMs: performance.now(),
    firstMs: null, lastMs: null, latenciesMs: [], reconnects: 0, error: null, protocols: [],
  };
  const token = (ev) => {
    const now = performance.now();
    if (out.firstMs === null) out.firstMs = now;
    out.lastMs = now;
    out.latenciesMs.push(Date.now() - ev.t / 1e6);
    out.tokens += 1;
    out.text += ev.text;
  };
  const json = { "Content-Type": "application/json" };
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no done within ${timeoutMs} ms`)), timeoutMs);
  });
  const read = async () => {
    if (kind === "eventsource") {
      const r = await fetch("/api/streams", { method: "POST", headers: json, body: JSON.stringify(body) });
      if (!r.ok) throw new Error(`create: HTTP ${r.status}`);
      const { id } = await r.json();
      await new Promise((resolve, reject) => {
        const es = new EventSource(`/api/streams/${id}/sse`);
        es.addEventListener("token", (e) => token(JSON.parse(e.data)));
        es.addEventListener("done", (e) => { out.done = JSON.parse(e.data); es.close(); resolve(); });
        es.onerror = (e) => {
          if (e.data) { es.close(); reject(new Error(`error event: ${e.data}`)); return; }
          out.reconnects += 1;
          if (es.readyState === EventSource.CLOSED) reject(new Error("EventSource closed"));
          if (out.reconnects > 20) { es.close(); reject(new Error("20 reconnects")); }
        };
      });
    } else if (kind === "fetch") {
      const r = await fetch("/api/chunked", { method: "POST", headers: json, body: JSON.stringify(body) });
      if (!r.ok) throw new Error(`HTTP ${r.status}: ${await r.text()}`);
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let i;
        while ((i = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          if (!line) continue;
          const ev = JSON.parse(line);
          if (ev.type === "token") token(ev);
          else if (ev.type === "done") out.done = ev;
        }
      }
    } else {
      const url = new URL("/api/ws", location.href);
      url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
      await new Promise((resolve, reject) => {
        const ws = new WebSocket(url);
        ws.onopen = () => ws.send(JSON.stringify({ op: "generate", ...body }));
        ws.onmessage = (m) => {
          const ev = JSON.parse(m.data);
          if (ev.type === "token") token(ev);
          else if (ev.type === "done") { out.done = ev; ws.close(); resolve(); }
          else if (ev.type === "error") { ws.close(); reject(new Error(`error event: ${m.data}`)); }
        };
        ws.onclose = (e) => { if (!out.done) reject(new Error(`WebSocket closed: ${e.code}`)); };
        ws.onerror = () => {};
      });
    }
  };
  try {
    await Promise.race([read(), deadline]);
  } catch (e) {
    out.error = String(e.message || e);
  } finally {
    clearTimeout(timer);
  }
  if (out.done && out.done.sha256) {
    const bytes = new TextEncoder().encode(out.text);
    const hash = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
    const hex = [...hash].map((b) => b.toString(16).padStart(2, "0")).join("");
    out.digestOk = hex === out.done.sha256;
  }
  // The protocol each request really used (Resource Timing). A WebSocket has no entry: it
  // opens its own HTTP/1.1 connection (no intermediary here offers WebSocket over HTTP/2).
  // Chromium lists a request when its response has ended, which may come a moment after
  // the `done` event this read stopped at: look again for up to 2 s (every 20 ms).
  const apiEntries = () =>
    performance.getEntriesByType("resource").filter((e) => e.name.includes("/api/"));
  for (let i = 0; i < 100 && kind !== "websocket" && apiEntries().length === 0; i++) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const seen = new Set();
  for (const e of apiEntries()) seen.add(e.nextHopProtocol);
  if (kind === "websocket") seen.add("http/1.1");
  out.protocols = [...seen];
  return out;
}
