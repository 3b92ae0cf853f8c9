"""Tests for channels_events._bulk: one batched event per bulk operation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import transaction

from channels_events._bulk import emit_bulk_event
from channels_events._model_events import Observation
from channels_events._observers import get_observation, muted_model_events, observe, unobserve
from channels_events.testing import capture_events
from tests.testapp.models import Item

BULK_EVENTS = r"testapp::Item::.*"


class Boom(Exception):
    """Raised by tests to roll a transaction back."""


@pytest.fixture(autouse=True)
def observed_item() -> Iterator[None]:
    """Observe Item for the test and undo it."""
    was_observed = get_observation(Item) is not None
    observe(Item)
    yield
    if not was_observed:
        unobserve(Item)


def make_items(*names: str) -> list[Item]:
    with muted_model_events(Item):
        return [Item.objects.create(name=name) for name in names]


@pytest.mark.django_db
def test_bulk_create_dispatches_one_event_with_the_new_pks():
    with capture_events(BULK_EVENTS) as events:
        created = Item.objects.bulk_create([Item(name="a"), Item(name="b"), Item(name="c")])
    assert events.names == ["testapp::Item::bulk_created"]
    payload = json.loads(json.dumps(events[0].payload))
    assert payload["model"] == "testapp.item"
    assert sorted(payload["pks"]) == sorted(item.pk for item in created)
    assert len(payload["pks"]) == 3
    assert events[0].instance is None


@pytest.mark.django_db
def test_bulk_update_dispatches_one_event_with_pks_and_changed():
    items = make_items("a", "b", "c")
    for quantity, item in enumerate(items, start=1):
        item.quantity = quantity
    with capture_events(BULK_EVENTS) as events:
        Item.objects.bulk_update(items, ["quantity"])
    assert events.names == ["testapp::Item::bulk_updated"]
    assert sorted(events[0].payload["pks"]) == sorted(item.pk for item in items)
    assert events[0].payload["changed"] == ["quantity"]


@pytest.mark.django_db
def test_bulk_update_saves_and_reports_every_row():
    items = make_items("a", "b", "c")
    for item in items:
        item.quantity = 7
    with capture_events(BULK_EVENTS) as events:
        assert Item.objects.bulk_update(items, ["quantity"]) == 3
    assert set(Item.objects.values_list("quantity", flat=True)) == {7}
    last = events.matching("testapp::Item::bulk_updated")[-1]
    assert sorted(last.payload["pks"]) == sorted(item.pk for item in items)
    assert last.payload["changed"] == ["quantity"]


@pytest.mark.django_db
def test_queryset_update_dispatches_one_event_for_the_matching_rows():
    a, b, c = make_items("a", "b", "c")
    with capture_events(BULK_EVENTS) as events:
        rows = Item.objects.filter(name__in=["a", "c"]).update(quantity=5)
    assert rows == 2
    assert events.names == ["testapp::Item::bulk_updated"]
    assert sorted(events[0].payload["pks"]) == sorted([a.pk, c.pk])
    assert events[0].payload["changed"] == ["quantity"]
    b.refresh_from_db()
    assert b.quantity == 0


@pytest.mark.django_db
def test_queryset_delete_dispatches_one_event_and_no_per_row_events():
    a, b, c = make_items("a", "b", "c")
    with capture_events(BULK_EVENTS) as events:
        Item.objects.filter(name__in=["a", "b"]).delete()
    assert events.names == ["testapp::Item::bulk_deleted"]
    assert sorted(events[0].payload["pks"]) == sorted([a.pk, b.pk])
    assert list(Item.objects.values_list("pk", flat=True)) == [c.pk]


@pytest.mark.django_db
def test_deleting_one_instance_still_dispatches_per_row_events():
    [item] = make_items("a")
    with capture_events(BULK_EVENTS) as events:
        item.delete()
    assert events.names == ["testapp::Item::deleting", "testapp::Item::deleted"]


@pytest.mark.parametrize("action", ["bulk_saved", "created", "deleted", ""])
def test_emit_bulk_event_rejects_unknown_actions(action):
    with capture_events(BULK_EVENTS) as events, pytest.raises(ValueError, match="bulk_created"):
        emit_bulk_event(Item, action, [1])
    assert events == []


@pytest.mark.django_db
def test_emit_bulk_event_for_work_done_elsewhere():
    with capture_events(BULK_EVENTS) as events:
        emit_bulk_event(Item, "bulk_updated", [3, 1], changed=("name",))
    assert [event.payload for event in events] == [
        {"model": "testapp.item", "pks": [3, 1], "changed": ["name"]}
    ]


@pytest.mark.django_db(transaction=True)
def test_bulk_events_are_published_only_after_commit(published):
    with capture_events(BULK_EVENTS) as dispatched, transaction.atomic():
        Item.objects.bulk_create([Item(name="a"), Item(name="b")])
        Item.objects.filter(name="a").update(quantity=2)
        Item.objects.filter(name="b").delete()
        assert len(dispatched) == 3
        assert published == []
    assert [event.name for event in published] == [
        "testapp::Item::bulk_created",
        "testapp::Item::bulk_updated",
        "testapp::Item::bulk_deleted",
    ]


@pytest.mark.django_db(transaction=True)
def test_bulk_events_of_a_rolled_back_transaction_are_never_published(published):
    with pytest.raises(Boom), transaction.atomic():
        Item.objects.bulk_create([Item(name="a")])
        Item.objects.all().update(quantity=2)
        Item.objects.all().delete()
        raise Boom
    assert published == []


@pytest.mark.django_db
@pytest.mark.parametrize("muted", [(), (Item,)], ids=["all-models", "item"])
def test_muted_model_events_suppresses_bulk_events(muted):
    make_items("a")
    with capture_events(BULK_EVENTS) as events:
        with muted_model_events(*muted):
            Item.objects.bulk_create([Item(name="b")])
            Item.objects.all().update(quantity=3)
            Item.objects.bulk_update(list(Item.objects.all()), ["quantity"])
            Item.objects.all().delete()
            emit_bulk_event(Item, "bulk_created", [1])
        assert events == []
        Item.objects.bulk_create([Item(name="c")])
    assert events.names == ["testapp::Item::bulk_created"]


@pytest.mark.django_db
def test_bulk_events_leave_per_row_events_off_and_skip_empty_updates():
    unobserve(Item)  # the autouse fixture observed it
    with capture_events(r"testapp::Item::.*") as events:
        Item.objects.bulk_create([Item(name="a")])
    assert events.names == ["testapp::Item::bulk_created"]
    assert get_observation(Item) is None
    with capture_events(r"testapp::Item::.*") as events:
        Item.objects.create(name="b")  # not observed: no per-row event
        Item.objects.filter(name="nothing-matches").update(quantity=1)
    assert events.names == []


@pytest.mark.django_db
def test_bulk_events_of_an_unobserved_model_build_no_observation(monkeypatch):
    unobserve(Item)  # the autouse fixture observed it
    made: list[Observation] = []
    make = Observation.__init__

    def counted(self: Observation, *args: Any, **kwargs: Any) -> None:
        made.append(self)
        make(self, *args, **kwargs)

    monkeypatch.setattr(Observation, "__init__", counted)
    with capture_events(BULK_EVENTS) as events:
        Item.objects.bulk_create([Item(name="a")])
        Item.objects.all().update(quantity=2)
        emit_bulk_event(Item, "bulk_updated", [1], changed=["name"])
        Item.objects.all().delete()
    assert events.names == [
        "testapp::Item::bulk_created",
        "testapp::Item::bulk_updated",
        "testapp::Item::bulk_updated",
        "testapp::Item::bulk_deleted",
    ]
    assert made == []
