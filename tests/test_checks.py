"""Tests for channels_events._checks and the lazily read settings of channels_events._conf."""

from __future__ import annotations

import logging

import pytest
from channels.auth import AuthMiddlewareStack
from channels.routing import ProtocolTypeRouter
from channels.security.websocket import AllowedHostsOriginValidator
from django.conf import settings
from django.core import checks
from django.test import override_settings

from channels_events import HubMiddleware, _checks, _hub, get_hub
from channels_events._checks import (
    check_asgi_application,
    check_channel_layer,
    check_listener_patterns,
    check_redis_client,
    check_setting_name,
    check_settings,
    run_checks,
)
from channels_events._conf import DEFAULTS, events_settings, on_change
from channels_events._events import Event, claim_name, release_name
from channels_events._observers import ModelEvent
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
        "BACKGROUND_WORKERS": 2,
        "BACKGROUND_QUEUE_SIZE": 50,
        "BACKGROUND_EXIT_TIMEOUT": 0.5,
        "SUBSCRIBE_POLICY": "tests.test_checks.ids",
        "RECEIVE_POLICY": None,
        "EMIT_POLICY": ids,
        "PRESENCE_POLICY": "tests.test_checks.ids",
        "PRESENCE_TIMEOUT": 0.5,
        "MAX_FRAME_BYTES": 1024,
        "MAX_SUBSCRIPTIONS": 3,
        "MAX_PATTERN_LENGTH": 64,
        "RATE_LIMIT": 0.5,
        "RATE_BURST": 2,
        "BUFFER_SIZE": 10,
        "BUFFER_BYTES": 65536,
        "REPLAY_BUDGET": 100,
        "MAX_EVENT_BYTES": 4096,
        "HISTORY_SIZE": 0,
        "HISTORY_BYTES": 1,
        "METRICS": False,
        "OPS_NAMESPACE": "operations",
        "OPS_INTERVAL": 0.5,
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
        ("BUFFER_BYTES", 0),
        ("REPLAY_BUDGET", 2.5),
        ("MAX_EVENT_BYTES", 1023),
        ("MAX_EVENT_BYTES", "1000000"),
        ("HISTORY_BYTES", 0),
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


# -- W001: the setting's own name ----------------------------------------------------


@pytest.mark.parametrize(
    "name", ["CHANNEL_EVENTS", "CHANNELS_EVENT", "CHANELS_EVENTS", "CHANNELSEVENTS"]
)
def test_a_near_miss_of_the_setting_name_is_w001_naming_the_right_name(name):
    with override_settings(**{name: {"STRICT": True}}):
        messages = check_setting_name()
    assert ids(messages) == ["channels_events.W001"]
    [message] = messages
    assert isinstance(message, checks.Warning)
    assert f"settings.{name} is not read" in message.msg
    assert "CHANNELS_EVENTS" in message.msg
    # tests.settings has a CHANNELS_EVENTS already: the keys belong there.
    assert message.hint == f"Move its keys into CHANNELS_EVENTS and delete {name}."


def test_w001_says_rename_when_there_is_no_channels_events_setting(settings):
    del settings.CHANNELS_EVENTS
    settings.CHANNEL_EVENTS = {"DEBUG": True}
    [message] = check_setting_name()
    assert message.hint == "Rename CHANNEL_EVENTS to CHANNELS_EVENTS."


def test_settings_merely_alike_are_not_near_misses():
    # Positive control first: the check sees settings made by override_settings.
    with override_settings(CHANNEL_EVENTS={}):
        assert ids(check_setting_name()) == ["channels_events.W001"]
    with override_settings(CHANNELS_EVENTS_TEST_DB="x", CHANNELS={}, EVENTS={}):
        assert check_setting_name() == []
    assert check_setting_name() == []  # CHANNEL_LAYERS, CHANNELS_EVENTS themselves


def test_w001_is_registered_with_django():
    with override_settings(CHANNEL_EVENTS={}):
        assert "channels_events.W001" in ids(checks.run_checks())


# -- W002, I001: the hub's channel layer -----------------------------------------------


def test_no_channel_layers_is_w002_saying_how_to_add_one(settings):
    del settings.CHANNEL_LAYERS
    messages = check_channel_layer()
    assert ids(messages) == ["channels_events.W002"]
    [message] = messages
    assert isinstance(message, checks.Warning)
    assert message.msg.startswith("CHANNEL_LAYERS is not set, so events stay in the process")
    assert "CHANNEL_LAYERS = {'default': {'BACKEND': 'channels_redis.core.RedisChannelLayer'" in (
        message.hint
    )
    assert "'CHANNEL_LAYER': None" in message.hint


def test_channel_layers_without_the_hubs_alias_is_w002_naming_the_aliases():
    layers = {"events": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    with override_settings(CHANNEL_LAYERS=layers):
        [message] = check_channel_layer()
    assert message.id == "channels_events.W002"
    assert "CHANNEL_LAYERS has no 'default' layer" in message.msg
    assert "CHANNELS_EVENTS = {'CHANNEL_LAYER': 'events'}" in message.hint


def test_no_w002_when_events_stay_in_the_process_on_purpose(settings):
    del settings.CHANNEL_LAYERS
    assert ids(check_channel_layer()) == ["channels_events.W002"]  # positive control
    settings.CHANNELS_EVENTS = {"CHANNEL_LAYER": None}
    assert check_channel_layer() == []


def test_a_missing_alias_named_explicitly_is_e003_only():
    with override_settings(CHANNELS_EVENTS={"CHANNEL_LAYER": "nowhere"}):
        assert check_channel_layer() == []
        assert ids(check_settings()) == ["channels_events.E003"]


def test_the_in_memory_layer_is_i001_saying_no_other_process_is_heard():
    # tests.settings gives the hub an InMemoryChannelLayer.
    messages = check_channel_layer()
    assert ids(messages) == ["channels_events.I001"]
    [message] = messages
    assert isinstance(message, checks.Info)
    assert "InMemoryChannelLayer" in message.msg
    assert "Other processes" in message.msg
    assert "channels_redis" in message.hint
    assert "SILENCED_SYSTEM_CHECKS" in message.hint


def test_a_redis_layer_is_neither_w002_nor_i001():
    layers = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": ["redis://127.0.0.1:6379/0"]},
        }
    }
    with override_settings(CHANNEL_LAYERS=layers):
        assert check_channel_layer() == []


# -- W003: listener patterns -------------------------------------------------------


def on_post(event):
    """A listener for the pattern checks."""


def test_a_pattern_with_single_colons_is_w003_naming_listener_and_pattern(default_dispatcher):
    default_dispatcher.connect(on_post, "blog:Post:.*")
    messages = check_listener_patterns()
    assert ids(messages) == ["channels_events.W003"]
    [message] = messages
    assert isinstance(message, checks.Warning)
    assert "tests.test_checks.on_post" in message.msg
    assert "'blog:Post:.*'" in message.msg
    assert "single ':'" in message.msg
    assert message.hint.startswith("Did you mean 'blog::Post::.*'?")


def test_a_literal_character_no_name_has_is_w003(default_dispatcher):
    default_dispatcher.connect(on_post, "blog::Post created")
    [message] = check_listener_patterns()
    assert message.id == "channels_events.W003"
    assert "' '" in message.msg
    assert "Did you mean" not in message.hint


def test_patterns_that_may_match_are_not_w003(default_dispatcher):
    default_dispatcher.connect(on_post, "blog::Post::.*")
    default_dispatcher.connect(on_post, ".*", namespaces=["blog"])
    assert check_listener_patterns() == []
    default_dispatcher.connect(on_post, "blog:Post")  # positive control
    assert ids(check_listener_patterns()) == ["channels_events.W003"]


class InvoicePaid(Event):
    """A declared event name for the letter-case checks."""

    name = "tchecks::Invoice::paid"


@pytest.fixture
def observed_order_names():
    """Claim an observed model's event name, as an Observer does, for the length of a test."""
    names = ["tchecks::Order::created", "tchecks::Order::updated"]
    for name in names:
        claim_name(name, ModelEvent)
    yield names
    for name in names:
        release_name(name, ModelEvent)


def test_a_pattern_matching_an_observed_name_only_ignoring_case_is_w003(
    default_dispatcher, observed_order_names
):
    default_dispatcher.connect(on_post, "tchecks::Order::.*")  # positive control: it matches
    assert check_listener_patterns() == []
    default_dispatcher.connect(on_post, "tchecks::order::.*")
    [message] = check_listener_patterns()
    assert isinstance(message, checks.Warning)
    assert message.id == "channels_events.W003"
    assert "tests.test_checks.on_post" in message.msg
    assert "'tchecks::order::.*'" in message.msg
    assert "'tchecks::Order::created'" in message.msg


def test_a_pattern_matching_a_declared_name_only_ignoring_case_is_w003(default_dispatcher):
    default_dispatcher.connect(on_post, "tchecks::invoice::paid")
    [message] = check_listener_patterns()
    assert message.id == "channels_events.W003"
    assert "'tchecks::invoice::paid'" in message.msg
    assert "'tchecks::Invoice::paid'" in message.msg


def test_patterns_matching_no_known_name_in_any_case_are_not_w003(default_dispatcher):
    # Names published ad hoc are not known, so a pattern for them is not judged.
    default_dispatcher.connect(on_post, "tchecks::refund::.*")
    # One known name matched as written is enough, whatever else differs in case.
    default_dispatcher.connect(on_post, "tchecks::(Invoice|invoice)::paid")
    default_dispatcher.connect(on_post, "(?i)tchecks::invoice::paid")
    assert check_listener_patterns() == []
    default_dispatcher.connect(on_post, "tchecks::INVOICE::paid")  # positive control
    assert ids(check_listener_patterns()) == ["channels_events.W003"]


# -- E003: policies that cannot be imported -------------------------------------------


def test_a_policy_module_that_fails_to_import_shows_its_own_import_error(tmp_path, monkeypatch):
    (tmp_path / "broken_events_policy.py").write_text(
        "import no_such_dependency_of_the_policy\n\n\ndef may_emit(scope, name, payload):\n"
        "    return True\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with override_settings(CHANNELS_EVENTS={"EMIT_POLICY": "broken_events_policy.may_emit"}):
        [message] = check_settings()
    assert message.id == "channels_events.E003"
    assert "ModuleNotFoundError: No module named 'no_such_dependency_of_the_policy'" in message.msg


def test_a_policy_module_without_the_function_says_so():
    with override_settings(CHANNELS_EVENTS={"EMIT_POLICY": "tests.test_checks.no_such_policy"}):
        [message] = check_settings()
    assert message.id == "channels_events.E003"
    assert 'does not define a "no_such_policy"' in message.msg


# -- W004: redis-py 8 under channels_redis's core layer ----------------------------


def core_layer(*hosts):
    return {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": list(hosts)},
        }
    }


def test_redis_py_8_with_the_core_layer_is_w004_naming_the_host(monkeypatch):
    monkeypatch.setattr(_checks, "_installed_version", lambda name: "8.1.0")
    with override_settings(CHANNEL_LAYERS=core_layer("redis://127.0.0.1:6390/0")):
        messages = check_redis_client()
    assert ids(messages) == ["channels_events.W004"]
    [message] = messages
    assert isinstance(message, checks.Warning)
    assert "redis-py 8.1.0" in message.msg
    assert "CHANNEL_LAYERS['default']" in message.msg
    assert "127.0.0.1:6390" in message.msg
    assert "redis<8" in message.hint
    assert "'socket_timeout': 30" in message.hint


def test_no_w004_for_redis_py_7_a_long_read_timeout_or_the_pubsub_layer(monkeypatch):
    version = "8.0.0"
    monkeypatch.setattr(_checks, "_installed_version", lambda name: version)
    with override_settings(CHANNEL_LAYERS=core_layer("redis://127.0.0.1:6379/0")):
        assert ids(check_redis_client()) == ["channels_events.W004"]  # positive control
        version = "7.4.1"
        assert check_redis_client() == []
    version = "8.0.0"
    long_reads = core_layer(
        {"address": "redis://127.0.0.1:6379/0", "socket_timeout": 30},
        "redis://127.0.0.1:6380/0?socket_timeout=30",
        {"address": "redis://127.0.0.1:6381/0", "socket_timeout": None},
    )
    with override_settings(CHANNEL_LAYERS=long_reads):
        assert check_redis_client() == []
    pubsub = core_layer("redis://127.0.0.1:6379/0")
    pubsub["default"]["BACKEND"] = "channels_redis.pubsub.RedisPubSubChannelLayer"
    with override_settings(CHANNEL_LAYERS=pubsub):
        assert check_redis_client() == []


def test_w004_names_only_hosts_whose_reads_are_cut_short(monkeypatch):
    monkeypatch.setattr(_checks, "_installed_version", lambda name: "8.0.0")
    layers = core_layer(
        {"address": "redis://:secret@10.1.2.3:6379/0", "socket_timeout": 5},
        {"address": "redis://127.0.0.1:6379/0", "socket_timeout": 30},
    )
    with override_settings(CHANNEL_LAYERS=layers):
        [message] = check_redis_client()
    assert "from 10.1.2.3:6379 fail" in message.msg
    assert "secret" not in message.msg


# -- W005: the ASGI application without the hub --------------------------------


async def django_app(scope, receive, send):
    """Stands in for get_asgi_application(); never called by the check."""


ROUTER = ProtocolTypeRouter({"http": django_app, "websocket": AuthMiddlewareStack(django_app)})
WRAPPED = HubMiddleware(ROUTER)
UNWRAPPED = AllowedHostsOriginValidator(AuthMiddlewareStack(ROUTER))
WRAPPED_INSIDE = AllowedHostsOriginValidator(AuthMiddlewareStack(HubMiddleware(ROUTER)))
WRAPPED_IN_A_BRANCH = ProtocolTypeRouter({"http": HubMiddleware(django_app)})


def asgi_check(path):
    with override_settings(ASGI_APPLICATION=path):
        return check_asgi_application()


def test_an_asgi_application_without_hub_middleware_is_w005_saying_how_to_wrap_it():
    [message] = asgi_check("tests.test_checks.UNWRAPPED")
    assert message.id == "channels_events.W005"
    assert message.level == checks.WARNING
    assert "ASGI_APPLICATION 'tests.test_checks.UNWRAPPED' is not wrapped in HubMiddleware" in (
        message.msg
    )
    assert "listeners hear nothing from other processes" in message.msg
    assert "application = HubMiddleware(ProtocolTypeRouter({...}))" in message.hint
    assert ids(asgi_check("tests.test_checks.ROUTER")) == ["channels_events.W005"]

    # Positive controls: HubMiddleware outside, deep inside, or around one protocol.
    assert asgi_check("tests.test_checks.WRAPPED") == []
    assert asgi_check("tests.test_checks.WRAPPED_INSIDE") == []
    assert asgi_check("tests.test_checks.WRAPPED_IN_A_BRANCH") == []


def test_no_w005_without_an_asgi_application_or_one_that_cannot_be_imported():
    assert ids(asgi_check("tests.test_checks.UNWRAPPED")) == ["channels_events.W005"]
    assert asgi_check(None) == []
    assert asgi_check("") == []
    assert asgi_check("tests.test_checks.NO_SUCH_APPLICATION") == []
    assert asgi_check("no_such_module.asgi.application") == []
    with override_settings():
        del settings.ASGI_APPLICATION
        assert check_asgi_application() == []


# -- channels_events missing from INSTALLED_APPS: the hub says it ------------------


def hub_warnings(monkeypatch, caplog):
    """Return what a new hub logs when first got."""
    monkeypatch.setattr(_hub, "_hub", None)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="channels_events.hub"):
        hub = get_hub()
        assert get_hub() is hub
    return [record.getMessage() for record in caplog.records]


def test_the_hub_warns_once_when_channels_events_is_not_in_installed_apps(monkeypatch, caplog):
    without = [app for app in settings.INSTALLED_APPS if app != "channels_events"]
    with override_settings(INSTALLED_APPS=without):
        [message] = hub_warnings(monkeypatch, caplog)
    assert message.startswith("'channels_events' is not in INSTALLED_APPS, so events never leave")
    assert "the system checks of channels-events do not run" in message
    assert message.endswith("Add 'channels_events' to INSTALLED_APPS.")

    # Positive control: installed, the same first use logs nothing. (Not through
    # override_settings: that would run the app's ready() again, adding a publisher.)
    assert hub_warnings(monkeypatch, caplog) == []


def test_run_checks_gathers_every_check():
    with override_settings(
        CHANNEL_EVENTS={},
        CHANNELS_EVENTS={"NOPE": 1},
        ASGI_APPLICATION="tests.test_checks.UNWRAPPED",
    ):
        found = ids(run_checks())
    assert found == [
        "channels_events.E002",
        "channels_events.W001",
        "channels_events.I001",
        "channels_events.W005",
    ]
