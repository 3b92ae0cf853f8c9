// Tests of the client's subscribe options (where, since) and of resuming from
// `subscribed.last`, run with Node's test runner: node --test tests/js/

import assert from "node:assert/strict";
import { test } from "node:test";

import { harness } from "./harness.mjs";

const event = (id) => ({ id, name: "shop::Order::updated", namespace: "shop", payload: { pk: 42 } });

test("where and since travel with the subscribe, and again after a reconnect", () => {
  const { client, reconnect, last } = harness();
  client.subscribe("shop::Order::.*", () => {}, { where: { pk: 42, "fields.status": ["new", "paid"] }, since: "E5" });
  last().accept();
  const expected = {
    type: "subscribe",
    id: "s1",
    pattern: "shop::Order::.*",
    where: { pk: 42, "fields.status": ["new", "paid"] },
    since: "E5",
  };
  assert.deepEqual(last().sent, [expected]);
  last().receive({ type: "subscribed", id: "s1", namespace: "shop", last: "E9" });
  // Replayed events move the cursor; the filter stays.
  last().receive({ type: "event", subscriptions: ["s1"], event: event("E6") });
  reconnect();
  assert.deepEqual(last().sent, [{ ...expected, since: "E6" }]);
});

test("a subscription that has seen no event resumes from subscribed.last", () => {
  const { client, reconnect, last } = harness();
  const seen = [];
  client.subscribe("shop::.*", (e) => seen.push(e.id));
  last().accept();
  assert.deepEqual(last().sent, [{ type: "subscribe", id: "s1", pattern: "shop::.*" }]);
  last().receive({ type: "subscribed", id: "s1", namespace: "shop", last: "E3" });
  reconnect();
  assert.deepEqual(last().sent, [{ type: "subscribe", id: "s1", pattern: "shop::.*", since: "E3" }]);
  // Once an event arrives, it is the cursor.
  last().receive({ type: "subscribed", id: "s1", namespace: "shop", last: "E4" });
  last().receive({ type: "event", subscriptions: ["s1"], event: event("E5") });
  reconnect();
  assert.deepEqual(last().sent.at(-1).since, "E5");
  assert.deepEqual(seen, ["E5"]);
});

test("a given since is kept over subscribed.last until an event arrives", () => {
  const { client, reconnect, last } = harness();
  client.subscribe("shop::.*", () => {}, { since: "E1" });
  last().accept();
  last().receive({ type: "subscribed", id: "s1", namespace: "shop", last: "E8" });
  // The replay after E1 was cut off by the reconnect: ask again from E1.
  reconnect();
  assert.equal(last().sent.at(-1).since, "E1");
});

test("with no history (last null) the client subscribes without since", () => {
  const { client, reconnect, last } = harness();
  client.subscribe("shop::.*", () => {});
  last().accept();
  last().receive({ type: "subscribed", id: "s1", namespace: "shop", last: null });
  reconnect();
  assert.deepEqual(last().sent, [{ type: "subscribe", id: "s1", pattern: "shop::.*" }]);
});

test("a server of protocol 1.0 (no last) keeps the old behaviour", () => {
  const { client, reconnect, last } = harness();
  client.subscribe("shop::.*", () => {});
  last().accept();
  last().receive({ type: "subscribed", id: "s1", namespace: "shop" });
  reconnect();
  assert.equal(last().sent.at(-1).since, undefined);
});

test("after a gap the next reconnect resumes from where the live stream began", () => {
  const { client, reconnect, last } = harness();
  const gaps = [];
  client.subscribe("shop::.*", () => {}, { since: "OLD", onGap: (gap) => gaps.push(gap.since) });
  last().accept();
  last().receive({ type: "subscribed", id: "s1", namespace: "shop", last: "E20" });
  last().receive({ type: "gap", subscription: "s1", since: "OLD" });
  assert.deepEqual(gaps, ["OLD"]);
  reconnect();
  assert.equal(last().sent.at(-1).since, "E20");
});
