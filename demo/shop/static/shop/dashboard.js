// The live dashboard: a table and a chart kept current by shop::Order::* events.
import { connect } from "../channels_events/events.js";

const statuses = JSON.parse(document.getElementById("statuses").textContent);
const rows = document.getElementById("order-rows");
const orders = new Map(); // pk -> order fields

function csrfToken() {
  const match = document.cookie.match(/(?:^|; )csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

async function post(url, body) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
    body: JSON.stringify(body || {}),
    credentials: "same-origin",
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
  return data;
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function renderRow(order, flash) {
  let tr = rows.querySelector(`tr[data-pk="${order.id}"]`);
  if (!tr) {
    tr = document.createElement("tr");
    tr.dataset.pk = order.id;
    rows.prepend(tr);
  }
  tr.replaceChildren(
    cell(order.number),
    cell(order.customer),
    (() => {
      const td = document.createElement("td");
      const pill = document.createElement("span");
      pill.className = `pill status-${order.status}`;
      pill.textContent = order.status;
      td.append(pill);
      return td;
    })(),
    cell(order.total, "num"),
    cell(new Date(order.updated_at).toLocaleTimeString()),
    (() => {
      const td = document.createElement("td");
      const advance = document.createElement("button");
      advance.className = "link";
      advance.textContent = "advance";
      advance.disabled = order.status === statuses[statuses.length - 1];
      advance.addEventListener("click", () => post(`orders/${order.id}/advance/`).catch(report));
      const remove = document.createElement("button");
      remove.className = "link";
      remove.textContent = "delete";
      remove.addEventListener("click", () => post(`orders/${order.id}/delete/`).catch(report));
      td.append(advance, remove);
      return td;
    })(),
  );
  tr.dataset.status = order.status;
  if (flash) {
    tr.classList.remove("flash");
    void tr.offsetWidth; // restart the animation
    tr.classList.add("flash");
  }
}

function refreshSummary() {
  const counts = Object.fromEntries(statuses.map((s) => [s, 0]));
  for (const order of orders.values()) counts[order.status] = (counts[order.status] || 0) + 1;
  const most = Math.max(1, ...Object.values(counts));
  for (const row of document.querySelectorAll(".bar-row")) {
    const count = counts[row.dataset.status] || 0;
    row.querySelector(".bar-count").textContent = count;
    row.querySelector(".bar-fill").style.width = `${(100 * count) / most}%`;
  }
  document.getElementById("order-count").textContent = `(${orders.size})`;
  document.getElementById("empty").hidden = orders.size > 0;
}

function upsert(order, flash) {
  orders.set(order.id, order);
  renderRow(order, flash);
}

function remove(pk) {
  orders.delete(pk);
  rows.querySelector(`tr[data-pk="${pk}"]`)?.remove();
}

function load(list) {
  orders.clear();
  rows.replaceChildren();
  for (const order of [...list].reverse()) upsert(order, false);
  refreshSummary();
}

function fromEvent(event) {
  const f = event.payload.fields;
  return { id: event.payload.pk, number: f.number, customer: f.customer, status: f.status, total: f.total, updated_at: f.updated_at };
}

function report(error) {
  document.getElementById("form-message").textContent = error.message;
}

load(JSON.parse(document.getElementById("initial-orders").textContent));

const stream = connect("/ws/events/");
const badge = document.getElementById("status");
stream.onStatus((status) => {
  badge.textContent = status.state === "open" ? "live" : status.state;
  badge.className = `badge badge-${status.state}`;
  badge.dataset.state = status.state;
});
stream.subscribe(
  "shop::Order::(created|updated|deleted)",
  (event) => {
    const action = event.name.split("::")[2];
    if (action === "deleted") remove(event.payload.pk);
    else upsert(fromEvent(event), true);
    refreshSummary();
  },
  {
    // After a reconnect the server cannot replay what we missed: reload.
    onGap: () => fetch("orders/").then((r) => r.json()).then((data) => load(data.orders)),
  },
);

document.getElementById("create-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = new FormData(e.target);
  try {
    const order = await post("orders/new/", { customer: form.get("customer"), total: form.get("total") });
    document.getElementById("form-message").textContent = `Created ${order.number}.`;
  } catch (error) {
    report(error);
  }
});
