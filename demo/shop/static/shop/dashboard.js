// The live dashboard: a table and a chart kept current by shop::Order::* events,
// a log of those events, and who else is watching (presence).
//
// The page's own changes go through `stream.fetch`, which names this
// connection to the server: their events skip it (to others) and come back
// in the answer instead, where the page applies them and marks them as its own.
import { connect } from "../channels_events/events.js";

const statuses = JSON.parse(document.getElementById("statuses").textContent);
const rows = document.getElementById("order-rows");
const orders = new Map(); // pk -> order fields
const LOG_SIZE = 50;
const log = document.getElementById("log");
// On the in-memory layer this server hears no other process.
const inMemory = document.getElementById("layer").dataset.inMemory === "true";
// Ids of events this page's own requests caused: shown from the answer, and not
// applied again should a replay after a reconnect bring them.
const ownEvents = new Set();
const stream = connect("/ws/events/");

function csrfToken() {
  const match = document.cookie.match(/(?:^|; )csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

async function post(url, body) {
  const response = await stream.fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
    body: JSON.stringify(body || {}),
    credentials: "same-origin",
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
  for (const event of data.events || []) receive(event, true);
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
    (() => {
      const td = document.createElement("td");
      const link = document.createElement("a");
      link.href = `orders/${order.id}/`;
      link.textContent = order.number;
      link.title = "This order's page, live";
      td.append(link);
      return td;
    })(),
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
  const known = orders.get(order.id);
  // An event older than the row (one that overtook a reload) changes nothing.
  if (known && Date.parse(known.updated_at) > Date.parse(order.updated_at)) return;
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

// Where an event came from, as far as this page can know: the envelope does not
// say which process dispatched it, but the views answer with the ids of the
// events a request caused.
function showOrigin(tag, own) {
  if (own) {
    tag.dataset.origin = "page";
    tag.textContent = "this page";
    tag.title = "Caused by a request of this page, made by the server process it listens to.";
  } else if (inMemory) {
    tag.dataset.origin = "server";
    tag.textContent = "this server";
    tag.title = "Another page or request of this server process: on the in-memory layer it hears no other process.";
  } else {
    tag.dataset.origin = "other";
    tag.textContent = "another page or process";
    tag.title = "The event does not say which process dispatched it.";
  }
}

function element(tag, text, className) {
  const node = document.createElement(tag);
  node.textContent = text;
  if (className) node.className = className;
  return node;
}

function shown(value) {
  return value === undefined ? "?" : JSON.stringify(value);
}

function logEvent(event, own) {
  const arrived = Date.now();
  const entry = document.createElement("li");
  entry.className = "log-entry";
  entry.dataset.id = event.id;
  entry.dataset.name = event.name;
  const origin = element("span", "", "log-origin");
  showOrigin(origin, own);
  const latency = element("span", `${arrived - Date.parse(event.timestamp)} ms`, "log-latency");
  latency.title = "From the event's timestamp, where it was dispatched, to its arrival here (both clocks count).";
  const head = element("div", "", "log-head");
  head.append(
    element("time", new Date(arrived).toLocaleTimeString()),
    element("code", event.name, "log-name"),
    origin,
    latency,
  );
  entry.append(head);
  const { changed, previous = {}, fields = {} } = event.payload;
  if (Array.isArray(changed)) {
    const list = element("ul", "", "log-changes");
    for (const field of changed) {
      const item = element("li", `: ${shown(previous[field])} → ${shown(fields[field])}`);
      item.prepend(element("code", field));
      list.append(item);
    }
    entry.append(list);
  }
  entry.append(element("pre", JSON.stringify(event.payload), "log-payload"));
  log.prepend(entry);
  while (log.children.length > LOG_SIZE) log.lastElementChild.remove();
  document.getElementById("log-empty").hidden = true;
}

function report(error) {
  document.getElementById("form-message").textContent = error.message;
}

load(JSON.parse(document.getElementById("initial-orders").textContent));

function apply(event) {
  const action = event.name.split("::")[2];
  if (action === "deleted") remove(event.payload.pk);
  else upsert(fromEvent(event), true);
  refreshSummary();
}

let reloading = null; // events that arrived while the orders were being reloaded

function reload() {
  if (reloading) return;
  reloading = [];
  fetch("orders/")
    .then((response) => response.json())
    .then((data) => load(data.orders))
    .catch(report)
    .finally(() => {
      const arrived = reloading;
      reloading = null;
      for (const event of arrived) apply(event);
    });
}

const badge = document.getElementById("status");
let opened = false; // the stream was open before: an "open" now is a reconnect
let heard = false; // an event arrived: after a reconnect the client resumes after it
stream.onStatus((status) => {
  badge.textContent = status.state === "open" ? "live" : status.state;
  badge.className = `badge badge-${status.state}`;
  badge.dataset.state = status.state;
  if (status.state !== "open") return;
  // The server dropped events for this page, or it reconnected with no event
  // to resume after (the client resumes from its subscription's `last`, but
  // where no history is kept there is none): what changed may be unknown, so
  // reload.
  if (status.lagged || (opened && !heard)) reload();
  opened = true;
});
// An order event, from the stream or (own) from the answer to this page's request.
function receive(event, own) {
  if (own) ownEvents.add(event.id);
  else if (ownEvents.has(event.id)) return; // shown already, from the answer
  logEvent(event, own);
  if (reloading) reloading.push(event);
  else apply(event);
}

stream.subscribe(
  "shop::Order::(created|updated|deleted)",
  (event) => {
    heard = true;
    receive(event, false);
  },
  {
    // After a reconnect the client subscribes again with `since`, the last
    // event it saw, and the server replays what came after from its history
    // (docs/protocol.md, section 6). `gap` says the history no longer holds
    // that event (or none is kept, or the server restarted on the in-memory
    // layer): what was missed is unknown, so reload.
    onGap: reload,
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

// Who is watching: everyone on this dashboard now, as the server's presence
// policy names them (a user's name, or a guest label), each once however
// many tabs they have open.
const watchers = document.getElementById("watchers");
function showWatchers(members) {
  const items = [...members]
    .sort((a, b) => String(a.info?.name).localeCompare(String(b.info?.name)))
    .map((member) => {
      const item = element("li", member.info?.name || member.id, "watcher");
      item.dataset.member = member.id;
      return item;
    });
  watchers.replaceChildren(...items);
  document.getElementById("watcher-count").textContent = `(${members.length})`;
}
const presence = stream.join("shop::dashboard", {
  onSync: showWatchers,
  onJoin: () => showWatchers(presence.current()),
  onLeave: () => showWatchers(presence.current()),
});
presence.members.catch(report);
