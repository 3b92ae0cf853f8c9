// The operations page: stats events of every process, through the JS client.
import { connect } from "./events.js";

const root = document.getElementById("ops");
const namespace = root.dataset.namespace;
const SAMPLES = 60; // points on the chart, one per stats period
const STALE_MS = 10000; // a process silent this long leaves the table
const COLORS = ["#3366cc", "#dc3912", "#ff9900", "#109618", "#990099", "#0099c6", "#dd4477"];

const processes = new Map(); // process -> {stats, seen}
const series = new Map(); // namespace -> [events per second, ...]
let recent = []; // newest first: {name, id, timestamp, process}

function sum(counts) {
  return Object.values(counts || {}).reduce((a, b) => a + b, 0);
}

function perSecond(count, stats) {
  return stats.seconds > 0 ? count / stats.seconds : 0;
}

function fmt(value, digits = 1) {
  return Number(value).toFixed(digits);
}

function take(event) {
  const stats = event.payload;
  processes.set(stats.process, { stats, seen: Date.now() });
  for (const item of stats.recent || []) recent.unshift({ ...item, process: stats.process });
  recent = recent.slice(0, 200);
}

function tick() {
  // One chart point per period: the rates of the processes heard lately, summed.
  const now = Date.now();
  for (const [name, entry] of processes) if (now - entry.seen > STALE_MS) processes.delete(name);
  const totals = new Map();
  for (const { stats } of processes.values()) {
    for (const [ns, count] of Object.entries(stats.dispatched || {})) {
      totals.set(ns, (totals.get(ns) || 0) + perSecond(count, stats));
    }
  }
  for (const ns of totals.keys()) if (!series.has(ns)) series.set(ns, new Array(SAMPLES).fill(0));
  for (const [ns, points] of series) {
    points.push(totals.get(ns) || 0);
    points.splice(0, points.length - SAMPLES);
  }
  draw();
  table();
  showRecent();
}

function draw() {
  const canvas = document.getElementById("chart");
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  let top = 1;
  for (const points of series.values()) top = Math.max(top, ...points);
  ctx.strokeStyle = "#e4e6eb";
  ctx.fillStyle = "#7a8194";
  ctx.font = "12px system-ui";
  for (let i = 0; i <= 4; i++) {
    const y = height - 20 - ((height - 30) * i) / 4;
    ctx.beginPath();
    ctx.moveTo(40, y);
    ctx.lineTo(width, y);
    ctx.stroke();
    ctx.fillText(fmt((top * i) / 4), 2, y + 4);
  }
  const legend = [];
  let index = 0;
  for (const [ns, points] of series) {
    const color = COLORS[index++ % COLORS.length];
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    points.forEach((value, i) => {
      const x = 40 + ((width - 40) * i) / (SAMPLES - 1);
      const y = height - 20 - ((height - 30) * value) / top;
      if (i === 0) ctx.moveTo(x, y);
      else ctx.lineTo(x, y);
    });
    ctx.stroke();
    const last = points[points.length - 1];
    legend.push(`<span data-namespace="${escape(ns)}"><i style="background:${color}"></i>${escape(ns)}: <b>${fmt(last)}</b>/s</span>`);
  }
  document.getElementById("legend").innerHTML = legend.join("");
}

function escape(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function cells(name, rows) {
  // rows: [{stats}] of one process, or of all for the total
  const rate = (key) => rows.reduce((a, { stats }) => a + perSecond(sum(stats[key]), stats), 0);
  const total = (key) => rows.reduce((a, { stats }) => a + (stats[key] || 0), 0);
  const dropped = rows.reduce((a, { stats }) => a + sum(stats.dropped), 0);
  const lag = rows.reduce((a, { stats }) => Math.max(a, stats.max_age || 0), 0);
  return `<td>${escape(name)}</td><td class="num" data-field="dispatched">${fmt(rate("dispatched"))}</td>
    <td class="num" data-field="received">${fmt(rate("received"))}</td>
    <td class="num" data-field="delivered">${fmt(rate("delivered"))}</td>
    <td class="num" data-field="connections">${total("connections")}</td>
    <td class="num" data-field="subscriptions">${total("subscriptions")}</td>
    <td class="num" data-field="outbox">${total("outbox")}</td>
    <td class="num" data-field="lag">${fmt(lag, 3)}</td>
    <td class="num" data-field="dropped">${dropped}</td>
    <td class="num" data-field="failures">${total("failures")}</td>
    <td class="num" data-field="errors">${total("errors")}</td>`;
}

function table() {
  const rows = [...processes.entries()].sort(([a], [b]) => a.localeCompare(b));
  document.getElementById("processes").innerHTML = rows
    .map(([name, entry]) => `<tr data-process="${escape(name)}">${cells(name, [entry])}</tr>`)
    .join("");
  document.getElementById("total").innerHTML = `<tr data-process="total">${cells(
    `all ${rows.length} process(es)`,
    rows.map(([, entry]) => entry),
  )}</tr>`;
}

function showRecent() {
  let pattern;
  const input = document.getElementById("filter");
  try {
    pattern = new RegExp(`^(?:${input.value || ".*"})$`);
    input.setCustomValidity("");
  } catch (error) {
    input.setCustomValidity("not a regular expression");
    return;
  }
  document.getElementById("recent").innerHTML = recent
    .filter((item) => pattern.test(item.name))
    .slice(0, 50)
    .map((item) => `<li>${escape(item.timestamp)} <b>${escape(item.name)}</b> <span class="muted">${escape(item.id)} · ${escape(item.process)}</span></li>`)
    .join("");
}

async function watch() {
  // Every process publishes its stats only while a page asks for them.
  try {
    await fetch(root.dataset.watchUrl, {
      method: "POST",
      headers: { "X-CSRFToken": root.dataset.csrf },
      credentials: "same-origin",
    });
  } catch (error) {
    console.error("channels-events ops: watch failed", error);
  }
}

if (namespace) {
  const stream = connect(root.dataset.websocket);
  stream.onStatus((status) => {
    const badge = document.getElementById("status");
    badge.dataset.state = status.state;
    badge.textContent = status.state;
  });
  stream.subscribe(`${namespace}::stats`, take, {
    onError: (error) => {
      document.getElementById("status").textContent = `refused: ${error.code}`;
    },
  });
  watch();
  setInterval(watch, Number(root.dataset.watchEvery) * 1000);
  setInterval(tick, 1000);
  document.getElementById("filter").addEventListener("input", showRecent);
}
