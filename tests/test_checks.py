"""Tests for channels_events._checks and the lazily read settings of channels_events._conf."""

from __future__ import annotations

import pytest
from django.core import checks
from django.test import override_settings

from channels_events._checks import check_settings
from channels_events._conf import DEFAULTS, events_settings, on_change
from channels_events.exceptions import UnknownSetting


def ids(messages):
    return [message.id for message in messages]


def test_defaults_pass():
    assert check_settings() == []


def test_full_valid_setting_passes():
    value = {
        "STRICT": True,
        "DEBUG": False,
        "CACHE_SIZE": 10,
        "OBSERVER_NAMESPACE": "shop",
        "SENSITIVE_FIELDS": ["ssn", "card_?number"],
        "CHANNEL_LAYER": None,
        "GROUP_PREFIX": "ev",
        "NAMESPACES": ["shop", "billing"],
        "LOCAL_NAMESPACES": ("audit",),
        "COMPAT_PUBLISH": True,
        "BATCH_SIZE": 1,
        "OUTBOX_SIZE": 5,
        "FLUSH_TIMEOUT": 0,
        "SUBSCRIBE_POLICY": "tests.test_checks.ids",
        "RECEIVE_POLICY": None,
        "EMIT_POLICY": ids,
        "MAX_FRAME_BYTES": 1024,
        "MAX_SUBSCRIPTIONS": 3,
        "MAX_PATTERN_LENGTH": 64,
        "RATE_LIMIT": 0.5,
        "RATE_BURST": 2,
        "BUFFER_SIZE": 10,
        "HISTORY_SIZE": 0,
    }
    assert set(value) == set(DEFAULTS)
    with override_settings(CHANNELS_EVENTS=value):
        assert check_settings() == []


def test_check_is_registered_with_django():
    with override_settings(CHANNELS_EVENTS=["not", "a", "dict"]):
        messages = checks.run_checks()
    assert "channels_events.E001" in ids(messages)


@pytest.mark.parametrize("value", [["STRICT"], "STRICT", 1, None])
def test_non_dict_setting_is_e001(value):
    with override_settings(CHANNELS_EVENTS=value):
        messages = check_settings()
    assert ids(messages) == ["channels_events.E001"]
    [message] = messages
    assert isinstance(message, checks.Error)
    assert "must be a dict" in message.msg
    assert type(value).__name__ in message.msg


def test_unknown_key_is_e002_naming_the_closest_valid_key():
    with override_settings(CHANNELS_EVENTS={"STRICTT": True, "DEBUG": True}):
        messages = check_settings()
    assert ids(messages) == ["channels_events.E002"]
    [message] = messages
    assert "'STRICTT'" in message.msg
    assert message.hint == "Did you mean 'STRICT'?"


def test_unknown_key_far_from_any_lists_the_known_keys():
    with override_settings(CHANNELS_EVENTS={"ZZZ": 1}):
        [message] = check_settings()
    for key in DEFAULTS:
        assert key in message.hint


def test_a_misspelt_key_is_refused_when_read_not_returned():
    with override_settings(CHANNELS_EVENTS={"SUBSCRIBE_POLCY": "x.y"}):
        with pytest.raises(UnknownSetting, match=r"SUBSCRIBE_POLCY.*SUBSCRIBE_POLICY"):
            events_settings.SUBSCRIBE_POLCY  # noqa: B018
        # Positive control: a valid key still reads, with its default.
        assert events_settings.SUBSCRIBE_POLICY is None


def test_a_policy_that_cannot_be_imported_shows_the_real_error():
    with override_settings(CHANNELS_EVENTS={"EMIT_POLICY": "tests.no_such_module.may_emit"}):
        [message] = check_settings()
    assert message.id == "channels_events.E003"
    assert "ModuleNotFoundError" in message.msg
    assert "tests.no_such_module" in message.msg


def test_each_unknown_key_is_reported():
    with override_settings(CHANNELS_EVENTS={"A": 1, "B": 2, 3: 4}):
        messages = check_settings()
    assert ids(messages) == ["channels_events.E002"] * 3


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("STRICT", "yes"),
        ("STRICT", 1),
        ("DEBUG", None),
        ("CACHE_SIZE", 0),
        ("CACHE_SIZE", -5),
        ("CACHE_SIZE", "10"),
        ("CACHE_SIZE", True),
        ("OBSERVER_NAMESPACE", "shop::Order"),
        ("OBSERVER_NAMESPACE", "bad ns"),
        ("OBSERVER_NAMESPACE", 5),
        ("SENSITIVE_FIELDS", "password"),
        ("SENSITIVE_FIELDS", ["ok", "("]),
        ("SENSITIVE_FIELDS", [1]),
        ("CHANNEL_LAYER", "missing"),
        ("CHANNEL_LAYER", 0),
        ("GROUP_PREFIX", ""),
        ("GROUP_PREFIX", "bad prefix"),
        ("GROUP_PREFIX", "x" * 31),
        ("NAMESPACES", "shop"),
        ("NAMESPACES", ["shop::x"]),
        ("LOCAL_NAMESPACES", [None]),
        ("COMPAT_PUBLISH", "yes"),
        ("BATCH_SIZE", 0),
        ("OUTBOX_SIZE", 1.5),
        ("FLUSH_TIMEOUT", -1),
        ("FLUSH_TIMEOUT", "5"),
        ("FLUSH_TIMEOUT", False),
        ("SUBSCRIBE_POLICY", "no.such.module.policy"),
        ("RECEIVE_POLICY", "tests.test_checks.DEFAULTS"),
        ("EMIT_POLICY", 42),
        ("MAX_FRAME_BYTES", 0),
        ("MAX_SUBSCRIPTIONS", "10"),
        ("MAX_PATTERN_LENGTH", -1),
        ("RATE_LIMIT", 0),
        ("RATE_BURST", 1.5),
        ("BUFFER_SIZE", None),
        ("HISTORY_SIZE", -1),
        ("HISTORY_SIZE", True),
        ("HISTORY_SIZE", "1000"),
    ],
)
def test_wrong_type_or_value_is_e003(key, value):
    with override_settings(CHANNELS_EVENTS={key: value}):
        messages = check_settings()
    assert ids(messages) == ["channels_events.E003"]
    [message] = messages
    assert repr(key) in message.msg
    assert repr(value) in message.msg


def test_several_problems_are_all_reported():
    with override_settings(CHANNELS_EVENTS={"NOPE": 1, "STRICT": "no", "BATCH_SIZE": 0}):
        messages = check_settings()
    assert sorted(ids(messages)) == [
        "channels_events.E002",
        "channels_events.E003",
        "channels_events.E003",
    ]


# -- events_settings -----------------------------------------------------------------


def test_events_settings_defaults():
    for key, value in DEFAULTS.items():
        assert getattr(events_settings, key) == value


def test_events_settings_reload_on_setting_change():
    assert events_settings.STRICT is False
    with override_settings(CHANNELS_EVENTS={"STRICT": True, "BATCH_SIZE": 7}):
        assert events_settings.STRICT is True
        assert events_settings.BATCH_SIZE == 7
        assert DEFAULTS["CACHE_SIZE"] == events_settings.CACHE_SIZE
    assert events_settings.STRICT is False
    assert DEFAULTS["BATCH_SIZE"] == events_settings.BATCH_SIZE


def test_events_settings_with_settings_fixture(settings):
    settings.CHANNELS_EVENTS = {"DEBUG": True}
    assert events_settings.DEBUG is True
    settings.CHANNELS_EVENTS = {}
    assert events_settings.DEBUG is False


def test_resets_run_when_channels_events_or_channel_layers_change_and_only_then():
    calls: list[str] = []

    class Cache:
        def reset(self) -> None:
            calls.append("reset")

    cache = Cache()
    on_change(cache.reset)
    with override_settings(USE_TZ=False):
        pass
    assert calls == []
    with override_settings(CHANNELS_EVENTS={"DEBUG": True}):
        assert calls == ["reset"]
    assert calls == ["reset", "reset"]
    with override_settings(CHANNEL_LAYERS={}):
        pass
    assert calls == ["reset"] * 4


def test_a_reset_held_by_a_bound_method_does_not_keep_its_object_alive():
    import gc
    import weakref

    calls: list[str] = []

    class Cache:
        def reset(self) -> None:
            calls.append("reset")

    cache = Cache()
    on_change(cache.reset)
    gone = weakref.ref(cache)
    del cache
    gc.collect()
    assert gone() is None
    with override_settings(CHANNELS_EVENTS={"DEBUG": True}):
        pass
    assert calls == []


def test_events_settings_unknown_attribute():
    with pytest.raises(AttributeError, match="NOT_A_SETTING") as info:
        events_settings.NOT_A_SETTING  # noqa: B018
    assert "STRICT" in str(info.value)


def test_non_dict_setting_falls_back_to_defaults():
    with override_settings(CHANNELS_EVENTS="oops"):
        assert events_settings.STRICT is DEFAULTS["STRICT"]
