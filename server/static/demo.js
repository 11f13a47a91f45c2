// The side-by-side demo: one prompt, four transports racing, live numbers.
//
// Shared mode (the default): the page creates one generation (POST /api/streams) and the
// four panels subscribe to it at once, each through its own client over its transport, so
// they race on the very same tokens. Independent mode: each panel starts its own generation
// (the synthetic source gives the same text for the same prompt, at its own pace).
//
// Everything a panel shows comes from the JS client (/js/tokenwire.js): the events, and the
// stream's gaps, transport latencies, bytes, requests and reconnects. Each panel's Wire tab
// shows the frames its client's `tap` option saw as the client read them (the last
// MAX_FRAMES). Model output and wire frames go into the page as text, never as HTML.
//
// Typed parts: a panel shows, in the order they arrive, reasoning (dimmed), tool calls (the
// name, then the argument JSON as its pieces come) and the answer. The form's Reasoning and
// "Call a tool" controls ask for them (`reasoning_effort`, `tools` and `tool_choice`).
//
// When /api/info says the server needs a token (--auth-token), a Token field appears; every
// client the page makes sends it (SSE is then read over fetch: EventSource cannot send it).
// The token stays in the page: it is not stored anywhere.

import { Client, DigestMismatch, TokenwireError } from "/js/tokenwire.js";
import { droppable } from "/static/faults.js";

const PANELS = [
  {
    transport: "sse",
    name: "Server-Sent Events",
    short: "SSE",
    how: "EventSource · text/event-stream",
  },
  { transport: "ws", name: "WebSocket", short: "WebSocket", how: "JSON messages on /api/ws" },
  {
    transport: "poll",
    name: "Long polling",
    short: "Long polling",
    how: "GET …/poll?after=N, one request per batch",
  },
  {
    transport: "chunked",
    name: "Chunked HTTP",
    short: "Chunked",
    how: "NDJSON · Transfer-Encoding: chunked",
  },
];
const RENDER_EVERY_MS = 100;
/** Frames a panel's Wire tab keeps (the oldest go first): a long run stays bounded. */
const MAX_FRAMES = 400;
/** What the Wire tab shows for the token where it went out (the WebSocket's auth message). */
const HIDDEN = "•••";
/** The Wire tab's note when EventSource reads SSE (it hides the wire). */
const REBUILT_NOTE =
  "EventSource hides the wire: these lines are rebuilt from its events " +
  "(comments and retry: lines are not seen).";

const $ = (selector, root = document) => root.querySelector(selector);

/** The tool the "Call a tool" control offers and forces. */
const DEMO_TOOL = {
  name: "get_weather",
  description: "The weather in a city",
  parameters: {
    type: "object",
    required: ["city", "days"],
    properties: { city: { type: "string" }, days: { type: "integer" } },
  },
};

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
    this.name = spec.name;
    this.short = spec.short;
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
    this.wireEl = $("[data-role=wire]", node);
    this.framesEl = $("[data-role=frames]", node);
    this.wireNote = $("[data-role=wire-note]", node);
    this.tabs = [...node.querySelectorAll("[data-tab]")];
    for (const tab of this.tabs) tab.addEventListener("click", () => this.show(tab.dataset.tab));
    this.show("text");
    this.metrics = Object.fromEntries(
      [...node.querySelectorAll("[data-metric]")].map((dd) => [dd.dataset.metric, dd]),
    );
    this.dropButton.addEventListener("click", () => this.drop());
    this.reset();
  }

  reset() {
    this.stream = null;
    this.faults = null;
    this.t0 = performance.now();
    this.arrivals = []; // ms since Start, one per token
    this.sentAt = []; // ms since Start, one per token: when the server stamped it (its `t`)
    this.reconnectMarks = []; // ms since Start, one per reconnect
    this.frames = []; // the Wire tab's rows (list items), at most MAX_FRAMES
    this.pending = []; // frames tapped since the last render
    this.droppedFrames = 0;
    this.framesEl.replaceChildren();
    this.wireNote.textContent = "";
    this.seenReconnects = 0;
    this.finishedAt = null;
    this.textEl.replaceChildren();
    this.textNode = this.textEl.appendChild(document.createTextNode(""));
    this.lastKind = "token"; // what the text view ends with: token, reasoning, tool_call:N
    this.reasoningNode = null; // the text node reasoning goes into now
    this.calls = new Map(); // tool call index -> the text node its arguments go into
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

  /** Show the "text" or the "wire" tab. */
  show(view) {
    this.el.dataset.view = view;
    for (const tab of this.tabs) {
      tab.setAttribute("aria-selected", String(tab.dataset.tab === view));
    }
    this.textEl.hidden = view !== "text";
    this.wireEl.hidden = view !== "wire";
  }

  /** A client whose connections the "Drop connection" button can cut, and whose frames
   * the Wire tab shows; times count from `t0` (performance.now() at Start). */
  client(token, t0) {
    this.t0 = t0;
    this.faults = droppable();
    const { fetch, WebSocket, EventSource } = this.faults;
    // A room sees the screen: the WebSocket's {"op":"auth"} message shows the token hidden.
    const secret = token ? JSON.stringify(token).slice(1, -1) : null;
    const tap = (frame) => {
      if (secret && frame.direction === "out" && frame.text.includes(secret)) {
        frame = { ...frame, text: frame.text.replaceAll(secret, HIDDEN) };
      }
      this.tapped(frame);
    };
    const options = { fetch, WebSocket, EventSource, backoffS: 0.1, token, tap };
    const client = new Client(location.origin, options);
    if (this.transport === "sse") {
      // EventSource cannot send the token: with one, the client reads SSE over fetch.
      $(".how", this.el).textContent = client.token ? "fetch · text/event-stream" : this.how;
    }
    return client;
  }

  /** The client's tap: keep the frame for the next render (bounded: the last MAX_FRAMES). */
  tapped(frame) {
    this.pending.push({ frame, at: performance.now() - this.t0 });
    if (this.pending.length > MAX_FRAMES) {
      this.pending.shift();
      this.droppedFrames += 1;
    }
    this.onChange();
  }

  /** Add the pending frames to the Wire tab, as text only; drop the oldest past MAX_FRAMES. */
  renderFrames() {
    if (!this.pending.length) return;
    const items = this.pending.map(({ frame, at }) => frameItem(frame, at));
    if (this.pending.some(({ frame }) => frame.kind === "rebuilt")) {
      this.wireNote.textContent = REBUILT_NOTE;
    }
    this.pending = [];
    this.framesEl.append(...items);
    this.frames.push(...items);
    const extra = this.frames.length - MAX_FRAMES;
    if (extra > 0) {
      for (const item of this.frames.splice(0, extra)) item.remove();
      this.droppedFrames += extra;
    }
    if (this.droppedFrames) {
      this.framesEl.dataset.dropped = String(this.droppedFrames);
      this.framesEl.title = `${num.format(this.droppedFrames)} older frames not kept`;
    }
    const el = this.wireEl;
    if (el.scrollHeight - el.scrollTop - el.clientHeight < 80) el.scrollTop = el.scrollHeight;
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
        if (event.type === "token" || event.type === "reasoning" || event.type === "tool_call") {
          this.arrivals.push(at);
          // `t`: the server's wall clock in ns (as a double: ~256 ns steps), on our timeline.
          this.sentAt.push(Number(event.t) / 1e6 - performance.timeOrigin - t0);
          this.showPart(event);
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

  /** One content event into the text view, as text only: the answer as it is, reasoning
   * in a dimmed span, a tool call as its name and its argument pieces. */
  showPart(event) {
    if (event.type === "token") {
      if (this.lastKind !== "token") {
        this.textNode = this.textEl.appendChild(document.createTextNode(""));
      }
      this.textNode.appendData(event.text);
    } else if (event.type === "reasoning") {
      if (this.lastKind !== "reasoning") {
        const span = document.createElement("span");
        span.className = "reasoning";
        span.title = "reasoning";
        this.reasoningNode = span.appendChild(document.createTextNode(""));
        this.textEl.append(span);
      }
      this.reasoningNode.appendData(event.text);
    } else {
      let args = this.calls.get(event.index);
      if (args === undefined) {
        const call = document.createElement("span");
        call.className = "call";
        call.dataset.index = String(event.index);
        const name = document.createElement("span");
        name.className = "call-name";
        name.textContent = event.name ?? "…"; // a read from inside a call never saw it
        const code = document.createElement("code");
        code.className = "call-args";
        args = code.appendChild(document.createTextNode(""));
        call.append(name, "(", code, ")");
        this.textEl.append(call);
        this.calls.set(event.index, args);
      }
      args.appendData(event.args);
    }
    this.lastKind = event.type === "tool_call" ? `tool_call:${event.index}` : event.type;
  }

  noteReconnects(at) {
    const reconnects = this.stream?.stats.reconnects ?? 0;
    while (this.seenReconnects < reconnects) {
      this.seenReconnects += 1;
      this.reconnectMarks.push(at);
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
    this.renderFrames();
    set("bpt", bytes != null && n ? (bytes / n).toFixed(1) : "–");
    set("requests", s ? num.format(s.requests) : "–");
    set("reconnects", num.format(s ? s.reconnects : 0));
    const el = this.textEl;
    if (el.scrollHeight - el.scrollTop - el.clientHeight < 80) el.scrollTop = el.scrollHeight;
  }
}

// --- a panel's Wire tab: one list item per frame, its text as text ---

const ARROWS = { out: "↑", in: "↓" };

/** A list item for one frame the client's tap saw `at` ms after Start. */
function frameItem(frame, at) {
  const li = document.createElement("li");
  li.dataset.direction = frame.direction;
  li.dataset.kind = frame.kind;
  if (frame.text === "") li.classList.add("blank"); // SSE's blank line: an event ends
  const dir = document.createElement("span");
  dir.className = "dir";
  dir.textContent = ARROWS[frame.direction];
  dir.title = frame.direction === "out" ? "sent" : "received";
  const text = document.createElement("code");
  text.textContent = frame.text; // from the wire: text only, never markup
  const meta = document.createElement("span");
  meta.className = "meta";
  const size = `${num.format(frame.nbytes)} B`;
  const sizes = { response: `${size} headers`, body: size, message: size };
  meta.textContent = [sizes[frame.kind], `${Math.round(at)} ms`].filter(Boolean).join(" · ");
  li.append(dir, text, meta);
  return li;
}

// --- the charts: each transport's lag behind the server, and its latencies ---

/** Set up a canvas for drawing at the device's pixel ratio; null if it has no size. */
function surface(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (!width || !height) return null;
  canvas.width = Math.round(width * dpr);
  canvas.height = Math.round(height * dpr);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const style = getComputedStyle(document.documentElement);
  const color = (name) => style.getPropertyValue(`--${name}`).trim();
  ctx.font = "11px system-ui, sans-serif";
  ctx.lineWidth = 1;
  return { ctx, color, width, height };
}

function timeLabel(t, tMax) {
  return tMax < 1000 ? `${Math.round(t)} ms` : `${Number((t / 1000).toFixed(1))} s`;
}

/** The lag chart: at each moment since Start, how many tokens the server had stamped
 * (`t`) that the panel had not received yet: a step line per transport. */
class LagChart {
  constructor(canvas, panels) {
    this.canvas = canvas;
    this.panels = panels;
    new ResizeObserver(() => this.draw()).observe(canvas);
  }

  /** [ms since Start, tokens behind] at each change, for one panel. */
  static steps(panel) {
    const sent = panel.sentAt;
    const got = panel.arrivals;
    const points = [[0, 0]];
    let i = 0;
    let j = 0;
    while (i < sent.length || j < got.length) {
      const t = Math.min(sent[i] ?? Infinity, got[j] ?? Infinity);
      while (i < sent.length && sent[i] <= t) i++;
      while (j < got.length && got[j] <= t) j++;
      points.push([Math.max(0, t), Math.max(0, i - j)]);
    }
    return points;
  }

  draw() {
    const s = surface(this.canvas);
    if (!s) return;
    const { ctx, color, width, height } = s;
    const pad = { left: 40, right: 16, top: 10, bottom: 28 };
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    const series = this.panels.map((p) => [p, LagChart.steps(p)]);
    // The time axis: a nice step, as many as fit (3 to 5), and the end on a step.
    const tLast = Math.max(100, ...this.panels.map((p) => p.arrivals.at(-1) ?? p.finishedAt ?? 0));
    const tStep = niceCeil(tLast / (width < 400 ? 3 : 5));
    const tMax = tStep * Math.ceil(tLast / tStep);
    // Whole tokens on the y axis: four steps of a nice whole size.
    const most = Math.max(2, ...series.flatMap(([, pts]) => pts.map((q) => q[1])));
    const step = Math.max(1, Math.round(niceCeil(most / 4)));
    const lagMax = step * Math.ceil(most / step);
    const x = (t) => pad.left + (Math.min(t, tMax) / tMax) * plotW;
    const y = (n) => pad.top + plotH - (n / lagMax) * plotH;

    ctx.fillStyle = color("muted");
    ctx.strokeStyle = color("line");
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (let t = 0; t <= tMax; t += tStep) {
      ctx.beginPath();
      ctx.moveTo(x(t), pad.top);
      ctx.lineTo(x(t), pad.top + plotH);
      ctx.stroke();
      const last = t + tStep > tMax;
      ctx.textAlign = last ? "right" : "center";
      ctx.fillText(timeLabel(t, tMax), x(t) + (last ? 4 : 0), pad.top + plotH + 6);
    }
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let n = 0; n <= lagMax; n += step) {
      ctx.beginPath();
      ctx.moveTo(pad.left, y(n));
      ctx.lineTo(pad.left + plotW, y(n));
      ctx.stroke();
      ctx.fillText(num.format(n), pad.left - 6, y(n));
    }
    for (const [panel, points] of series) {
      ctx.strokeStyle = color(panel.transport);
      ctx.lineWidth = 2;
      ctx.beginPath();
      let last = 0;
      for (const [t, n] of points) {
        ctx.lineTo(x(t), y(last));
        ctx.lineTo(x(t), y(n));
        last = n;
      }
      if (panel.arrivals.length) ctx.lineTo(x(panel.arrivals.at(-1)), y(last));
      ctx.stroke();
      for (const t of panel.reconnectMarks) {
        ctx.beginPath();
        ctx.arc(x(t), y(0), 5, 0, 2 * Math.PI);
        ctx.stroke();
      }
    }
  }
}

/** The latency chart: a box per transport on a log axis, so that a few slow tokens (a
 * reconnect, a poll's wait) do not flatten everything else. */
class LatencyChart {
  constructor(canvas, panels) {
    this.canvas = canvas;
    this.panels = panels;
    new ResizeObserver(() => this.draw()).observe(canvas);
  }

  draw() {
    const s = surface(this.canvas);
    if (!s) return;
    const { ctx, color, width, height } = s;
    const pad = { left: 84, right: 24, top: 8, bottom: 28 };
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    const FLOOR = 0.01; // ms: a log axis has no zero (clocks can put a token a hair early)
    const rows = this.panels.map((panel) => {
      const ns = panel.stream?.stats.latenciesNs ?? [];
      const values = ns.map((v) => Math.max(FLOOR, v / 1e6)).sort((a, b) => a - b);
      return { panel, values };
    });
    const all = rows.flatMap((r) => r.values);
    const lo = 10 ** Math.floor(Math.log10(all.length ? Math.min(...all) : 0.1));
    const hi = 10 ** Math.ceil(Math.log10(Math.max(lo * 10, ...all)));
    const x = (v) => pad.left + (Math.log10(v / lo) / Math.log10(hi / lo)) * plotW;
    const rowH = plotH / rows.length;

    ctx.strokeStyle = color("line");
    ctx.fillStyle = color("muted");
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    const decades = Math.round(Math.log10(hi / lo));
    const every = Math.ceil(decades / Math.max(1, Math.floor(plotW / 60)));
    for (let k = 0; k <= decades; k++) {
      const v = lo * 10 ** k;
      ctx.beginPath();
      ctx.moveTo(x(v), pad.top);
      ctx.lineTo(x(v), pad.top + plotH);
      ctx.stroke();
      const label = v >= 1000 ? `${v / 1000} s` : `${Number(v.toPrecision(1))} ms`;
      ctx.textAlign = k === decades ? "right" : k === 0 ? "left" : "center";
      if (k % every === 0) ctx.fillText(label, x(v) + (k === decades ? 4 : 0), pad.top + plotH + 6);
    }
    const q = (values, p) => values[Math.min(values.length - 1, Math.floor(p * values.length))];
    rows.forEach(({ panel, values }, i) => {
      const mid = pad.top + rowH * (i + 0.5);
      const c = color(panel.transport);
      ctx.fillStyle = c;
      ctx.textAlign = "right";
      ctx.textBaseline = "middle";
      ctx.fillText(panel.short, pad.left - 8, mid);
      if (!values.length) return;
      const [p5, p25, p50, p75, p95] = [0.05, 0.25, 0.5, 0.75, 0.95].map((p) => q(values, p));
      const boxH = Math.min(18, rowH * 0.5);
      ctx.strokeStyle = c;
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      ctx.moveTo(x(p5), mid);
      ctx.lineTo(x(p25), mid);
      ctx.moveTo(x(p75), mid);
      ctx.lineTo(x(p95), mid);
      for (const v of [p5, p95]) {
        ctx.moveTo(x(v), mid - boxH / 4);
        ctx.lineTo(x(v), mid + boxH / 4);
      }
      ctx.stroke();
      ctx.globalAlpha = 0.25;
      ctx.fillRect(x(p25), mid - boxH / 2, Math.max(1, x(p75) - x(p25)), boxH);
      ctx.globalAlpha = 1;
      ctx.strokeRect(x(p25), mid - boxH / 2, Math.max(1, x(p75) - x(p25)), boxH);
      ctx.lineWidth = 3;
      ctx.beginPath();
      ctx.moveTo(x(p50), mid - boxH / 2 - 2);
      ctx.lineTo(x(p50), mid + boxH / 2 + 2);
      ctx.stroke();
      for (const v of values) {
        if (v >= p5 && v <= p95) continue;
        ctx.fillRect(x(v) - 1.5, mid - 1.5, 3, 3);
      }
    });
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
  new LagChart($("#chart-lag"), panels),
  new LatencyChart($("#chart-latency"), panels),
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
  const effort = String(data.get("reasoning_effort") ?? "");
  if (effort) options.reasoning_effort = effort;
  if (data.has("tool")) {
    options.tools = [DEMO_TOOL];
    options.tool_choice = DEMO_TOOL.name;
  }
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
        p.client(token, t0).stream(prompt, { ...options, transport: p.transport }),
      );
    } else {
      const id = await pageClient.create(prompt, options);
      run.id = id;
      run.streams = panels.map((p) =>
        p.client(token, t0).subscribe(id, { transport: p.transport }),
      );
      setStatus(`Stream ${id}: four readers on one generation of “${excerpt(prompt)}”`);
    }
    await Promise.all(panels.map((p, i) => p.read(run.streams[i], t0)));
    const matched = panels.filter((p) => p.el.dataset.digest === "ok").length;
    const failed = panels.filter((p) => p.state === "error").length;
    const ids = [...new Set(run.streams.map((s) => s.id).filter(Boolean))];
    const took = ms(performance.now() - t0);
    // After Stop, say so, and how far each panel got (they may differ: each reader stops
    // at the cancel's `done`, or where it was when it had no stream id yet).
    const got = panels.map((p) => `${p.name} ${num.format(p.arrivals.length)}`).join(", ");
    setStatus(
      [
        ...(run.stopped ? [`Stopped after ${took}`, `tokens: ${got}`] : [`Finished in ${took}`]),
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
  current.stopped = true;
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
