// Typed usage of the browser client, checked by `tsc -p tests/js` (never run):
// what a page written in TypeScript does must type-check against events.d.ts,
// and what the client does not accept must not.

import {
  connect,
  type Client,
  type Envelope,
  type EventsError,
  type Status,
  type Where,
} from "../../channels_events/static/channels_events/events.js";

const events: Client = connect("/ws/events/", { minDelay: 250, pingInterval: 0 });

// A detail page: the snapshot's event id, rendered by the server, and a filter.
const rendered: string | null = document.body.dataset["lastEvent"] ?? null;
const where: Where = { pk: 42, "fields.status": ["new", "paid"], "fields.flag": true };
const stop: () => void = events.subscribe(
  "shop::Order::.*",
  (event: Envelope) => {
    const id: string = event.id;
    const payload: Record<string, unknown> = event.payload;
    console.log(id, payload["pk"]);
  },
  {
    where,
    since: rendered,
    onGap: (gap: { since: string | null }) => console.log("reload after", gap.since),
    onError: (error: EventsError) => console.log(error.code),
  },
);
stop();

// Every option is optional.
events.subscribe("shop::.*", () => {});
events.subscribe("shop::.*", () => {}, { where: { pk: null } });

const emitted: Promise<string> = events.emit("chat::message::sent", { text: "hi" });
void emitted;
const removeStatus = events.onStatus((status: Status) => {
  const connection: string | null = status.connection;
  console.log(status.state, connection, status.lagged);
});
removeStatus();
window.ChannelsEvents.connect("/ws/events/").close();

// What the declarations refuse.
// @ts-expect-error: a where value is a scalar or a list of scalars, not an object
events.subscribe("shop::.*", () => {}, { where: { pk: { gt: 3 } } });
// @ts-expect-error: since is an event id
events.subscribe("shop::.*", () => {}, { since: 42 });
// @ts-expect-error: the pattern is a string
events.subscribe(/shop/, () => {});
