"""End-to-end: filtered subscriptions (``where``) across two daphne processes on Redis.

The harness is test_e2e.py's: real daphnes, real websockets, model changes
made in a third process, so every event crosses Redis; replays come from the
Redis history the daphnes share.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.test_e2e import (
    QUIET_PERIOD,
    Client,
    Cluster,
    Frame,
    _clients,
    _is_event,
    _welcomed,
    cluster,
)

pytestmark = pytest.mark.redis

__all__ = ["cluster"]  # the fixture, used by name

# Run in a process of its own: set the status of orders, one transaction each,
# in the order given (pk status pk status ...).
UPDATE_SCRIPT = """
import sys

import django

django.setup()

from django.db import transaction

from tests.testapp.models import Order

pairs = sys.argv[1:]
for pk, status in zip(pairs[::2], pairs[1::2]):
    with transaction.atomic():
        order = Order.objects.get(pk=int(pk))
        order.status = status
        order.save()
"""


async def _update(cluster: Cluster, *changes: Any) -> None:
    args = ["-c", UPDATE_SCRIPT, *(str(change) for change in changes)]
    done = await asyncio.to_thread(cluster._run, args, 30)
    assert done.returncode == 0, f"updater failed:\n{done.stdout}\n{done.stderr}"


async def _subscribe(client: Client, sid: str, **fields: Any) -> Frame:
    await client.send({"type": "subscribe", "id": sid, "pattern": r"shop::Order::.*", **fields})
    (answer,) = await client.wait_for(
        lambda f: f.get("type") in {"subscribed", "error"} and f.get("id") == sid
    )
    assert answer["type"] == "subscribed", answer
    return answer


def _updates(client: Client) -> list[tuple[int, str]]:
    return [
        (frame["event"]["payload"]["pk"], frame["event"]["payload"]["fields"]["status"])
        for frame in client.events()
        if frame["event"]["name"] == "shop::Order::updated"
    ]


async def test_where_filters_live_and_replayed_events_on_both_daphnes(cluster: Cluster) -> None:
    one, two = await cluster.start("one", "two")
    mine = await cluster.write_orders("F-1")
    other = await cluster.write_orders("F-2")
    async with _clients() as clients:
        watching = {
            "mine@one": (one, {"where": {"pk": mine}}),
            "mine@two": (two, {"where": {"pk": mine}}),
            "all@two": (two, {}),
        }
        for name, (daphne, _fields) in watching.items():
            clients.append(await Client.open(name, daphne))
        await asyncio.gather(*(_welcomed(client) for client in clients))
        answers = [
            await _subscribe(client, "s", **fields)
            for client, (_daphne, fields) in zip(clients, watching.values(), strict=True)
        ]
        # Both orders were created before: the newest recorded event is the second.
        start = answers[0]["last"]
        assert isinstance(start, str) and all(answer["last"] == start for answer in answers)

        # The other order changes first: a filter that let it through would
        # deliver it ahead of this order's change.
        await _update(cluster, other, "paid", mine, "sent")
        watcher_all = clients[2]
        await watcher_all.wait_for(_is_event("shop::Order::updated", mine))
        assert _updates(watcher_all) == [(other, "paid"), (mine, "sent")]
        for client in clients[:2]:
            await client.wait_for(_is_event("shop::Order::updated", mine))
            assert _updates(client) == [(mine, "sent")], f"{client.name}: {client.frames}"

        # Replays from the shared history, filtered the same way, then live events.
        late = [await Client.open("late-mine@one", one), await Client.open("late-other@two", two)]
        clients.extend(late)
        await asyncio.gather(*(_welcomed(client) for client in late))
        await _subscribe(late[0], "s", since=start, where={"pk": mine})
        await _subscribe(late[1], "s", since=start, where={"pk": [other], "fields.status": "paid"})
        await late[0].wait_for(_is_event("shop::Order::updated", mine))
        await late[1].wait_for(_is_event("shop::Order::updated", other))
        await _update(cluster, other, "sent", mine, "paid", other, "paid")
        await late[0].wait_for(_is_event("shop::Order::updated", mine), count=2)
        await late[1].wait_for(_is_event("shop::Order::updated", other), count=2)
        await watcher_all.wait_for(lambda f: f.get("type") == "event", count=5)
        await asyncio.sleep(QUIET_PERIOD)
        assert _updates(late[0]) == [(mine, "sent"), (mine, "paid")]
        assert _updates(late[1]) == [(other, "paid"), (other, "paid")]
        assert not any(frame.get("type") == "gap" for client in clients for frame in client.frames)
