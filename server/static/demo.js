// The side-by-side demo: one prompt, four transports racing, live numbers.
//
// Shared mode (the default): the page creates one generation (POST /api/streams) and the
// four panels subscribe to it at once, each through its own client over its transport, so
// they race on the very same tokens. Independent mode: each panel starts its own generation
// (the synthetic source gives the same text for the same prompt, at its own pace).
//
// Everything a panel shows comes from the JS client (/js/tokenwire.js): the events, and the
// stream's gaps, transport latencies, bytes, requests and reconnects. Model output goes into
// the page as text nodes, never as HTML.
//
// When /api/info says the server needs a token (--auth-token), a Token field appears; every
// client the page makes sends it (SSE is then read over fetch: EventSource cannot send it).
// The token stays in the page: it is not stored anywhere.

import { Client, DigestMismatch, TokenwireError } from "/js/tokenwire.js";
import { droppable } from "/static/faults.js";

const PANELS = [
  { transport: "sse", name: "Server-Sent Events", how: "EventSource · text/event-stream" },
  { transport: "ws", name: "WebSocket", how: "JSON messages on /api/ws" },
  { transport: "poll", name: "Long polling", how: "GET …/poll?after=N, one request per batch" },
  { transport: "chunked", name: "Chunked HTTP", how: "NDJSON · Transfer-Encoding: chunked" },
];
const RENDER_EVERY_MS = 100;

const $ = (selector, root = document) => root.querySelector(selector);

// --- formatting ---

const num = new Intl.NumberFormat("en-US");

function ms(value) {
  if (value == null) return "–";
  if (value < 1) return `${value.toFixed(2)} ms`;
  if (value < 100) return `${value.toFixed(1)} ms`;
  return `${num.format(Math.round(value))} ms`;
}

function describe(error) {
  if (error instanceof DigestMismatch) return "the text does not match the server's sha256";
  if (error instanceof TokenwireError && error.code) {
    return `${error.code}: ${error.serverMessage ?? error.message}`;
  }
  return `${error.name}: ${error.message}`;
}

// --- one panel: one transport's reader ---

class Panel {
  constructor(spec, onChange) {
    this.transport = spec.transport;
    this.how = spec.how;
    this.onChange = onChange;
    const node = $("#panel-template").content.firstElementChild.cloneNode(true);
    node.dataset.transport = spec.transport;
    $(".name", node).textContent = spec.name;
    $(".how", node).textContent = spec.how;
    $(".how", node).title = spec.how;
    this.el = node;
    this.textEl = $("[data-role=text]", node);
    this.badge = $("[data-role=state]", node);
    this.digestEl = $("[data-role=digest]", node);
    this.dropButton = $("[data-role=drop]", node);
    this.metrics = Object.fromEntries(
      [...node.querySelectorAll("[data-metric]")].map((dd) => [dd.dataset.metric, dd]),
    );
    this.dropButton.addEventListener("click", () => this.drop());
    this.reset();
  }

  reset() {
    this.stream = null;
    this.faults = null;
    this.arrivals = []; // ms since Start, one per token
    this.reconnectMarks = []; // [ms since Start, tokens] per reconnect
    this.seenReconnects = 0;
    this.finishedAt = null;
    this.textEl.replaceChildren();
    this.textNode = this.textEl.appendChild(document.createTextNode(""));
    this.digestEl.textContent = "sha256: –";
    this.digestEl.className = "digest";
    delete this.el.dataset.digest;
    delete this.el.dataset.stream;
    this.setState("idle");
    this.render();
  }

  setState(state) {
    this.state = state;
    this.el.dataset.state = state;
    this.badge.textContent = state;
    this.dropButton.disabled = !["connecting", "streaming", "reconnecting"].includes(state);
  }

  /** A client whose connections the "Drop connection" button can cut. */
  client(token) {
    this.faults = droppable();
    const { fetch, WebSocket, EventSource } = this.faults;
    const options = { fetch, WebSocket, EventSource, backoffS: 0.1, token };
    const client = new Client(location.origin, options);
    if (this.transport === "sse") {
      // EventSource cannot send the token: with one, the client reads SSE over fetch.
      $(".how", this.el).textContent = client.token ? "fetch · text/event-stream" : this.how;
    }
    return client;
  }

  drop() {
    if (!this.faults || this.dropButton.disabled) return;
    this.faults.drop();
    this.setState("reconnecting");
    this.el.classList.remove("flash");
    void this.el.offsetWidth; // restart the animation
    this.el.classList.add("flash");
  }

  /** Read `stream` to its end; times are measured from `t0` (performance.now() at Start). */
  async read(stream, t0) {
    this.stream = stream;
    this.setState("connecting");
    try {
      for await (const event of stream) {
        const at = performance.now() - t0;
        this.el.dataset.stream = stream.id;
        this.noteReconnects(at);
        if (event.type === "token") {
          this.arrivals.push(at);
          this.textNode.appendData(event.text);
          if (this.state !== "streaming") this.setState("streaming");
        } else if (event.type === "done") {
          this.finishedAt = at;
          this.showDigest(event);
          this.setState(event.finish_reason === "cancelled" ? "cancelled" : "done");
        }
        this.onChange();
      }
      if (!stream.done && this.state !== "error") this.setState("stopped");
    } catch (error) {
      this.fail(error);
    } finally {
      if (stream.id) this.el.dataset.stream = stream.id;
      this.noteReconnects(performance.now() - t0);
      this.render();
      this.onChange();
    }
  }

  noteReconnects(at) {
    const reconnects = this.stream?.stats.reconnects ?? 0;
    while (this.seenReconnects < reconnects) {
      this.seenReconnects += 1;
      this.reconnectMarks.push([at, this.arrivals.length]);
    }
  }

  showDigest(done) {
    const ok = this.stream.digestOk;
    const short = `${done.sha256.slice(0, 12)}…`;
    this.el.dataset.digest = ok === true ? "ok" : ok === false ? "mismatch" : "unchecked";
    this.digestEl.className = `digest ${ok === true ? "ok" : ok === false ? "bad" : ""}`;
    this.digestEl.textContent =
      ok === true ? `sha256 ✓ matches ${short}` : `sha256 ${short} (not checked)`;
    this.digestEl.title = `server sha256: ${done.sha256}`;
  }

  fail(error) {
    if (error instanceof DigestMismatch) {
      this.el.dataset.digest = "mismatch";
      this.digestEl.className = "digest bad";
      this.digestEl.textContent = "sha256 ✗ mismatch";
    }
    const line = document.createElement("span");
    line.className = "error";
    line.textContent = describe(error);
    this.textEl.append(line);
    this.setState("error");
  }

  render() {
    // Sorted once per render; the latency chart, drawn after the panels, reads it too.
    const s = (this.summary = this.stream?.stats.summary() ?? null);
    const n = this.arrivals.length;
    const set = (key, text) => {
      if (this.metrics[key].textContent !== text) this.metrics[key].textContent = text;
    };
    set("ttft", ms(n ? this.arrivals[0] : null));
    const span = n > 1 ? this.arrivals[n - 1] - this.arrivals[0] : 0;
    set("rate", span > 0 ? ((n - 1) * 1000 / span).toFixed(1) : "–");
    set("gap50", ms(s?.gap_p50_ms));
    set("gap95", ms(s?.gap_p95_ms));
    set("latency", ms(s?.latency_p50_ms));
    set("tokens", num.format(n));
    const bytes = s ? s.bytes_received : null;
    const rebuilt = this.transport === "sse" && this.stream?.client.token === null; // EventSource
    set("bytes", bytes == null ? "–" : `${rebuilt ? "≈" : ""}${num.format(bytes)} B`);
    set("bpt", bytes != null && n ? (bytes / n).toFixed(1) : "–");
    set("requests", s ? num.format(s.requests) : "–");
    set("reconnects", num.format(s ? s.reconnects : 0));
    const el = this.textEl;
    if (el.scrollHeight - el.scrollTop - el.clientHeight < 80) el.scrollTop = el.scrollHeight;
  }
}

// --- the charts: tokens received over time, and each token's transport latency ---

class Chart {
  /** `kind`: "arrivals" (tokens received, a step line per transport) or "latency" (a dot
   * per token: its arrival time and transport latency, clipped at the top). */
  constructor(canvas, panels, kind) {
    this.canvas = canvas;
    this.panels = panels;
    this.kind = kind;
    new ResizeObserver(() => this.draw()).observe(canvas);
  }

  /** The y axis' top: tokens for "arrivals"; for "latency" the largest p95 times two, so
   * one slow token (a reconnect) does not flatten everything else. */
  yMax() {
    if (this.kind === "arrivals") return Math.max(10, ...this.panels.map((p) => p.arrivals.length));
    const p95s = this.panels.map((p) => p.summary?.latency_p95_ms ?? 0);
    return Math.max(1, 2 * Math.max(...p95s));
  }

  draw() {
    const { canvas } = this;
    const dpr = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (!width || !height) return;
    canvas.width = Math.round(width * dpr);
    canvas.height = Math.round(height * dpr);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);

    const style = getComputedStyle(document.documentElement);
    const color = (name) => style.getPropertyValue(`--${name}`).trim();
    const pad = { left: 48, right: 24, top: 10, bottom: 28 };
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    const tMax = niceCeil(
      Math.max(100, ...this.panels.map((p) => p.arrivals.at(-1) ?? p.finishedAt ?? 0)),
    );
    const nMax = niceCeil(this.yMax());
    const x = (t) => pad.left + (t / tMax) * plotW;
    const y = (n) => pad.top + plotH - (n / nMax) * plotH;

    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = color("muted");
    ctx.strokeStyle = color("line");
    ctx.lineWidth = 1;
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (let i = 0; i <= 5; i++) {
      const t = (tMax * i) / 5;
      ctx.beginPath();
      ctx.moveTo(x(t), pad.top);
      ctx.lineTo(x(t), pad.top + plotH);
      ctx.stroke();
      const label = tMax < 1000 ? `${Math.round(t)} ms` : `${Number((t / 1000).toFixed(1))} s`;
      ctx.fillText(label, x(t), pad.top + plotH + 6);
    }
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let i = 0; i <= 5; i++) {
      const n = (nMax * i) / 5;
      ctx.beginPath();
      ctx.moveTo(pad.left, y(n));
      ctx.lineTo(pad.left + plotW, y(n));
      ctx.stroke();
      const label = nMax >= 20 ? num.format(Math.round(n)) : String(Number(n.toFixed(2)));
      ctx.fillText(`${label}${this.kind === "latency" ? " ms" : ""}`, pad.left - 6, y(n));
    }
    if (this.kind === "latency") this.drawLatencies(ctx, color, x, y, nMax);
    else this.drawArrivals(ctx, color, x, y);
  }

  drawLatencies(ctx, color, x, y, top) {
    for (const panel of this.panels) {
      const latenciesNs = panel.stream?.stats.latenciesNs ?? [];
      ctx.fillStyle = color(panel.transport);
      panel.arrivals.forEach((t, i) => {
        if (latenciesNs[i] === undefined) return;
        ctx.fillRect(x(t) - 1.5, y(Math.min(latenciesNs[i] / 1e6, top)) - 1.5, 3, 3);
      });
    }
  }

  drawArrivals(ctx, color, x, y) {
    for (const panel of this.panels) {
      ctx.strokeStyle = color(panel.transport);
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.moveTo(x(0), y(0));
      panel.arrivals.forEach((t, i) => {
        ctx.lineTo(x(t), y(i));
        ctx.lineTo(x(t), y(i + 1));
      });
      ctx.stroke();
      for (const [t, n] of panel.reconnectMarks) {
        ctx.beginPath();
        ctx.arc(x(t), y(n), 5, 0, 2 * Math.PI);
        ctx.stroke();
      }
    }
  }
}

function niceCeil(value) {
  const step = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * step >= value) return m * step;
  return 10 * step;
}

// --- the page ---

const form = $("#controls");
const statusEl = $("#status");
let pageClient = new Client(location.origin);
let render = null; // a pending render timer
let run = null; // { streams, id, t0 } while a run is on
let runs = 0; // how many runs were started (body[data-started])

const panels = PANELS.map((spec) => new Panel(spec, scheduleRender));
$("#panels").append(...panels.map((p) => p.el));
$("#legend").append(
  ...PANELS.map((spec) => {
    const li = document.createElement("li");
    li.dataset.transport = spec.transport;
    li.textContent = spec.name;
    return li;
  }),
);
const charts = [
  new Chart($("#chart-arrivals"), panels, "arrivals"),
  new Chart($("#chart-latency"), panels, "latency"),
];

function scheduleRender() {
  if (render !== null) return;
  render = setTimeout(() => {
    render = null;
    for (const panel of panels) panel.render();
    for (const chart of charts) chart.draw();
  }, RENDER_EVERY_MS);
}

function setStatus(text, { error = false } = {}) {
  statusEl.textContent = text;
  statusEl.classList.toggle("error", error);
}

function setRunning(running) {
  document.body.dataset.run = running ? "running" : "finished";
  $("#start").disabled = running;
  $("#stop").disabled = !running;
}

function request() {
  const data = new FormData(form);
  const source = String(data.get("source"));
  const options = { max_tokens: Number(data.get("max_tokens")), source };
  if (source === "synthetic") {
    options.params = {
      tokens_per_s: Number(data.get("tokens_per_s")),
      ttft_ms: Number(data.get("ttft_ms")),
      jitter: Number(data.get("jitter")),
    };
  }
  const token = $("#token-field").hidden ? null : String(data.get("token")).trim() || null;
  const prompt = String(data.get("prompt"));
  return { prompt, independent: data.has("independent"), options, token };
}

function excerpt(text, length = 60) {
  const flat = text.replace(/\s+/g, " ").trim();
  return flat.length > length ? `${flat.slice(0, length)}…` : flat;
}

async function start() {
  if (run) return;
  const { prompt, independent, options, token } = request();
  pageClient = new Client(location.origin, { token });
  for (const panel of panels) panel.reset();
  for (const chart of charts) chart.draw();
  const t0 = performance.now();
  run = { streams: [], t0 };
  document.body.dataset.started = String(++runs);
  setRunning(true);
  setStatus(`Starting: “${excerpt(prompt)}”`);
  try {
    if (independent) {
      run.streams = panels.map((p) =>
        p.client(token).stream(prompt, { ...options, transport: p.transport }),
      );
    } else {
      const id = await pageClient.create(prompt, options);
      run.id = id;
      run.streams = panels.map((p) => p.client(token).subscribe(id, { transport: p.transport }));
      setStatus(`Stream ${id}: four readers on one generation of “${excerpt(prompt)}”`);
    }
    await Promise.all(panels.map((p, i) => p.read(run.streams[i], t0)));
    const matched = panels.filter((p) => p.el.dataset.digest === "ok").length;
    const failed = panels.filter((p) => p.state === "error").length;
    const ids = [...new Set(run.streams.map((s) => s.id).filter(Boolean))];
    setStatus(
      [
        `Finished in ${ms(performance.now() - t0)}`,
        `${matched}/4 panels match the server's sha256`,
        ...(failed ? [`${failed} ended with an error`] : []),
        `stream${ids.length > 1 ? "s" : ""} ${ids.join(", ")}`,
      ].join(" · "),
      { error: matched !== 4 },
    );
  } catch (error) {
    for (const panel of panels) panel.setState("idle");
    setStatus(`Could not start: ${describe(error)}`, { error: true });
  } finally {
    run = null;
    setRunning(false);
    scheduleRender();
  }
}

/** Cancel the generation(s): each reader ends with `done`/`cancelled` and its digest. */
async function stop() {
  if (!run) return;
  const current = run;
  const ids = [...new Set([current.id, ...current.streams.map((s) => s.id)].filter(Boolean))];
  setStatus(`Cancelling ${ids.join(", ")}…`);
  await Promise.allSettled(ids.map((id) => pageClient.cancel(id)));
  // A reader that has not got its stream id yet (still connecting) just stops.
  setTimeout(() => {
    if (run === current) for (const s of current.streams) if (!s.id) s.close();
  }, 2000);
}

async function loadSources() {
  try {
    const info = await (await fetch("/api/info")).json();
    const select = $("#source");
    select.replaceChildren(
      ...info.sources.map((s) => {
        const option = document.createElement("option");
        option.value = s.name;
        option.textContent = s.model ? `${s.name} · ${s.model}` : s.name;
        option.selected = s.default;
        return option;
      }),
    );
    $("#token-field").hidden = !info.auth;
    const limits = info.limits;
    $("#max-tokens").max = String(limits.max_tokens);
    $("#ttft").max = String(limits.max_ttft_ms);
    $("#tps").max = String(Math.min(300, limits.max_tokens_per_s));
    const synthetic = info.sources.find((s) => s.name === "synthetic");
    if (synthetic) {
      $("#tps").value = String(synthetic.params.tokens_per_s || 30);
      $("#ttft").value = String(synthetic.params.ttft_ms);
      $("#jitter").value = String(synthetic.params.jitter);
    }
    syncControls();
  } catch (error) {
    setStatus(`Could not read /api/info: ${describe(error)}`, { error: true });
  }
}

function syncControls() {
  $("#pace").disabled = $("#source").value !== "synthetic";
  $("#tps-out").value = $("#tps").value;
}

form.addEventListener("submit", (e) => {
  e.preventDefault();
  start();
});
form.addEventListener("input", syncControls);
$("#stop").addEventListener("click", stop);
$("#prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
    e.preventDefault();
    form.requestSubmit();
  }
});

await loadSources();
document.body.dataset.run = "idle";
