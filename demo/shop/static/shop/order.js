// One order's page: rendered from the database, then kept current by that
// order's events only. The server filters them (`where`), and the stream
// starts after the event id the page was rendered with (`since`), so a change
// made between the render and the subscription is replayed, not lost.
import { connect } from "../channels_events/events.js";

const statuses = JSON.parse(document.getElementById("statuses").textContent);
const order = JSON.parse(document.getElementById("initial-order").textContent);
const renderedAfter = JSON.parse(document.getElementById("last-event-id").textContent);
const log = document.getElementById("log");

function csrfToken() {
  const match = document.cookie.match(/(?:^|; )csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

function show() {
  const status = document.getElementById("order-status");
  status.textContent = order.status;
  status.className = `pill status-${order.status}`;
  document.getElementById("order-customer").textContent = order.customer;
  document.getElementById("order-total").textContent = order.total;
  const updated = document.getElementById("order-updated");
  updated.dateTime = order.updated_at;
  updated.textContent = new Date(order.updated_at).toLocaleString();
  document.getElementById("advance").disabled = order.status === statuses[statuses.length - 1];
}

function logEvent(event) {
  const entry = document.createElement("li");
  entry.className = "log-entry";
  entry.dataset.id = event.id;
  entry.dataset.name = event.name;
  entry.dataset.pk = event.payload.pk;
  const name = document.createElement("code");
  name.className = "log-name";
  name.textContent = event.name;
  const payload = document.createElement("pre");
  payload.className = "log-payload";
  payload.textContent = JSON.stringify(event.payload);
  entry.append(name, payload);
  log.prepend(entry);
  document.getElementById("log-empty").hidden = true;
}

function apply(event) {
  logEvent(event);
  if (event.name.endsWith("::deleted")) {
    document.getElementById("order-deleted").hidden = false;
    document.getElementById("advance").disabled = true;
    return;
  }
  const fields = event.payload.fields;
  // A change already in the rendered page (made between reading the event id
  // and reading the order) may be replayed: applying it again changes nothing.
  Object.assign(order, {
    number: fields.number,
    customer: fields.customer,
    status: fields.status,
    total: fields.total,
    updated_at: fields.updated_at,
  });
  show();
}

document.getElementById("advance").addEventListener("click", async () => {
  const response = await fetch("advance/", {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
    body: "{}",
    credentials: "same-origin",
  });
  const data = await response.json().catch(() => ({}));
  document.getElementById("form-message").textContent = response.ok ? "" : data.error || `HTTP ${response.status}`;
});

show();
const stream = connect("/ws/events/");
const badge = document.getElementById("status");
stream.onStatus((status) => {
  badge.textContent = status.state === "open" ? "live" : status.state;
  badge.className = `badge badge-${status.state}`;
  badge.dataset.state = status.state;
});
stream.subscribe("shop::Order::(updated|deleted)", apply, {
  where: { pk: order.id },
  since: renderedAfter,
  // The history no longer holds the rendered event (or keeps none): what
  // changed since is unknown, so render the page again.
  onGap: () => window.location.reload(),
});
