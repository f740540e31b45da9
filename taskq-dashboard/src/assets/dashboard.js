// taskq dashboard: confirms destructive actions, draws the per-minute chart, and keeps the
// overview live through server-sent events. No framework, no build step.
"use strict";

document.addEventListener("submit", (event) => {
  const question = event.target.dataset.confirm;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

function drawChart(canvas, history) {
  const ctx = canvas.getContext("2d");
  const width = canvas.width, height = canvas.height, pad = 24;
  ctx.clearRect(0, 0, width, height);
  const top = Math.max(1, ...history.map((m) => Math.max(m.processed, m.failed)));
  const x = (i) => pad + (i * (width - 2 * pad)) / Math.max(1, history.length - 1);
  const y = (v) => height - pad - (v * (height - 2 * pad)) / top;
  ctx.strokeStyle = "#e4e7ec";
  ctx.beginPath(); ctx.moveTo(pad, height - pad); ctx.lineTo(width - pad, height - pad); ctx.stroke();
  ctx.fillStyle = "#667085"; ctx.font = "11px system-ui";
  ctx.fillText(String(top), 2, pad);
  for (const [field, color] of [["processed", "#2f6fed"], ["failed", "#c4320a"]]) {
    ctx.strokeStyle = color; ctx.lineWidth = 2; ctx.beginPath();
    history.forEach((m, i) => (i ? ctx.lineTo(x(i), y(m[field])) : ctx.moveTo(x(i), y(m[field]))));
    ctx.stroke();
  }
  // The time axis: the first, middle and last minutes, in the browser's time zone.
  const clock = (m) => new Date(m.minute).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  ctx.fillStyle = "#667085";
  if (history.length > 0) {
    const marks = [0, Math.floor((history.length - 1) / 2), history.length - 1];
    marks.forEach((i, n) => {
      const label = clock(history[i]);
      const at = n === 0 ? x(i) : n === 2 ? x(i) - ctx.measureText(label).width : x(i) - ctx.measureText(label).width / 2;
      ctx.fillText(label, at, height - 6);
    });
    canvas.dataset.axis = marks.map((i) => history[i].minute).join(" ");
  }
  const total = (field) => history.reduce((sum, m) => sum + m[field], 0);
  canvas.dataset.processedTotal = String(total("processed"));
  canvas.dataset.failedTotal = String(total("failed"));
}

// The overview last drawn, so that choosing a queue redraws without waiting for the next event.
let latest = null;

// The chart's minutes: every queue's (the sum), or the chosen queue's own.
function chartHistory(data) {
  const chosen = document.getElementById("chart-queue")?.value;
  const row = chosen ? data.queues.find((q) => q.queue === chosen) : null;
  if (!row) return data.history;
  return data.history.map((m, i) => ({
    minute: m.minute,
    processed: row.minutes[i]?.[0] ?? 0,
    failed: row.minutes[i]?.[1] ?? 0,
  }));
}

// Offers every queue the overview knows in the chart's queue choice (queues appear as they
// are first sent to).
function offerQueues(data) {
  const pick = document.getElementById("chart-queue");
  if (!pick) return;
  const offered = new Set(Array.from(pick.options, (o) => o.value));
  for (const row of data.queues) {
    if (!offered.has(row.queue)) pick.add(new Option(row.queue, row.queue));
  }
}

function updateOverview(data) {
  latest = data;
  offerQueues(data);
  const set = (id, value) => { const el = document.getElementById(id); if (el) el.textContent = String(value); };
  set("workers", data.workers);
  set("processed-hour", data.history.reduce((s, m) => s + m.processed, 0));
  set("failed-hour", data.history.reduce((s, m) => s + m.failed, 0));
  for (const row of data.queues) {
    const tr = document.querySelector(`tr[data-queue="${CSS.escape(row.queue)}"]`);
    if (!tr) continue;
    for (const cell of tr.querySelectorAll("td[data-field]")) {
      const value = row[cell.dataset.field];
      const field = cell.dataset.field;
      const text = field === "oldest_pending_seconds" ? (value == null ? "-" : `${value} s`)
        : field === "paused" ? (value ? "paused" : "")
        : String(value);
      const link = cell.querySelector("a");
      (link || cell).textContent = text;
    }
  }
  const canvas = document.getElementById("chart");
  if (canvas) drawChart(canvas, chartHistory(data));
}

document.addEventListener("DOMContentLoaded", () => {
  const canvas = document.getElementById("chart");
  if (!canvas) return;
  latest = JSON.parse(canvas.dataset.overview || "null");
  if (latest) drawChart(canvas, chartHistory(latest));
  document.getElementById("chart-queue")?.addEventListener("change", () => {
    if (latest) drawChart(canvas, chartHistory(latest));
  });
  const events = new EventSource("/events");
  events.addEventListener("overview", (event) => updateOverview(JSON.parse(event.data)));
  for (const el of document.querySelectorAll("time[datetime]")) el.title = el.getAttribute("datetime");
});
