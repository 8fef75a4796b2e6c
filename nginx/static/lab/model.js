// The dashboard's pure parts: request paths, trace headers, lanes, overlap,
// summary and axis ticks. No DOM and no network here, so the browser test can
// import this module and check it with plain data.

export const MODES = ["cgi", "wsgi", "asgi"];

// Endpoints of the demo app (CONTRACT.md) and the query parameters each takes.
export const ENDPOINTS = {
  "/coffee": ["ms"],
  "/omelette": ["ms"],
  "/breakfast": ["coffee_ms", "omelette_ms"],
  "/blocking-coffee": ["ms"],
  "/": [],
};

export const MAX_CONCURRENCY = 50;
// Over HTTP/2 (or 3) every request shares one connection, up to the streams
// the server allows at once: nginx's http2_max_concurrent_streams (tls.conf).
export const MAX_CONCURRENCY_MULTIPLEXED = 100;

/**
 * The protocol a Resource Timing entry's nextHopProtocol names (the ALPN id:
 * "h2", "h3", "http/1.1"), for people; "" (unknown, e.g. from the cache) stays "".
 */
export function protocolName(nextHop) {
  const names = { h2: "HTTP/2", h3: "HTTP/3", "http/1.1": "HTTP/1.1", "http/1.0": "HTTP/1.0" };
  return names[nextHop] ?? nextHop;
}

/** True when the browser multiplexes requests on one connection (HTTP/2 and 3). */
export function multiplexed(nextHop) {
  return nextHop === "h2" || nextHop === "h3";
}

/** The most requests "At once" allows over ``nextHop``. */
export function maxConcurrency(nextHop) {
  return multiplexed(nextHop) ? MAX_CONCURRENCY_MULTIPLEXED : MAX_CONCURRENCY;
}

/**
 * The path one request goes to: "/asgi/coffee?ms=300", or "/coffee?ms=300"
 * for target "active" (nginx picks the mode: X-Lab-Mode, lab_mode cookie,
 * default). Parameter values are sent as typed: the app validates them and
 * answers 400 to a bad one, which the page shows.
 */
export function buildPath(target, endpoint, params) {
  const prefix = target === "active" ? "" : `/${target}`;
  const names = ENDPOINTS[endpoint];
  if (names === undefined) throw new Error(`unknown endpoint ${endpoint}`);
  const path = endpoint === "/" ? `${prefix}/` : `${prefix}${endpoint}`;
  const query = names
    .map((name) => `${name}=${encodeURIComponent(params[name] ?? "")}`)
    .join("&");
  return query ? `${path}?${query}` : path;
}

/** Concurrency as a whole number in 1..max, or null. */
export function parseConcurrency(raw, max = MAX_CONCURRENCY) {
  const text = String(raw).trim();
  if (!/^\d+$/.test(text)) return null;
  const n = Number(text);
  return n >= 1 && n <= max ? n : null;
}

/**
 * The trace headers of one answer (CONTRACT.md, "Trace headers"), or null
 * when they are missing, as on an error nginx produced itself.
 * `get` is a header lookup such as `(name) => response.headers.get(name)`.
 */
export function parseTrace(get) {
  const mode = get("X-Gateway-Mode");
  const pid = get("X-Gateway-Pid");
  const rawStart = get("X-Gateway-Start");
  const rawEnd = get("X-Gateway-End");
  if (!mode || !pid || !rawStart || !rawEnd) return null;
  const start = Number(rawStart);
  const end = Number(rawEnd);
  if (!Number.isFinite(start) || !Number.isFinite(end)) return null;
  return {
    mode,
    pid,
    worker: get("X-Gateway-Worker") || "",
    // The server behind the mode's route (CONTRACT.md, "Servers behind each route").
    server: get("X-Gateway-Server") || "",
    start,
    end,
    requestId: get("X-Request-Id") || "",
  };
}

/**
 * The most intervals open at one instant. An interval that ends exactly when
 * another starts does not overlap it.
 */
export function maxOverlap(intervals) {
  const events = [];
  for (const { start, end } of intervals) {
    events.push([start, 1], [end, -1]);
  }
  // Ends (-1) sort before starts (+1) at the same instant.
  events.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let open = 0;
  let most = 0;
  for (const [, step] of events) {
    open += step;
    most = Math.max(most, open);
  }
  return most;
}

/**
 * Rows inside one lane so that bars in a row never overlap: first fit, in
 * order of start. Returns the row of each interval (same order) and the count.
 */
export function packRows(intervals) {
  const order = intervals.map((_, i) => i).sort((a, b) => intervals[a].start - intervals[b].start);
  const rowEnds = [];
  const rows = new Array(intervals.length);
  for (const i of order) {
    const { start, end } = intervals[i];
    let row = rowEnds.findIndex((rowEnd) => rowEnd <= start);
    if (row === -1) {
      row = rowEnds.length;
      rowEnds.push(end);
    } else {
      rowEnds[row] = end;
    }
    rows[i] = row;
  }
  return { rows, count: rowEnds.length };
}

/**
 * One lane per process (mode + X-Gateway-Pid), grouped by mode in MODES
 * order, lanes of one mode in order of their first start. Results without
 * trace headers have no place on the timeline (they are listed as errors).
 * withWaits: rows are packed on send..end, so the wait drawn before a bar
 * never crosses another bar.
 */
export function buildLanes(results, withWaits = false) {
  const byKey = new Map();
  for (const result of results) {
    const trace = result.trace;
    if (!trace) continue;
    const key = `${trace.mode}:${trace.pid}`;
    if (!byKey.has(key)) {
      byKey.set(key, { key, mode: trace.mode, pid: trace.pid, workers: [], results: [] });
    }
    const lane = byKey.get(key);
    lane.results.push(result);
    if (trace.worker && !lane.workers.includes(trace.worker)) lane.workers.push(trace.worker);
  }
  const rank = (mode) => (MODES.includes(mode) ? MODES.indexOf(mode) : MODES.length);
  const firstStart = (lane) => Math.min(...lane.results.map((r) => r.trace.start));
  const lanes = [...byKey.values()].sort(
    (a, b) => rank(a.mode) - rank(b.mode) || firstStart(a) - firstStart(b),
  );
  for (const lane of lanes) {
    const intervals = lane.results.map((r) => r.trace);
    // Rows leave room for the wait before each bar when it is drawn too.
    const packed = packRows(
      withWaits
        ? lane.results.map((r) => ({ start: Math.min(r.sent, r.trace.start), end: r.trace.end }))
        : intervals,
    );
    lane.rows = packed.rows;
    lane.rowCount = packed.count;
    lane.maxOverlap = maxOverlap(intervals);
  }
  return lanes;
}

/**
 * Time zero of a run, in Unix seconds: the moment the browser sent the first
 * request when its clock agrees with the gateways' (same machine), else the
 * first start the gateways report. Returns the zero and whether send times
 * can be drawn on the same axis.
 */
export function timeZero(results) {
  const starts = results.filter((r) => r.trace).map((r) => r.trace.start);
  const sends = results.map((r) => r.sent).filter((s) => Number.isFinite(s));
  if (starts.length === 0) return { t0: sends.length ? Math.min(...sends) : 0, clocksAgree: false };
  const firstStart = Math.min(...starts);
  const firstSend = sends.length ? Math.min(...sends) : Infinity;
  // A request cannot start before it was sent; allow a little clock noise.
  const clocksAgree = firstSend <= firstStart + 0.005 && firstStart - firstSend < 5;
  return { t0: clocksAgree ? Math.min(firstSend, firstStart) : firstStart, clocksAgree };
}

/** The numbers under a timeline. wallMs: from the first send to the last answer, as the browser saw it. */
/** The most requests the app had in progress at one instant, across all processes. */
export function inFlight(results) {
  return maxOverlap(results.filter((r) => r.trace).map((r) => r.trace));
}

export function summarize(results, wallMs) {
  const lanes = buildLanes(results);
  const requests = results.length;
  const errors = results.filter((r) => !r.ok).length;
  const seconds = wallMs / 1000;
  return {
    requests,
    processes: lanes.length,
    maxOverlap: lanes.reduce((most, lane) => Math.max(most, lane.maxOverlap), 0),
    wallMs,
    rps: seconds > 0 ? requests / seconds : 0,
    errors,
    servers: serversSeen(results),
  };
}

/** The servers that answered, in order of first answer: "sync", or "sync, gthread" across a swap. */
export function serversSeen(results) {
  const seen = [];
  for (const r of results) {
    const server = r.trace?.server;
    if (server && !seen.includes(server)) seen.push(server);
  }
  return seen.join(", ");
}

/**
 * The body the server picker posts (lab/control.py): {"mode", "server"} when
 * both are among the choices the lab listed, else null (nothing is sent).
 */
export function serverChoice(choices, mode, server) {
  const names = choices?.[mode];
  return Array.isArray(names) && names.includes(server) ? { mode, server } : null;
}

/** Round axis steps (1, 2 or 5 x 10^k ms) giving about `target` ticks from 0 to maxMs. */
export function niceTicks(maxMs, target = 6) {
  if (!(maxMs > 0)) return [0];
  const rough = maxMs / target;
  const power = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= rough);
  const ticks = [];
  for (let t = 0; t <= maxMs + step * 1e-9; t += step) ticks.push(Math.round(t * 1e6) / 1e6);
  return ticks;
}

/** One sentence on what a finished run shows, for the panel and screen readers. */
export function verdict(summary, results) {
  const traces = results.filter((r) => r.trace).map((r) => r.trace);
  const n = traces.length;
  if (n === 0) return "No answer carried trace headers: see the errors above.";
  if (summary.maxOverlap > 1) {
    return `Up to ${summary.maxOverlap} requests were in progress at once inside one process.`;
  }
  if (summary.processes === n && n > 1) {
    // CGI's signature (CONTRACT.md): the pid is the script's, the worker the process that spawned it.
    if (traces.every((t) => t.pid !== t.worker)) {
      return `Every request had a process of its own: ${n} processes for ${n} requests.`;
    }
    return `${n} requests went to ${n} different processes, and none ran two at once.`;
  }
  const p = summary.processes;
  return `No process worked on two requests at once: ${p} process${p === 1 ? "" : "es"} took turns.`;
}
