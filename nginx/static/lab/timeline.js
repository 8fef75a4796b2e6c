// Draws one timeline as SVG: a lane per process, a bar per request from
// X-Gateway-Start to X-Gateway-End, a dashed line for the wait before it.
// Builds elements only; fetching and events live in dashboard.js.

import { buildLanes, niceTicks } from "./model.js";

const SVG_NS = "http://www.w3.org/2000/svg";
const LABEL_W = 290;
const RIGHT_PAD = 28;
const TOP_PAD = 10;
const AXIS_H = 64;
const LANE_PAD = 6;
const ROW_GAP = 4;

function el(tag, attrs = {}, children = []) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) node.setAttribute(name, String(value));
  }
  for (const child of children) node.append(child);
  return node;
}

function text(x, y, content, attrs = {}) {
  const node = el("text", { x, y, ...attrs });
  node.textContent = content;
  return node;
}

/** Height of one row of bars: large when few, smaller when many rows must fit. */
function rowHeight(totalRows) {
  return Math.max(14, Math.min(30, Math.floor(520 / Math.max(totalRows, 1)) - ROW_GAP));
}

export function formatMs(ms) {
  return ms >= 100 ? `${Math.round(ms)}` : ms.toFixed(1);
}

function tickLabel(ms) {
  return `${Number(ms.toFixed(3))}`;
}

/** What a bar says to a screen reader and in its tooltip, in one line. */
export function describe(result, t0) {
  const tr = result.trace;
  const from = formatMs((tr.start - t0) * 1000);
  const to = formatMs((tr.end - t0) * 1000);
  return (
    `Request ${result.index + 1}, ${tr.mode}` +
    `${tr.server ? ` (${tr.server})` : ""}, status ${result.status}, pid ${tr.pid}, ` +
    `worker ${tr.worker}, from ${from} to ${to} ms, ` +
    `browser saw ${formatMs(result.latencyMs)} ms`
  );
}

/**
 * Replace the content of `svg` with the timeline of `results`.
 * opts: width (px), spanMs (the axis length, shared by panels of one run),
 * t0 and clocksAgree (model.timeZero), emptyText.
 */
export function drawTimeline(svg, results, opts) {
  const { width, spanMs, t0, clocksAgree } = opts;
  const lanes = buildLanes(results, clocksAgree);
  svg.replaceChildren();
  svg.setAttribute("width", String(width));

  if (lanes.length === 0) {
    const height = 110;
    svg.setAttribute("height", String(height));
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.append(text(24, 62, opts.emptyText, { class: "empty-text" }));
    return;
  }

  const totalRows = lanes.reduce((n, lane) => n + lane.rowCount, 0);
  const barH = rowHeight(totalRows);
  const plotW = Math.max(width - LABEL_W - RIGHT_PAD, 100);
  const span = Math.max(spanMs, 1);
  const x = (seconds) => LABEL_W + (((seconds - t0) * 1000) / span) * plotW;

  const lanesG = el("g", { class: "lanes" });
  const barsG = el("g", { class: "bars" });
  let y = TOP_PAD;
  lanes.forEach((lane, laneIndex) => {
    const laneH = lane.rowCount * (barH + ROW_GAP) - ROW_GAP + 2 * LANE_PAD;
    const newMode = laneIndex > 0 && lanes[laneIndex - 1].mode !== lane.mode;
    const laneG = el("g", {
      class: `lane lane-${lane.mode}${newMode ? " lane-first-of-mode" : ""}`,
      "data-mode": lane.mode,
      "data-pid": lane.pid,
      "data-max-overlap": lane.maxOverlap,
    });
    laneG.append(
      el("rect", {
        class: laneIndex % 2 ? "lane-bg lane-bg-odd" : "lane-bg",
        x: 0,
        y,
        width,
        height: laneH,
      }),
    );
    // "asgi pid 123" and, below it or beside it when the lane is thin, "worker 45".
    const workers = lane.workers.join(", ");
    const twoLines = laneH >= 44;
    const midY = y + laneH / 2;
    const label = text(12, twoLines ? midY - 4 : midY + 6, `${lane.mode} pid ${lane.pid}`, {
      class: "lane-label",
    });
    if (!twoLines) {
      const tspan = el("tspan", { class: "lane-sublabel", dx: 8 });
      tspan.textContent = `worker ${workers}`;
      label.append(tspan);
    }
    laneG.append(label);
    if (twoLines) {
      laneG.append(text(12, midY + 18, `worker ${workers}`, { class: "lane-sublabel" }));
    }
    lanesG.append(laneG);

    lane.results.forEach((result, i) => {
      const tr = result.trace;
      const rowY = y + LANE_PAD + lane.rows[i] * (barH + ROW_GAP);
      const x0 = x(tr.start);
      const w = Math.max(x(tr.end) - x0, 2);
      const cy = rowY + barH / 2;
      const kind = result.ok ? tr.mode : "error";
      const bar = el("g", {
        class: `bar bar-${kind}`,
        tabindex: 0,
        role: "img",
        "aria-label": describe(result, t0),
        "data-index": result.index,
        "data-mode": tr.mode,
        "data-server": tr.server,
        "data-pid": tr.pid,
        "data-worker": tr.worker,
        "data-start": tr.start.toFixed(6),
        "data-end": tr.end.toFixed(6),
        "data-status": result.status,
        "data-request-id": tr.requestId,
        "data-latency-ms": result.latencyMs.toFixed(1),
        "data-sent": Number.isFinite(result.sent) ? result.sent.toFixed(6) : "",
      });
      if (clocksAgree && result.sent < tr.start) {
        const xs = x(result.sent);
        // The wait answers the pointer too: hovering it shows the same request.
        bar.append(el("rect", { class: "hit", x: xs, y: rowY, width: x0 - xs, height: barH }));
        bar.append(
          el("line", { class: "wait", x1: xs, y1: cy, x2: x0, y2: cy }),
          el("line", { class: "wait-tick", x1: xs, y1: cy - 5, x2: xs, y2: cy + 5 }),
        );
      }
      bar.append(
        el("rect", {
          class: "bar-rect",
          x: x0,
          y: rowY,
          width: w,
          height: barH,
          rx: 3,
          fill: `url(#pattern-${kind})`,
        }),
      );
      const label = result.ok ? `#${result.index + 1}` : `#${result.index + 1} ${result.status}`;
      if (w >= label.length * 9 + 8 && barH >= 14) {
        bar.append(
          text(x0 + 6, cy + Math.min(barH, 26) * 0.3, label, {
            class: "bar-label",
            "font-size": Math.min(18, barH - 2),
          }),
        );
      }
      barsG.append(bar);
    });
    y += laneH;
  });

  // Time axis: grid lines behind the bars, ticks and labels under them.
  const axisY = y + 6;
  const grid = el("g", { class: "grid" });
  const axis = el("g", { class: "axis" });
  for (const tick of niceTicks(span)) {
    const tx = LABEL_W + (tick / span) * plotW;
    grid.append(el("line", { x1: tx, y1: TOP_PAD, x2: tx, y2: axisY }));
    axis.append(el("line", { x1: tx, y1: axisY, x2: tx, y2: axisY + 8 }));
    axis.append(text(tx, axisY + 28, tickLabel(tick), { "text-anchor": "middle" }));
  }
  axis.append(el("line", { x1: LABEL_W, y1: axisY, x2: LABEL_W + plotW, y2: axisY }));
  axis.append(
    text(
      LABEL_W - 30,
      axisY + 28,
      clocksAgree ? "ms after first send" : "ms after first start",
      { "text-anchor": "end", class: "axis-title" },
    ),
  );

  const height = axisY + AXIS_H - 20;
  svg.setAttribute("height", String(height));
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.append(lanesG, grid, barsG, axis);
}
