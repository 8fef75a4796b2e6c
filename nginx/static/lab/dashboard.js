// The dashboard's controls and I/O: fire requests with fetch(), read the
// trace headers, redraw the timelines as answers arrive, list every error,
// and set the lab_mode cookie that picks the mode of "/" for this browser.

import {
  buildPath,
  ENDPOINTS,
  inFlight,
  MODES,
  maxConcurrency,
  multiplexed,
  parseConcurrency,
  parseTrace,
  protocolName,
  summarize,
  timeZero,
  verdict,
} from "./model.js";
import { initServers } from "./servers.js";
import { drawTimeline, formatMs } from "./timeline.js";

// What each picture shows, beside its timeline.
const EXPLAIN = {
  cgi: {
    title: "CGI",
    sub: "a new process per request (RFC 3875)",
    text:
      "The gateway starts a fresh Python process for every request and lets it exit after " +
      "one answer. Look for one lane per request, each with a new pid; each bar includes " +
      "starting Python, so it is longer than the work asked for.",
  },
  wsgi: {
    title: "WSGI",
    sub: "pre-forked sync workers (PEP 3333)",
    text:
      "gunicorn forks a fixed pool of workers at start-up; each runs one request from start " +
      "to end before it takes the next. Look for a few lanes that stay the same from run to " +
      "run, bars in one lane that never overlap, and a second round once every worker is busy.",
  },
  asgi: {
    title: "ASGI",
    sub: "an asyncio event loop per worker",
    text:
      "Each worker runs an event loop. While one request waits (await in /coffee), the loop " +
      "starts the next, so bars in one lane overlap. CPU work (/omelette) or a blocking call " +
      "(/blocking-coffee) holds the loop, and the bars line up one after another again.",
  },
  active: {
    title: '"/"',
    sub: "the mode this browser reaches",
    text:
      "nginx sends / to the active mode: an X-Lab-Mode header, else this browser's lab_mode " +
      "cookie (set it above), else the lab's default (make switch). The lane labels show " +
      "which mode answered.",
  },
};

// The text above describes each mode's default server; a run served by another
// one (the server picker, `lab server`) gets this note under it.
const SERVER_NOTES = {
  fcgiwrap:
    "This run was served by fcgiwrap: nginx speaks FastCGI to it, and it forks the same " +
    "script for every request. Each lane's worker is the fcgiwrap process that forked it.",
  gthread:
    "This run was served by gunicorn's gthread worker: the same processes, each with " +
    "threads, so bars in one lane can overlap. Threads overlap waits; Python work still " +
    "takes turns on the GIL.",
  uwsgi:
    "This run was served by sync workers that speak the uwsgi protocol to nginx instead " +
    "of HTTP: another wire, the same one-request-at-a-time workers.",
  uvicorn: "This run was served by uvicorn's own server: still one event loop per worker.",
};

const $ = (id) => document.getElementById(id);

const state = {
  running: false,
  runId: 0,
  panels: [], // {key, results, wallMs, started, state, nodes}
  errors: new Map(), // key -> {count, li}
};

const nowEpoch = () => (performance.timeOrigin + performance.now()) / 1000;

// The protocol this page came over (Resource Timing: the navigation's ALPN id,
// "h2" or "http/1.1"). The requests it fires go the same way, to the same server.
const PROTOCOL = performance.getEntriesByType("navigation")[0]?.nextHopProtocol ?? "";
const MAX_AT_ONCE = maxConcurrency(PROTOCOL);

// -- the protocol, and what it means for "At once" -------------------------------------

function showProtocol() {
  document.body.dataset.protocol = PROTOCOL || "unknown";
  $("concurrency").max = String(MAX_AT_ONCE);
  const name = protocolName(PROTOCOL) || "an unknown protocol";
  $("protocol").textContent = multiplexed(PROTOCOL)
    ? `This page came over ${name}: the browser sends every request on one connection, ` +
      `all at once (up to ${MAX_AT_ONCE}).`
    : `This page came over ${name}: the browser sends at most 6 requests at once to one ` +
      "server. Open the lab's https address (tls_url in `lab status`) for HTTP/2.";
}

/** Over HTTP/2 the legend's note on the 6-connection limit gives way to what happened. */
function showConnectionNote(panel) {
  if (!multiplexed(PROTOCOL)) return;
  const sent = panel.results.length;
  const peak = inFlight(panel.results);
  $("connection-note").textContent =
    `Over ${protocolName(PROTOCOL)} the browser's limit of 6 connections per server does ` +
    `not apply: the ${sent} requests of the last run left together on one connection, and ` +
    `the app had up to ${peak} of them in progress at once. Any wave in the timeline is ` +
    "the server's doing.";
  $("connection-note").dataset.inFlight = String(peak);
}

// -- errors: every one is shown, grouped when identical ---------------------------

function addError({ mode, status, message, path }) {
  const key = `${mode}|${status}|${message}`;
  const known = state.errors.get(key);
  if (known) {
    known.count += 1;
    known.li.querySelector(".count").textContent = `\u00d7${known.count}`;
  } else {
    const li = document.createElement("li");
    li.dataset.status = String(status);
    li.dataset.mode = mode;
    const what = document.createElement("strong");
    what.textContent = status ? `${status}` : "network";
    const where = document.createElement("code");
    where.textContent = path;
    const count = document.createElement("span");
    count.className = "count";
    li.append(what, " ", where, ": ", message, " ", count);
    $("error-list").append(li);
    state.errors.set(key, { count: 1, li });
  }
  const box = $("errors");
  box.hidden = false;
  const total = [...state.errors.values()].reduce((n, e) => n + e.count, 0);
  $("errors-title").textContent = `Errors (${total})`;
}

function clearErrors() {
  state.errors.clear();
  $("error-list").replaceChildren();
  $("errors").hidden = true;
}

/** A sentence for a 4xx/5xx: the JSON {"error", "status"[, "mode"]} when there is one. */
function describeHttpError(status, body, trace) {
  let message = body.trim().slice(0, 200) || "(empty body)";
  let mode = trace ? trace.mode : "";
  try {
    const json = JSON.parse(body);
    if (json && typeof json.error === "string") message = json.error;
    if (json && typeof json.mode === "string") mode = json.mode;
  } catch {
    // Not JSON: keep the text itself.
  }
  const who = trace ? `the app (${trace.mode})` : `nginx${mode ? ` (mode ${mode})` : ""}`;
  return `${message} \u2014 answered by ${who}`;
}

window.addEventListener("error", (event) => {
  addError({ mode: "page", status: 0, message: `script error: ${event.message}`, path: "/lab/" });
});
window.addEventListener("unhandledrejection", (event) => {
  addError({ mode: "page", status: 0, message: `script error: ${event.reason}`, path: "/lab/" });
});

// -- one request --------------------------------------------------------------------

async function fireOne(path, index) {
  const sent = nowEpoch();
  const t = performance.now();
  try {
    const response = await fetch(path, { cache: "no-store", credentials: "same-origin" });
    const body = await response.text();
    const trace = parseTrace((name) => response.headers.get(name));
    const result = {
      index,
      path,
      status: response.status,
      ok: response.ok && trace !== null,
      trace,
      sent,
      latencyMs: performance.now() - t,
      error: null,
    };
    if (!response.ok) result.error = describeHttpError(response.status, body, trace);
    else if (!trace) result.error = "the answer carried no trace headers";
    return result;
  } catch (err) {
    return {
      index,
      path,
      status: 0,
      ok: false,
      trace: null,
      sent,
      latencyMs: performance.now() - t,
      error: `network error: ${err.message} (is the lab running?)`,
    };
  }
}

// -- panels ---------------------------------------------------------------------

function makePanel(key) {
  const info = EXPLAIN[key];
  const section = document.createElement("section");
  section.className = `panel panel-${key}`;
  section.id = `panel-${key}`;
  section.dataset.mode = key;
  section.dataset.state = "idle";
  section.setAttribute("aria-labelledby", `panel-${key}-title`);
  section.innerHTML = `
    <div class="explain">
      <h2 id="panel-${key}-title"><span class="mode-chip mode-chip-${key}"></span>
        ${info.title} <span class="sub">${info.sub}</span></h2>
      <p>${info.text}</p>
      <p class="server-note" data-stat="server-note"></p>
      <p class="verdict" id="verdict-${key}" data-stat="verdict"></p>
    </div>
    <div class="chart">
      <svg class="timeline" id="timeline-${key}" role="group"
           aria-label="${info.title} timeline: one lane per process, one bar per request"></svg>
      <dl class="summary" id="summary-${key}">
        ${[
          ["servers", "server"],
          ["requests", "requests"],
          ["processes", "processes"],
          ["max-overlap", "most at once in one process"],
          ["wall-ms", "wall time (ms)"],
          ["rps", "requests / s"],
          ["errors", "errors"],
        ]
          .map(
            ([stat, label]) =>
              `<div><dt>${label}</dt><dd id="summary-${key}-${stat}" data-stat="${stat}">\u2013</dd></div>`,
          )
          .join("")}
      </dl>
    </div>`;
  return {
    key,
    results: [],
    wallMs: 0,
    started: 0,
    state: "idle",
    nodes: {
      section,
      svg: section.querySelector("svg"),
      verdict: section.querySelector(".verdict"),
      stat: (name) => section.querySelector(`[data-stat="${name}"]`),
    },
  };
}

function showPanels(keys) {
  state.panels = keys.map(makePanel);
  $("panels").replaceChildren(...state.panels.map((p) => p.nodes.section));
  redrawAll();
}

function panelKeys(mode) {
  return mode === "all" ? [...MODES] : [mode];
}

/** The axis length shared by every panel of the run, so their bars compare. */
function sharedSpanMs() {
  let span = 0;
  for (const panel of state.panels) {
    if (panel.results.length === 0) continue;
    const { t0 } = timeZero(panel.results);
    for (const r of panel.results) {
      if (r.trace) span = Math.max(span, (r.trace.end - t0) * 1000);
    }
  }
  return span || 1000;
}

function redrawPanel(panel, spanMs) {
  const { t0, clocksAgree } = timeZero(panel.results);
  const width = Math.max(panel.nodes.svg.parentElement.clientWidth, 480);
  const emptyText = {
    idle: "Press Fire: one bar per request appears here, one lane per process.",
    queued: "Waiting for its turn\u2026",
    running: "Requests sent, waiting for answers\u2026",
    done: "No bars: no answer carried trace headers (see the errors above).",
  }[panel.state];
  drawTimeline(panel.nodes.svg, panel.results, { width, spanMs, t0, clocksAgree, emptyText });
  panel.t0 = t0;
  panel.nodes.section.dataset.state = panel.state;
  const s = summarize(panel.results, panel.wallMs);
  const stat = panel.nodes.stat;
  const has = panel.results.length > 0;
  stat("servers").textContent = has && s.servers ? s.servers : "\u2013";
  stat("requests").textContent = has ? `${s.requests}` : "\u2013";
  stat("processes").textContent = has ? `${s.processes}` : "\u2013";
  stat("max-overlap").textContent = has ? `${s.maxOverlap}` : "\u2013";
  stat("errors").textContent = has ? `${s.errors}` : "\u2013";
  const done = panel.state === "done";
  stat("wall-ms").textContent = done ? `${Math.round(s.wallMs)}` : "\u2013";
  stat("rps").textContent = done ? s.rps.toFixed(1) : "\u2013";
  for (const [name, value] of Object.entries(s)) {
    stat(name === "maxOverlap" ? "max-overlap" : name === "wallMs" ? "wall-ms" : name)
      ?.setAttribute("data-value", String(value));
  }
  panel.nodes.verdict.textContent = done ? verdict(s, panel.results) : "";
  stat("server-note").textContent = s.servers
    .split(", ")
    .map((server) => SERVER_NOTES[server] ?? "")
    .filter(Boolean)
    .join(" ");
  return s;
}

function redrawAll() {
  const span = sharedSpanMs();
  for (const panel of state.panels) redrawPanel(panel, span);
}

async function runPanel(panel, path, count) {
  panel.state = "running";
  panel.results = [];
  panel.started = performance.now();
  redrawAll();
  await Promise.all(
    Array.from({ length: count }, (_, i) =>
      fireOne(path, i).then((result) => {
        panel.results.push(result);
        if (result.error) {
          addError({
            mode: result.trace?.mode || panel.key,
            status: result.status,
            message: result.error,
            path,
          });
        }
        panel.wallMs = performance.now() - panel.started;
        redrawAll();
      }),
    ),
  );
  panel.wallMs = performance.now() - panel.started;
  panel.state = "done";
  redrawAll();
  showConnectionNote(panel);
  return summarize(panel.results, panel.wallMs);
}

// -- the Fire form ----------------------------------------------------------------

function readForm() {
  const params = {};
  for (const name of ["ms", "coffee_ms", "omelette_ms"]) params[name] = $(name).value.trim();
  return {
    mode: $("mode").value,
    endpoint: $("endpoint").value,
    params,
    concurrencyRaw: $("concurrency").value,
  };
}

function syncForm() {
  const form = readForm();
  const names = ENDPOINTS[form.endpoint];
  for (const field of document.querySelectorAll("[data-param]")) {
    field.hidden = !names.includes(field.dataset.param);
  }
  const prefix = { active: "", all: "/{cgi,wsgi,asgi}" }[form.mode] ?? `/${form.mode}`;
  const path = buildPath("active", form.endpoint, form.params);
  $("request-preview").textContent = `GET ${prefix}${path}`;
  $("concurrency-preview").textContent = form.concurrencyRaw;
  if (!state.running && state.panels.every((p) => p.state === "idle")) {
    showPanels(panelKeys(form.mode));
  }
}

async function fire(event) {
  event.preventDefault();
  if (state.running) return;
  const form = readForm();
  const count = parseConcurrency(form.concurrencyRaw, MAX_AT_ONCE);
  clearErrors();
  if (count === null) {
    addError({
      mode: "page",
      status: 0,
      message: `\u201cAt once\u201d must be a whole number from 1 to ${MAX_AT_ONCE}; nothing was sent`,
      path: "/lab/",
    });
    $("concurrency").focus();
    return;
  }
  state.running = true;
  state.runId += 1;
  document.body.dataset.run = "running";
  document.body.dataset.runId = String(state.runId);
  $("fire").setAttribute("aria-disabled", "true");
  $("fire").textContent = "Firing\u2026";
  // Whatever happens below (a redraw that throws included), the page leaves
  // "Firing..." and the button works again: the finally block.
  try {
    const keys = panelKeys(form.mode);
    showPanels(keys);
    for (const panel of state.panels) panel.state = "queued";
    const lines = [];
    const clickStart = performance.now();
    for (const panel of state.panels) {
      const path = buildPath(panel.key, form.endpoint, form.params);
      $("run-status").textContent = `Firing ${count} \u00d7 GET ${path}\u2026`;
      const s = await runPanel(panel, path, count);
      lines.push(
        `${EXPLAIN[panel.key].title}${s.servers ? ` (${s.servers})` : ""}: ` +
          `${s.requests} requests, ${s.processes} processes, ` +
          `at most ${s.maxOverlap} at once in one process, ${Math.round(s.wallMs)} ms, ` +
          `${s.rps.toFixed(1)} requests/s, ${s.errors} errors.`,
      );
    }
    const totalMs = performance.now() - clickStart;
    $("run-status").textContent = `${lines.join(" ")} Done in ${formatMs(totalMs)} ms.`;
    $("run-status").dataset.totalMs = totalMs.toFixed(0);
  } catch (error) {
    addError({ mode: "page", status: 0, message: `the page failed: ${error}`, path: "/lab/" });
    $("run-status").textContent = "The run stopped: see the error list.";
  } finally {
    state.running = false;
    document.body.dataset.run = "done";
    $("fire").removeAttribute("aria-disabled");
    $("fire").textContent = "Fire";
  }
}

// -- the lab_mode cookie and what "/" reaches -----------------------------------------

function readCookieMode() {
  const match = document.cookie.match(/(?:^|;\s*)lab_mode=([^;]*)/);
  return match && MODES.includes(match[1]) ? match[1] : "";
}

function writeCookieMode(mode) {
  // path=/ so the cookie goes with requests to "/", where nginx reads it.
  document.cookie = mode
    ? `lab_mode=${mode}; path=/; SameSite=Lax`
    : "lab_mode=; path=/; max-age=0; SameSite=Lax";
}

async function probeRoot() {
  const modeNode = $("root-mode");
  const detail = $("root-detail");
  modeNode.textContent = "\u2026";
  modeNode.dataset.mode = "";
  detail.textContent = "";
  const cookie = readCookieMode();
  const result = await fireOne("/", 0);
  if (result.error) {
    addError({ mode: cookie || "default", status: result.status, message: result.error, path: "/" });
    modeNode.textContent = "nothing";
    detail.textContent = "(see the errors)";
    return;
  }
  const tr = result.trace;
  modeNode.textContent = tr.mode;
  modeNode.dataset.mode = tr.mode;
  modeNode.className = `mode-text-${tr.mode}`;
  detail.textContent =
    `(pid ${tr.pid}) ` +
    (cookie ? `because of the cookie lab_mode=${cookie}` : "the lab's default: no cookie set");
}

function onCookieChange() {
  writeCookieMode($("cookie-mode").value);
  probeRoot();
}

// -- tooltip ------------------------------------------------------------------------

function showTooltip(bar) {
  const panel = state.panels.find((p) => p.key === bar.closest(".panel")?.dataset.mode);
  const result = panel?.results.find((r) => String(r.index) === bar.dataset.index);
  if (!result || !result.trace) return;
  const tr = result.trace;
  const rel = (s) => `${formatMs((s - panel.t0) * 1000)} ms`;
  const rows = [
    ["request", `#${result.index + 1}  GET ${result.path}`],
    ["status", `${result.status}${result.error ? ` \u2014 ${result.error}` : ""}`],
    ["mode", tr.mode],
    ["server", tr.server || "(not named)"],
    ["pid", tr.pid],
    ["worker", tr.worker],
    ["start", `${rel(tr.start)}  (${tr.start.toFixed(6)})`],
    ["end", `${rel(tr.end)}  (${tr.end.toFixed(6)})`],
    ["in the app", `${formatMs((tr.end - tr.start) * 1000)} ms`],
    ["browser saw", `${formatMs(result.latencyMs)} ms`],
    ["request id", tr.requestId],
  ];
  const tip = $("tooltip");
  const dl = document.createElement("dl");
  for (const [k, v] of rows) {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = v;
    dl.append(dt, dd);
  }
  tip.replaceChildren(dl);
  tip.hidden = false;
  const box = bar.getBoundingClientRect();
  const tipBox = tip.getBoundingClientRect();
  const left = Math.min(Math.max(box.left, 8), window.innerWidth - tipBox.width - 8);
  const below = box.bottom + 8 + tipBox.height < window.innerHeight;
  tip.style.left = `${left + window.scrollX}px`;
  tip.style.top = `${(below ? box.bottom + 8 : box.top - tipBox.height - 8) + window.scrollY}px`;
  bar.setAttribute("aria-describedby", "tooltip");
}

function hideTooltip() {
  $("tooltip").hidden = true;
}

// -- wiring -------------------------------------------------------------------------

function init() {
  showProtocol();
  $("fire-form").addEventListener("submit", fire);
  for (const id of ["mode", "endpoint", "ms", "coffee_ms", "omelette_ms", "concurrency"]) {
    $(id).addEventListener("input", syncForm);
  }
  $("cookie-form").addEventListener("submit", (e) => {
    e.preventDefault();
    probeRoot();
  });
  $("cookie-mode").value = readCookieMode();
  $("cookie-mode").addEventListener("change", onCookieChange);
  $("cookie-check").addEventListener("click", probeRoot);
  const panels = $("panels");
  panels.addEventListener("mouseover", (e) => {
    const bar = e.target.closest?.(".bar");
    if (bar) showTooltip(bar);
  });
  panels.addEventListener("mouseout", (e) => {
    if (e.target.closest?.(".bar")) hideTooltip();
  });
  panels.addEventListener("focusin", (e) => {
    const bar = e.target.closest?.(".bar");
    if (bar) showTooltip(bar);
  });
  panels.addEventListener("focusout", hideTooltip);
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape") hideTooltip();
  });
  let resizeTimer = 0;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(redrawAll, 100);
  });
  syncForm();
  probeRoot();
  initServers().finally(() => {
    document.body.dataset.servers = "ready";
  });
  document.body.dataset.ready = "true";
}

init();
