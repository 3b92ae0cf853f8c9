// Types of the channels-events browser client (events.js), PROTOCOL.md version 1.

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
}

export interface SubscribeOptions {
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
    ChannelsEvents: { connect: typeof connect };
  }
}
