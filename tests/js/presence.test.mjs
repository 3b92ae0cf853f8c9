// Tests of the browser client's presence (join) and to-others (fetch) helpers:
//   node --test tests/js/

import assert from "node:assert/strict";
import { test } from "node:test";

import { CONNECTION_HEADER } from "../../channels_events/static/channels_events/events.js";
import { harness } from "./harness.mjs";

const alice = { id: "alice", info: { name: "Alice" } };
const bob = { id: "bob", info: { name: "Bob" } };

test("join sends join after welcome and resolves with the members", async () => {
  const { client, last } = harness();
  const synced = [];
  const presence = client.join("shop::dashboard", { onSync: (m) => synced.push(m) });
  assert.deepEqual(last().sent, []);
  last().accept();
  assert.deepEqual(last().sent, [{ type: "join", id: "p1", topic: "shop::dashboard" }]);
  last().receive({ type: "presence", id: "p1", topic: "shop::dashboard", members: [alice, bob] });
  assert.deepEqual(await presence.members, [alice, bob]);
  assert.deepEqual(synced, [[alice, bob]]);
  assert.deepEqual(presence.current(), [alice, bob]);
});

test("presence_diff calls onJoin and onLeave and keeps the list current", async () => {
  const { client, last } = harness();
  const joined = [];
  const left = [];
  const presence = client.join("shop::dashboard", {
    onJoin: (m) => joined.push(m.id),
    onLeave: (m) => left.push(m.id),
  });
  last().accept();
  last().receive({ type: "presence", id: "p1", topic: "shop::dashboard", members: [alice] });
  last().receive({ type: "presence_diff", id: "p1", joins: [bob], leaves: [] });
  last().receive({ type: "presence_diff", id: "p1", joins: [], leaves: [alice] });
  // A diff for a member already known, or one gone already, calls nothing.
  last().receive({ type: "presence_diff", id: "p1", joins: [bob], leaves: [alice] });
  assert.deepEqual(joined, ["bob"]);
  assert.deepEqual(left, ["alice"]);
  assert.deepEqual(presence.current(), [bob]);
});

test("a reconnect joins again and onSync gives the list afresh", async () => {
  const { client, last, runTimer } = harness();
  const synced = [];
  const presence = client.join("shop::dashboard", { onSync: (m) => synced.push(m.map((x) => x.id)) });
  last().accept();
  last().receive({ type: "presence", id: "p1", topic: "shop::dashboard", members: [alice, bob] });
  last().drop();
  runTimer();
  last().accept();
  assert.deepEqual(last().sent, [{ type: "join", id: "p1", topic: "shop::dashboard" }]);
  last().receive({ type: "presence", id: "p1", topic: "shop::dashboard", members: [alice] });
  assert.deepEqual(synced, [["alice", "bob"], ["alice"]]);
  assert.deepEqual(presence.current(), [alice]);
  assert.deepEqual(await presence.members, [alice, bob]);
});

test("a refused join rejects with the server's code and is not asked again", async () => {
  const { client, last, runTimer } = harness();
  const errors = [];
  const presence = client.join("shop::dashboard", { onError: (e) => errors.push(e.code) });
  last().accept();
  last().receive({ type: "error", id: "p1", code: "forbidden", message: "no" });
  await assert.rejects(presence.members, { code: "forbidden" });
  assert.deepEqual(errors, ["forbidden"]);
  last().drop();
  runTimer();
  last().accept();
  assert.deepEqual(last().sent, []);
});

test("a rate_limited join is asked again after minDelay", () => {
  const { client, last, timers } = harness();
  client.join("shop::dashboard");
  last().accept();
  last().receive({ type: "error", id: "p1", code: "rate_limited", message: "slow down" });
  const retry = timers.pop();
  assert.equal(retry.ms, 500);
  retry.fn();
  assert.deepEqual(last().sent.slice(-1), [{ type: "join", id: "p1", topic: "shop::dashboard" }]);
});

test("leave sends leave once and is not joined again after a reconnect", () => {
  const { client, last, runTimer } = harness();
  const presence = client.join("shop::dashboard");
  presence.members.catch(() => {});
  last().accept();
  presence.leave();
  presence.leave();
  assert.deepEqual(last().sent.slice(1), [{ type: "leave", id: "p1" }]);
  last().drop();
  runTimer();
  last().accept();
  assert.deepEqual(last().sent, []);
});

test("join ids and subscription ids never collide", () => {
  const { client, last } = harness();
  client.subscribe("shop::.*", () => {});
  client.join("shop::dashboard");
  last().accept();
  const ids = last().sent.map((m) => m.id);
  assert.equal(new Set(ids).size, 2);
});

test("fetch sends the connection id in the header once connected", async () => {
  const { client, last, fetched } = harness();
  await client.fetch("/orders/new/", { method: "POST", headers: { "Content-Type": "application/json" } });
  assert.equal(fetched[0].init.headers.get(CONNECTION_HEADER), null);
  last().accept();
  assert.equal(client.connection, "c1");
  await client.fetch("/orders/new/", { method: "POST", headers: { "Content-Type": "application/json" } });
  const headers = fetched[1].init.headers;
  assert.equal(headers.get(CONNECTION_HEADER), "c1");
  assert.equal(headers.get("Content-Type"), "application/json");
  assert.equal(fetched[1].init.method, "POST");
  assert.equal(CONNECTION_HEADER, "X-Channels-Events-Connection");
});
