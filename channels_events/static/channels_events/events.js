// channels-events browser client: a dependency-free ES module.
//
//   import { connect } from "/static/channels_events/events.js";
//   const events = connect("/ws/events/");
//   const stop = events.subscribe("shop::Order::.*", (event) => console.log(event));
//   events.onStatus((status) => console.log(status.state));
//   await events.emit("chat::message::sent", { text: "hi" });
//
// Loaded with <script type="module" src=".../events.js">, it also sets
// window.ChannelsEvents = { connect }, for scripts that are not modules.
//
// The client speaks PROTOCOL.md version 1.1. It reconnects on its own with
// exponential backoff and jitter, subscribes again after a reconnect, and
// asks for what it missed with `since` (the id of the last event it saw, or,
// before any, the `last` id the server gave in `subscribed`); where the
// server keeps no history it answers `gap`, passed to onGap.
//
// A live page renders its state with the server's latest event id and
// subscribes from there, filtered to what it shows:
//
//   events.subscribe("shop::Order::.*", update, { where: { pk: 42 }, since: renderedId });
//
// Presence (protocol 1.1): `join(topic, {onSync, onJoin, onLeave})` makes
// this connection a member of `topic`, as the server's presence policy names
// it; `members` resolves with everyone present, and the client joins again
// after a reconnect (onSync then gives the list afresh).
//
// To others: `fetch(url, init)` is the page's fetch with this connection's
// id in the X-Channels-Events-Connection header: events the request causes
// skip this connection (the server's ToOthersMiddleware) and reach every
// other one, other tabs of the same user included.
//
// An `emit` carries no id, and neither do its replies (`emitted`, whose `id`
// is the new event's, or `error`): the server answers emits in the order
// they were sent, and the client settles them in that order. Every other
// message the client sends has an id, so an error without one answers the
// oldest emit still waiting.

const PROTOCOL = 1;
/** The HTTP header that names this connection to the server's ToOthersMiddleware. */
export const CONNECTION_HEADER = "X-Channels-Events-Connection";

function defaults(options) {
  return {
    minDelay: 500, // ms before the first reconnect attempt
    maxDelay: 15000, // ms, the cap of the exponential backoff
    reconnect: true,
    pingInterval: 25000, // ms between keep-alive pings; 0 turns them off
    WebSocket: globalThis.WebSocket, // injectable, for tests and other runtimes
    random: Math.random,
    setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
    clearTimeout: (handle) => globalThis.clearTimeout(handle),
    fetch: (...args) => globalThis.fetch(...args),
    ...options,
  };
}

function absoluteUrl(url) {
  if (/^wss?:\/\//.test(url)) return url;
  const location = globalThis.location;
  if (!location) throw new Error(`connect() needs an absolute ws:// URL, got ${url}`);
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${url.startsWith("/") ? "" : "/"}${url}`;
}

/**
 * Open an event stream. Returns a client with subscribe, emit, onStatus and close.
 * `options`: minDelay, maxDelay, reconnect, pingInterval, WebSocket.
 */
export function connect(url, options = {}) {
  const opts = defaults(options);
  const target = absoluteUrl(url);
  const subscriptions = new Map(); // id -> {pattern, callback, where, onGap, onError, since, acked}
  const joins = new Map(); // id -> {topic, members: Map(id -> info), acked, settle, ...callbacks}
  const statusListeners = new Set();
  const pendingEmits = []; // sent emits, oldest first: {resolve, reject}, answered in order
  const queuedEmits = []; // emits waiting for the connection: {message, resolve, reject}
  let socket = null;
  let attempt = 0;
  let retryTimer = null;
  let pingTimer = null;
  let closed = false;
  let counter = 0;
  let state = "connecting";
  let connectionId = null;

  function setStatus(next, extra = {}) {
    state = next;
    const status = { state: next, attempt, connection: connectionId, ...extra };
    for (const listener of statusListeners) {
      try {
        listener(status);
      } catch (error) {
        console.error("channels-events: status listener failed", error);
      }
    }
  }

  function send(message) {
    if (socket && socket.readyState === 1 && state === "open") {
      socket.send(JSON.stringify(message));
      return true;
    }
    return false;
  }

  function sendSubscribe(id, sub) {
    const message = { type: "subscribe", id, pattern: sub.pattern };
    if (sub.where) message.where = sub.where;
    if (sub.since) message.since = sub.since;
    sub.acked = false;
    send(message);
  }

  function sendJoin(id, membership) {
    membership.acked = false;
    send({ type: "join", id, topic: membership.topic });
  }

  function call(callback, ...args) {
    if (!callback) return;
    try {
      callback(...args);
    } catch (error) {
      console.error("channels-events: presence callback failed", error);
    }
  }

  function memberList(membership) {
    return [...membership.members].map(([id, info]) => ({ id, info }));
  }

  function onPresence(message) {
    const membership = joins.get(message.id);
    if (!membership) return;
    membership.acked = true;
    membership.members = new Map((message.members || []).map((m) => [m.id, m.info]));
    const list = memberList(membership);
    call(membership.onSync, list);
    membership.settle(list, null);
  }

  function onPresenceDiff(message) {
    const membership = joins.get(message.id);
    if (!membership) return;
    for (const member of message.leaves || []) {
      if (membership.members.delete(member.id)) call(membership.onLeave, member);
    }
    for (const member of message.joins || []) {
      const known = membership.members.has(member.id);
      membership.members.set(member.id, member.info);
      if (!known) call(membership.onJoin, member);
    }
  }

  // Return whether the error answered a join (and was handled here).
  function onJoinError(message, error) {
    const membership = joins.get(message.id);
    if (!membership) return false;
    if (!membership.acked && message.code === "rate_limited") {
      const id = message.id;
      opts.setTimeout(() => {
        if (joins.get(id) === membership && !membership.acked && socket) sendJoin(id, membership);
      }, opts.minDelay);
    } else if (!membership.acked) {
      // Refused: forget it, or every reconnect would ask again.
      joins.delete(message.id);
      call(membership.onError, error);
      membership.settle(null, error);
    } else {
      console.error("channels-events: server error", error);
    }
    return true;
  }

  function open() {
    if (closed) return;
    setStatus(attempt === 0 ? "connecting" : "reconnecting");
    let ws;
    try {
      ws = new opts.WebSocket(target);
    } catch (error) {
      scheduleReconnect();
      return;
    }
    socket = ws;
    ws.onmessage = (message) => handle(message.data);
    ws.onclose = (event) => {
      if (socket !== ws) return;
      socket = null;
      stopPing();
      failPendingEmits(new Error("connection closed"));
      if (closed) {
        setStatus("closed", { code: event && event.code });
        return;
      }
      setStatus("disconnected", { code: event && event.code });
      scheduleReconnect();
    };
    ws.onerror = () => {
      // onclose follows and schedules the reconnect.
    };
  }

  function scheduleReconnect() {
    if (closed || !opts.reconnect || retryTimer !== null) return;
    const ceiling = Math.min(opts.maxDelay, opts.minDelay * 2 ** attempt);
    // Full jitter between half the ceiling and the ceiling: clients that
    // lost the same server do not all come back in the same millisecond.
    const delay = ceiling / 2 + opts.random() * (ceiling / 2);
    attempt += 1;
    setStatus("waiting", { delay });
    retryTimer = opts.setTimeout(() => {
      retryTimer = null;
      open();
    }, delay);
  }

  function startPing() {
    stopPing();
    if (!opts.pingInterval) return;
    const tick = () => {
      // With an id, an error answering the ping (rate_limited) carries it
      // and cannot be taken for the answer to an emit.
      send({ type: "ping", id: "keepalive" });
      pingTimer = opts.setTimeout(tick, opts.pingInterval);
    };
    pingTimer = opts.setTimeout(tick, opts.pingInterval);
  }

  function stopPing() {
    if (pingTimer !== null) opts.clearTimeout(pingTimer);
    pingTimer = null;
  }

  function failPendingEmits(error) {
    while (pendingEmits.length) pendingEmits.shift().reject(error);
  }

  function handle(data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch (error) {
      console.error("channels-events: ignored a frame that is not JSON", data);
      return;
    }
    switch (message.type) {
      case "welcome":
        if (message.protocol !== PROTOCOL) {
          console.warn(`channels-events: server speaks protocol ${message.protocol}`);
        }
        connectionId = message.connection;
        attempt = 0;
        setStatus("open");
        for (const [id, sub] of subscriptions) sendSubscribe(id, sub);
        for (const [id, membership] of joins) sendJoin(id, membership);
        while (queuedEmits.length) {
          const queued = queuedEmits.shift();
          send(queued.message);
          pendingEmits.push(queued);
        }
        startPing();
        break;
      case "subscribed": {
        const sub = subscriptions.get(message.id);
        if (sub) {
          sub.acked = true;
          // Where the stream starts: a subscription that sees no event before
          // the next reconnect resumes from here, and loses nothing published
          // while it was away.
          sub.last = message.last === undefined ? null : message.last;
          if (!sub.since) sub.since = sub.last;
        }
        break;
      }
      case "unsubscribed":
        break;
      case "event": {
        const envelope = message.event;
        for (const id of message.subscriptions || []) {
          const sub = subscriptions.get(id);
          if (!sub) continue;
          sub.since = envelope.id;
          try {
            sub.callback(envelope);
          } catch (error) {
            console.error("channels-events: subscriber failed", error);
          }
        }
        break;
      }
      case "gap": {
        const sub = subscriptions.get(message.subscription);
        if (!sub) break;
        // What came after `since` is lost; the live stream starts at `last`.
        if (sub.since === message.since) sub.since = sub.last;
        if (sub.onGap) sub.onGap({ since: message.since });
        break;
      }
      case "lagged":
        setStatus("open", { lagged: message.dropped });
        // Events were dropped for this connection: come back and subscribe
        // with since, which replays them from the history (or says gap).
        if (opts.reconnect && socket) socket.close(4000);
        break;
      case "pong":
        break;
      case "presence":
        onPresence(message);
        break;
      case "presence_diff":
        onPresenceDiff(message);
        break;
      case "left":
        break;
      case "emitted": {
        // The answer to the oldest emit still waiting; its id is the new event's.
        const pending = pendingEmits.shift();
        if (pending) pending.resolve(message.id);
        break;
      }
      case "error": {
        const error = Object.assign(new Error(message.message), { code: message.code });
        if (message.id === undefined) {
          // Only emits go without an id: this answers the oldest one waiting.
          if (pendingEmits.length) pendingEmits.shift().reject(error);
          else console.error("channels-events: server error", error);
          break;
        }
        if (onJoinError(message, error)) break;
        const sub = subscriptions.get(message.id);
        if (sub && !sub.acked && message.code === "rate_limited") {
          // Not a refusal: the server had no room for the request. Ask
          // again a little later, unless it is gone or answered by then.
          const id = message.id;
          opts.setTimeout(() => {
            if (subscriptions.get(id) === sub && !sub.acked && socket) sendSubscribe(id, sub);
          }, opts.minDelay);
        } else if (sub && !sub.acked) {
          // The server refused this subscription: forget it, or every
          // reconnect would ask again.
          subscriptions.delete(message.id);
          if (sub.onError) sub.onError(error);
          else console.error(`channels-events: subscription ${sub.pattern} refused`, error);
        } else {
          console.error("channels-events: server error", error);
        }
        break;
      }
      default:
        console.warn("channels-events: ignored unknown message", message);
    }
  }

  const client = {
    /**
     * Call `callback(envelope)` for each event whose name fully matches `pattern`.
     * `options`: where (payload paths to a value or a list of values: only events
     * whose payload has them), since (an event id: start after it, as rendered
     * with the server's latest_event_id), onGap({since}) when events were missed,
     * onError(error) if refused. Returns a function that unsubscribes.
     */
    subscribe(pattern, callback, subscribeOptions = {}) {
      counter += 1;
      const id = `s${counter}`;
      const { where = null, since = null, onGap, onError } = subscribeOptions;
      const sub = { pattern, callback, where, since, last: null, acked: false, onGap, onError };
      subscriptions.set(id, sub);
      sendSubscribe(id, sub);
      return () => {
        if (subscriptions.delete(id)) send({ type: "unsubscribe", id });
      };
    },

    /**
     * Ask the server to dispatch an event; resolves with the new event's id, rejects
     * with an Error whose `code` is the server's if refused. While the connection is
     * (re)opening the emit waits and is sent once it is open; if the connection
     * closes before the answer, it rejects.
     */
    emit(name, payload = {}) {
      return new Promise((resolve, reject) => {
        if (closed) {
          reject(new Error("closed"));
          return;
        }
        const message = { type: "emit", name, payload };
        if (send(message)) pendingEmits.push({ resolve, reject });
        else queuedEmits.push({ message, resolve, reject });
      });
    },

    /**
     * Join the presence `topic` as the member the server's policy names. Returns
     * {members, leave, current}: `members` resolves with everyone present once the
     * server answers (rejects with an Error whose `code` is the server's if refused);
     * `current()` is the list now; `leave()` leaves. `options`: onSync(members) on
     * every (re)join, onJoin(member) and onLeave(member) as others come and go,
     * onError(error) if refused. A member is {id, info}.
     */
    join(topic, joinOptions = {}) {
      counter += 1;
      const id = `p${counter}`;
      let settled = false;
      let resolveMembers;
      let rejectMembers;
      const members = new Promise((resolve, reject) => {
        resolveMembers = resolve;
        rejectMembers = reject;
      });
      const membership = {
        topic,
        members: new Map(),
        acked: false,
        ...joinOptions,
        settle(list, error) {
          if (settled) return;
          settled = true;
          if (error) rejectMembers(error);
          else resolveMembers(list);
        },
      };
      joins.set(id, membership);
      sendJoin(id, membership);
      return {
        members,
        current: () => memberList(membership),
        leave: () => {
          if (!joins.delete(id)) return;
          send({ type: "leave", id });
          membership.settle(null, Object.assign(new Error("left"), { code: "left" }));
        },
      };
    },

    /**
     * `fetch(input, init)` with this connection's id in the CONNECTION_HEADER, so
     * that the events the request causes skip this connection (to others). Before
     * the first welcome it sends no such header.
     */
    fetch(input, init = {}) {
      const headers = new Headers(init.headers || {});
      if (connectionId) headers.set(CONNECTION_HEADER, connectionId);
      return opts.fetch(input, { ...init, headers });
    },

    /** The server's id of the current connection (`welcome.connection`), or null. */
    get connection() {
      return connectionId;
    },

    /** Call `callback({state, attempt, ...})` on every status change. Returns a remover. */
    onStatus(callback) {
      statusListeners.add(callback);
      callback({ state, attempt, connection: connectionId });
      return () => statusListeners.delete(callback);
    },

    /** Close for good: no more reconnects. */
    close() {
      closed = true;
      while (queuedEmits.length) queuedEmits.shift().reject(new Error("closed"));
      stopPing();
      if (retryTimer !== null) opts.clearTimeout(retryTimer);
      retryTimer = null;
      if (socket) socket.close(1000);
      else setStatus("closed");
    },

    get state() {
      return state;
    },
  };

  open();
  return client;
}

if (typeof window !== "undefined") {
  window.ChannelsEvents = { connect, CONNECTION_HEADER };
}
