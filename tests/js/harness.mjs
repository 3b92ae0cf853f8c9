// The test harness of the browser client's tests: a fake WebSocket whose
// server side the test drives (accept, receive, drop), fake timers that run
// when the test says, and a fetch that records its calls.

import assert from "node:assert/strict";

import { connect } from "../../channels_events/static/channels_events/events.js";

export function harness(options = {}) {
  const sockets = [];
  const timers = [];
  const fetched = [];
  class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      sockets.push(this);
    }
    send(text) {
      this.sent.push(JSON.parse(text));
    }
    close(code = 1000) {
      this.readyState = 3;
      this.onclose?.({ code });
    }
    accept() {
      this.readyState = 1;
      this.receive({ type: "welcome", protocol: 1, connection: `c${sockets.length}` });
    }
    receive(message) {
      this.onmessage?.({ data: JSON.stringify(message) });
    }
    drop() {
      this.readyState = 3;
      this.onclose?.({ code: 1006 });
    }
  }
  const client = connect("ws://127.0.0.1:8000/ws/events/", {
    WebSocket: FakeWebSocket,
    random: () => 0.5,
    pingInterval: 0,
    setTimeout: (fn, ms) => {
      timers.push({ fn, ms });
      return timers.length;
    },
    clearTimeout: () => {},
    fetch: async (input, init) => {
      fetched.push({ input, init });
      return { ok: true };
    },
    ...options,
  });
  const runTimer = () => {
    const timer = timers.shift();
    assert.ok(timer, "a timer was scheduled");
    timer.fn();
    return timer.ms;
  };
  // Drop the connection, let the backoff timer fire, and accept the new one.
  const reconnect = () => {
    sockets.at(-1).drop();
    runTimer();
    sockets.at(-1).accept();
  };
  return {
    client,
    sockets,
    timers,
    fetched,
    runTimer,
    reconnect,
    last: () => sockets[sockets.length - 1],
  };
}
