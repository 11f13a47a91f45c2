// Evaluated in a Chromium page of the lab's origin (bench/net/probes.py): opens `n`
// EventSources at once, each on its own long stream, and counts how many have received a
// token after `waitMs`. Over HTTP/1.1 the browser allows 6 connections per origin, so the
// rest wait; over HTTP/2 or HTTP/3 all of them share one connection and flow.
// Result: {flowing, opened, protocols, error}.
async ({ n, body, waitMs }) => {
  performance.clearResourceTimings();
  const json = { "Content-Type": "application/json" };
  const out = { flowing: 0, opened: 0, protocols: [], error: null };
  const sources = [];
  const got = new Array(n).fill(false);
  try {
    const ids = [];
    for (let i = 0; i < n; i++) {
      const r = await fetch("/api/streams", { method: "POST", headers: json, body: JSON.stringify(body) });
      if (!r.ok) throw new Error(`create: HTTP ${r.status}`);
      ids.push((await r.json()).id);
    }
    ids.forEach((id, i) => {
      const es = new EventSource(`/api/streams/${id}/sse`);
      es.addEventListener("token", () => { got[i] = true; });
      sources.push(es);
    });
    out.opened = sources.length;
    await new Promise((resolve) => setTimeout(resolve, waitMs));
    out.flowing = got.filter(Boolean).length;
  } catch (e) {
    out.error = String(e.message || e);
  } finally {
    for (const es of sources) es.close();
  }
  const seen = new Set();
  for (const e of performance.getEntriesByType("resource")) {
    if (e.name.includes("/api/")) seen.add(e.nextHopProtocol);
  }
  out.protocols = [...seen];
  return out;
}
