// Tests of the browser client, run with Node's test runner:
//   node --test tests/js/
// A fake WebSocket and fake timers let the tests drive reconnects exactly.

import assert from "node:assert/strict";
import { test } from "node:test";

import { harness } from "./harness.mjs";

test("subscribes once the server says welcome, and delivers events", () => {
  const { client, last } = harness();
  const seen = [];
  client.subscribe("shop::Order::.*", (event) => seen.push(event.name));
  assert.deepEqual(last().sent, []); // not before welcome
  last().accept();
  assert.deepEqual(last().sent, [{ type: "subscribe", id: "s1", pattern: "shop::Order::.*" }]);
  last().receive({ type: "subscribed", id: "s1", namespace: "shop" });
  const envelope = { id: "01A", name: "shop::Order::created", namespace: "shop", payload: {} };
  last().receive({ type: "event", subscriptions: ["s1"], event: envelope });
  assert.deepEqual(seen, ["shop::Order::created"]);
});

test("one event frame reaches every listed subscription once", () => {
  const { client, last } = harness();
  const a = [];
  const b = [];
  client.subscribe("shop::.*", (e) => a.push(e.id));
  client.subscribe("shop::Order::.*", (e) => b.push(e.id));
  last().accept();
  last().receive({ type: "event", subscriptions: ["s1", "s2"], event: { id: "E1", name: "shop::Order::x" } });
  last().receive({ type: "event", subscriptions: ["s1"], event: { id: "E2", name: "shop::y" } });
  assert.deepEqual(a, ["E1", "E2"]);
  assert.deepEqual(b, ["E1"]);
});

test("reconnects with growing, capped, jittered delays", () => {
  const { client, sockets, runTimer, last } = harness({ minDelay: 100, maxDelay: 1000 });
  const states = [];
  client.onStatus((s) => states.push(s.state));
  last().drop();
  const delays = [];
  for (let i = 0; i < 6; i += 1) {
    delays.push(runTimer());
    last().drop();
  }
  // random() = 0.5 puts each delay at 3/4 of its ceiling: 100, 200, 400, 800, 1000, 1000.
  assert.deepEqual(delays, [75, 150, 300, 600, 750, 750]);
  assert.equal(sockets.length, 7);
  assert.ok(states.includes("waiting") && states.includes("reconnecting"));
});

test("a successful welcome resets the backoff", () => {
  const { runTimer, last } = harness({ minDelay: 100, maxDelay: 1000 });
  last().drop();
  runTimer();
  last().drop();
  runTimer();
  last().accept();
  last().drop();
  assert.equal(runTimer(), 75);
});

test("resubscribes after a reconnect, asking for what was missed with since", () => {
  const { client, runTimer, last } = harness();
  const gaps = [];
  client.subscribe("shop::.*", () => {}, { onGap: (gap) => gaps.push(gap.since) });
  last().accept();
  last().receive({ type: "subscribed", id: "s1", namespace: "shop" });
  last().receive({ type: "event", subscriptions: ["s1"], event: { id: "E7", name: "shop::x" } });
  last().drop();
  runTimer();
  last().accept();
  assert.deepEqual(last().sent, [{ type: "subscribe", id: "s1", pattern: "shop::.*", since: "E7" }]);
  last().receive({ type: "subscribed", id: "s1", namespace: "shop" });
  last().receive({ type: "gap", subscription: "s1", since: "E7" });
  assert.deepEqual(gaps, ["E7"]);
});

test("after lagged, reconnects and asks for the dropped events with since", () => {
  const { client, runTimer, last, sockets } = harness();
  const statuses = [];
  client.onStatus((status) => statuses.push(status));
  client.subscribe("shop::.*", () => {});
  last().accept();
  last().receive({ type: "subscribed", id: "s1", namespace: "shop" });
  last().receive({ type: "event", subscriptions: ["s1"], event: { id: "E5", name: "shop::x" } });
  last().receive({ type: "lagged", dropped: 40 });
  assert.ok(statuses.some((status) => status.lagged === 40));
  assert.equal(sockets[0].readyState, 3);
  runTimer();
  assert.equal(sockets.length, 2);
  last().accept();
  assert.deepEqual(last().sent, [{ type: "subscribe", id: "s1", pattern: "shop::.*", since: "E5" }]);
});

test("unsubscribe stops delivery and is not resubscribed", () => {
  const { client, runTimer, last } = harness();
  const seen = [];
  const stop = client.subscribe("shop::.*", (e) => seen.push(e.id));
  last().accept();
  stop();
  assert.deepEqual(last().sent.at(-1), { type: "unsubscribe", id: "s1" });
  last().receive({ type: "event", subscriptions: ["s1"], event: { id: "E1", name: "shop::x" } });
  last().drop();
  runTimer();
  last().accept();
  assert.deepEqual(last().sent, []);
  assert.deepEqual(seen, []);
});

test("a refused subscription is reported and forgotten", () => {
  const { client, runTimer, last } = harness();
  const errors = [];
  client.subscribe("billing::.*", () => {}, { onError: (e) => errors.push(e.code) });
  last().accept();
  last().receive({ type: "error", code: "forbidden", message: "no", id: "s1" });
  assert.deepEqual(errors, ["forbidden"]);
  last().drop();
  runTimer();
  last().accept();
  assert.deepEqual(last().sent, []);
});

test("a rate-limited subscription is asked for again, not forgotten", () => {
  const { client, runTimer, last } = harness();
  const errors = [];
  const seen = [];
  client.subscribe("shop::.*", (event) => seen.push(event.id), {
    onError: (e) => errors.push(e.code),
  });
  last().accept();
  assert.deepEqual(last().sent, [{ type: "subscribe", id: "s1", pattern: "shop::.*" }]);
  last().receive({ type: "error", code: "rate_limited", message: "slow down", id: "s1" });
  assert.deepEqual(errors, []);
  runTimer();
  assert.deepEqual(last().sent.slice(1), [{ type: "subscribe", id: "s1", pattern: "shop::.*" }]);
  last().receive({ type: "subscribed", id: "s1", namespace: "shop", last: null });
  const event = { id: "E1", name: "shop::x", namespace: "shop", payload: {}, timestamp: "t" };
  last().receive({ type: "event", subscriptions: ["s1"], event });
  assert.deepEqual(seen, ["E1"]);
});

test("emit resolves with the event id, or rejects with the error code", async () => {
  const { client, last } = harness();
  last().accept();
  const ok = client.emit("chat::message::sent", { text: "hi" });
  const refused = client.emit("admin::x", {});
  assert.deepEqual(last().sent, [
    { type: "emit", name: "chat::message::sent", payload: { text: "hi" } },
    { type: "emit", name: "admin::x", payload: {} },
  ]);
  last().receive({ type: "emitted", id: "EV1" });
  last().receive({ type: "error", code: "forbidden", message: "no" });
  assert.equal(await ok, "EV1");
  await assert.rejects(refused, (error) => error.code === "forbidden");
});

test("emits carry no id and their replies settle them in the order they were sent", async () => {
  const { client, last } = harness();
  last().accept();
  const first = client.emit("shop::a", {});
  const second = client.emit("billing::b", {});
  const third = client.emit("shop::c", { n: 3 });
  assert.ok(last().sent.every((message) => message.type === "emit" && !("id" in message)));
  last().receive({ type: "emitted", id: "EV1" });
  last().receive({ type: "error", code: "forbidden", message: "no" });
  last().receive({ type: "emitted", id: "EV3" });
  assert.equal(await first, "EV1");
  await assert.rejects(second, (error) => error.code === "forbidden");
  assert.equal(await third, "EV3");
});

test("an error that carries an id never settles an emit", async () => {
  const { client, last } = harness();
  const errors = [];
  client.subscribe("billing::.*", () => {}, { onError: (e) => errors.push(e.code) });
  client.subscribe("shop::.*", () => {});
  last().accept();
  last().receive({ type: "subscribed", id: "s2", namespace: "shop" });
  const emitted = client.emit("shop::x", {});
  let settled = false;
  emitted.then(
    () => (settled = true),
    () => (settled = true),
  );
  // Answers to a subscribe, to an acked subscription's id, to an unsubscribe.
  last().receive({ type: "error", code: "forbidden", message: "no", id: "s1" });
  last().receive({ type: "error", code: "rate_limited", message: "slow", id: "s2" });
  last().receive({ type: "error", code: "unknown_subscription", message: "?", id: "s9" });
  await Promise.resolve();
  assert.equal(settled, false);
  assert.deepEqual(errors, ["forbidden"]);
  last().receive({ type: "error", code: "rate_limited", message: "slow" });
  await assert.rejects(emitted, (error) => error.code === "rate_limited");
});

test("an error without an id when no emit waits is only logged", () => {
  const { client, last } = harness();
  const logged = [];
  const original = console.error;
  console.error = (...args) => logged.push(args);
  try {
    last().accept();
    last().receive({ type: "error", code: "bad_json", message: "not JSON" });
  } finally {
    console.error = original;
  }
  assert.equal(logged.length, 1);
  assert.equal(client.state, "open");
});

test("emit before the connection is open waits and is sent on welcome", async () => {
  const { client, last } = harness();
  const emitted = client.emit("a::b", { n: 1 });
  assert.deepEqual(last().sent, []);
  last().accept();
  assert.deepEqual(last().sent, [{ type: "emit", name: "a::b", payload: { n: 1 } }]);
  last().receive({ type: "emitted", id: "EV9" });
  assert.equal(await emitted, "EV9");
});

test("emit after close rejects at once", async () => {
  const { client, last } = harness();
  last().accept();
  client.close();
  await assert.rejects(client.emit("a::b", {}), /closed/);
});

test("keep-alive pings carry an id, so their errors are not taken for emit errors", async () => {
  const { client, last, runTimer } = harness({ pingInterval: 1000 });
  last().accept();
  const emitted = client.emit("a::b", {});
  runTimer(); // the ping
  assert.deepEqual(last().sent.at(-1), { type: "ping", id: "keepalive" });
  last().receive({ type: "error", code: "rate_limited", message: "slow", id: "keepalive" });
  last().receive({ type: "emitted", id: "EV1" });
  assert.equal(await emitted, "EV1");
});

test("close stops reconnecting", () => {
  const { client, sockets, timers, last } = harness();
  last().accept();
  client.close();
  assert.equal(timers.length, 0);
  assert.equal(sockets.length, 1);
  assert.equal(client.state, "closed");
});

test("lagged is reported through onStatus", () => {
  const { client, last } = harness();
  const lagged = [];
  client.onStatus((s) => s.lagged && lagged.push(s.lagged));
  last().accept();
  last().receive({ type: "lagged", dropped: 12 });
  assert.deepEqual(lagged, [12]);
});
