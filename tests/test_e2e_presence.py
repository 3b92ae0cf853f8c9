"""End-to-end presence and to-others: two daphne processes, real websockets, Redis in between.

The harness (daphne processes, clients) is test_e2e.py's. Members are named
by the ``?member=`` of their websocket URL (``tests/e2e_app/policy.py``);
``POST /e2e/poke/`` dispatches ``shop::poked`` under ``ToOthersMiddleware``.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from typing import Any

import pytest

from tests import test_e2e
from tests.test_e2e import Client, Cluster, Daphne, _clients, _welcomed

# test_e2e.py's fixture, used here under its own name.
cluster = test_e2e.cluster

pytestmark = pytest.mark.redis

TOPIC = "shop::dashboard"
# Seconds, for the test with a killed daphne.
SHORT_TIMEOUT = 3.0


async def _member(opened: list[Client], name: str, daphne: Daphne, join_id: str = "p") -> Client:
    client = await Client.open(f"{name}@{daphne.name}", daphne, f"/ws/events/?member={name}")
    opened.append(client)
    await _welcomed(client)
    await client.send({"type": "join", "id": join_id, "topic": TOPIC})
    (answer,) = await client.wait_for(
        lambda f: f.get("type") in {"presence", "error"} and f.get("id") == join_id
    )
    assert answer["type"] == "presence", answer
    return client


def _ids(frame: dict[str, Any]) -> list[str]:
    return sorted(member["id"] for member in frame["members"])


def _diffs(client: Client) -> list[tuple[list[str], list[str]]]:
    return [
        ([m["id"] for m in f["joins"]], [m["id"] for m in f["leaves"]])
        for f in client.frames
        if f.get("type") == "presence_diff"
    ]


def _presence(client: Client) -> dict[str, Any]:
    return next(f for f in client.frames if f.get("type") == "presence")


def _view(client: Client) -> list[str]:
    """Return the members ``client`` knows of: its presence answer and the diffs since."""
    members = set(_ids(_presence(client)))
    for joins, leaves in _diffs(client):
        members = (members | set(joins)) - set(leaves)
    return sorted(members)


async def _sees(client: Client, expected: list[str]) -> None:
    """Wait until ``client`` knows exactly ``expected``: a process learns of changes
    made on another one a moment after them."""
    try:
        await client.wait_for(lambda f: _view(client) == expected)
    except AssertionError:
        raise AssertionError(f"{client.name} sees {_view(client)}, not {expected}") from None


async def test_presence_across_processes_counts_a_member_once(cluster: Cluster) -> None:
    a, b = await cluster.start("a", "b")
    async with _clients() as opened:
        alice = await _member(opened, "alice", a)
        assert _ids(_presence(alice)) == ["alice"]
        bob_b = await _member(opened, "bob", b)
        assert _ids(_presence(bob_b)) == ["alice", "bob"]
        await _sees(alice, ["alice", "bob"])
        # Bob's second tab, on the other daphne: Bob is there once.
        bob_a = await _member(opened, "bob", a)
        await _sees(bob_a, ["alice", "bob"])
        # Bob closes the tab on b: he still has one on a, nobody hears of it.
        await bob_b.close()
        # Positive control: Carol's arrival, after it, reaches both.
        await _member(opened, "carol", b)
        for client in (alice, bob_a):
            await _sees(client, ["alice", "bob", "carol"])
            assert all("bob" not in leaves for _, leaves in _diffs(client)), client.frames
        # Bob's last tab goes: now he leaves, seen on both daphnes.
        await bob_a.close()
        await _sees(alice, ["alice", "carol"])
        late = await _member(opened, "dave", b)
        await _sees(late, ["alice", "carol", "dave"])


async def test_a_killed_daphne_s_members_leave_within_the_timeout(cluster: Cluster) -> None:
    cluster.env["CE_E2E_PRESENCE_TIMEOUT"] = str(SHORT_TIMEOUT)
    a, b = await cluster.start("a", "b")
    async with _clients() as opened:
        alice = await _member(opened, "alice", a)
        await _member(opened, "bob", b)
        # Bob also has a tab on a: he must stay when b dies.
        await _member(opened, "bob", a, "p")
        await _member(opened, "carol", b)
        await _sees(alice, ["alice", "bob", "carol"])
        b.proc.kill()  # SIGKILL: no goodbye
        b.proc.wait(5)
        killed = time.monotonic()
        await _sees(alice, ["alice", "bob"])
        took = time.monotonic() - killed
        print(f"carol left {took:.2f}s after the kill (PRESENCE_TIMEOUT={SHORT_TIMEOUT})")
        # Seen the same by a newcomer on the surviving daphne.
        late = await _member(opened, "dave", a)
        await _sees(late, ["alice", "bob", "dave"])


def _poke(daphne: Daphne, note: str, connection: str | None) -> None:
    request = urllib.request.Request(f"{daphne.origin}/e2e/poke/?note={note}", method="POST")
    if connection is not None:
        request.add_header("X-Channels-Events-Connection", connection)
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


async def test_to_others_skips_the_connection_on_another_daphne(cluster: Cluster) -> None:
    a, b = await cluster.start("a", "b")
    async with _clients() as opened:
        clients = []
        for name, daphne in (("me", b), ("my-other-tab", b), ("elsewhere", a)):
            client = await Client.open(name, daphne)
            opened.append(client)
            welcome = await _welcomed(client)
            answer = await client.subscribe("all", r"shop::.*")
            assert answer["type"] == "subscribed", answer
            clients.append((client, welcome["connection"]))
        (me, my_id), (other_tab, _), (elsewhere, _) = clients

        def poked(note: str) -> Any:
            return lambda f: f.get("type") == "event" and f["event"]["payload"]["note"] == note

        # The request is handled by a; the connection it names lives on b.
        await asyncio.to_thread(_poke, a, "mine", my_id)
        for client in (other_tab, elsewhere):
            (frame,) = await client.wait_for(poked("mine"))
            assert my_id not in str(frame)
        # Positive control: the next poke, naming nobody, reaches ``me`` too,
        # and is the first event it gets.
        await asyncio.to_thread(_poke, a, "everyone", None)
        await me.wait_for(poked("everyone"))
        assert [f["event"]["payload"]["note"] for f in me.events()] == ["everyone"]
        # A malformed header is ignored: the event reaches everyone.
        await asyncio.to_thread(_poke, a, "bad-header", "not an id!")
        await me.wait_for(poked("bad-header"))
