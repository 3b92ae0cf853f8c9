// Types of the channels-events browser client (events.js), PROTOCOL.md version 1.1.

/** An event as it travels (PROTOCOL.md section 2). */
export interface Envelope {
  id: string;
  name: string;
  namespace: string;
  payload: Record<string, unknown>;
  timestamp: string;
}

/** An error the server answered with; `code` is one of PROTOCOL.md section 5's. */
export interface EventsError extends Error {
  code: string;
}

export type State = "connecting" | "reconnecting" | "open" | "waiting" | "disconnected" | "closed";

export interface Status {
  state: State;
  /** Reconnect attempts since the last successful welcome. */
  attempt: number;
  /** The server's id of the current connection (`welcome.connection`), once open. */
  connection: string | null;
  /** With "waiting": ms until the next attempt. */
  delay?: number;
  /** With "disconnected" and "closed": the websocket close code. */
  code?: number;
  /** With "open": events the server dropped because the client fell behind. */
  lagged?: number;
}

export interface ConnectOptions {
  /** ms before the first reconnect attempt (500). */
  minDelay?: number;
  /** ms, the cap of the exponential backoff (15000). */
  maxDelay?: number;
  /** Reconnect after the connection drops (true). */
  reconnect?: boolean;
  /** ms between keep-alive pings; 0 turns them off (25000). */
  pingInterval?: number;
  WebSocket?: typeof WebSocket;
  random?: () => number;
  setTimeout?: (fn: () => void, ms: number) => unknown;
  clearTimeout?: (handle: unknown) => void;
  /** The fetch that `Client.fetch` calls (globalThis.fetch). */
  fetch?: typeof fetch;
}

/** A JSON scalar, as a `where` compares it (a boolean is not a number; 1 equals 1.0). */
export type Scalar = string | number | boolean | null;

/**
 * A filter on the event's payload: dotted paths (`pk`, `fields.status`) to a value (equal)
 * or a list of values (any of); every path must hold. At most 8 paths, 100 values a list.
 */
export type Where = Record<string, Scalar | Scalar[]>;

/** A member of a presence topic, as the server's presence policy names it. */
export interface Member {
  id: string;
  info: unknown;
}

export interface JoinOptions {
  /** Called with everyone present on every (re)join, after a reconnect too. */
  onSync?: (members: Member[]) => void;
  /** Called when a member arrives. */
  onJoin?: (member: Member) => void;
  /** Called when a member leaves (after its last connection). */
  onLeave?: (member: Member) => void;
  /** Called if the server refuses the join; it is then forgotten. */
  onError?: (error: EventsError) => void;
}

export interface Presence {
  /** Everyone present once the server answers; rejects if the join is refused. */
  members: Promise<Member[]>;
  /** Everyone present now, as far as this client knows. */
  current(): Member[];
  /** Leave the topic. */
  leave(): void;
}

/** The HTTP header that names the connection to the server's ToOthersMiddleware. */
export const CONNECTION_HEADER: "X-Channels-Events-Connection";

export interface SubscribeOptions {
  /** Only events whose payload meets this filter, checked by the server. */
  where?: Where;
  /**
   * Start after this event id: events recorded after it are replayed first (render a page
   * with the server's `latest_event_id` and pass it here).
   */
  since?: string | null;
  /**
   * Called when the server could not replay what was missed: reload your state.
   * `since` is the last event the server knows it sent, or null when it knows none.
   */
  onGap?: (gap: { since: string | null }) => void;
  /** Called if the server refuses the subscription; it is then forgotten. */
  onError?: (error: EventsError) => void;
}

export interface Client {
  /** Call `callback` for each event whose name fully matches `pattern`; returns an unsubscriber. */
  subscribe(
    pattern: string,
    callback: (event: Envelope) => void,
    options?: SubscribeOptions,
  ): () => void;
  /**
   * Ask the server to dispatch an event. Resolves with the new event's id; rejects with an
   * EventsError if refused, or an Error if the connection closes first. Emits are answered
   * in the order they were sent.
   */
  emit(name: string, payload?: Record<string, unknown>): Promise<string>;
  /** Join a presence topic (protocol 1.1); joined again after a reconnect. */
  join(topic: string, options?: JoinOptions): Presence;
  /**
   * `fetch` with this connection's id in CONNECTION_HEADER: the events the request
   * causes skip this connection and reach every other one.
   */
  fetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response>;
  /** The server's id of the current connection (`welcome.connection`), or null. */
  readonly connection: string | null;
  /** Call `callback` now and on every status change; returns a remover. */
  onStatus(callback: (status: Status) => void): () => void;
  /** Close for good: no more reconnects. */
  close(): void;
  readonly state: State;
}

/** Open an event stream at `url` (absolute, or a path on this page's host). */
export function connect(url: string, options?: ConnectOptions): Client;

declare global {
  interface Window {
    ChannelsEvents: { connect: typeof connect; CONNECTION_HEADER: typeof CONNECTION_HEADER };
  }
}
