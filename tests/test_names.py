"""Tests for channels_events._names: event names, namespaces and patterns."""

from __future__ import annotations

import re

import pytest

from channels_events._names import (
    MAX_NAME_LENGTH,
    MAX_SEGMENT_LENGTH,
    compile_pattern,
    is_valid_name,
    literal_namespace,
    namespace_of,
    never_matches,
    validate_name,
    validate_namespace,
)
from channels_events.exceptions import ChannelsEventsError, InvalidEventName, InvalidPattern

# -- validate_name -----------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "shop",
        "shop::Order::created",
        "billing::invoice::paid",
        "shop.v2::Order::created",
        "my-app::some_thing::done-now",
        "a::b::c::d::e::f",
        "0::1",
        "x" * MAX_SEGMENT_LENGTH,
        "::".join(["x" * 62] * 4),  # 4 * 62 + 3 * 2 = 254 characters
    ],
)
def test_validate_name_accepts_and_returns_valid_names(name):
    assert validate_name(name) == name
    assert is_valid_name(name)


@pytest.mark.parametrize("name", [None, 42, b"shop::x", ["shop"], 1.5])
def test_validate_name_refuses_non_str(name):
    with pytest.raises(InvalidEventName, match="must be a str") as info:
        validate_name(name)
    assert type(name).__name__ in str(info.value)
    assert not is_valid_name(name)


@pytest.mark.parametrize("name", ["", "shop::", "::shop", "shop::::created", "a::b::"])
def test_validate_name_refuses_empty_segments(name):
    with pytest.raises(InvalidEventName, match="empty segment"):
        validate_name(name)
    assert not is_valid_name(name)


def test_validate_name_refuses_segment_longer_than_64():
    name = "shop::" + "x" * (MAX_SEGMENT_LENGTH + 1)
    with pytest.raises(InvalidEventName, match="longer than 64"):
        validate_name(name)
    assert not is_valid_name(name)


@pytest.mark.parametrize(
    ("name", "segment"),
    [
        ("shop::Order created", "Order created"),
        ("shop:Order", "shop:Order"),
        ("shop:::Order", ":Order"),
        ("shop::Order/created", "Order/created"),
        ("shop::*", "*"),
        ("shop::Ordér", "Ordér"),
        ("shop::created\n", "created\n"),
    ],
)
def test_validate_name_refuses_bad_characters(name, segment):
    with pytest.raises(InvalidEventName, match="may only contain") as info:
        validate_name(name)
    assert repr(segment) in str(info.value)
    assert not is_valid_name(name)


def test_validate_name_refuses_names_longer_than_255():
    name = "::".join(["x" * 50] * 6)  # 6 * 50 + 5 * 2 = 310
    assert len(name) > MAX_NAME_LENGTH
    with pytest.raises(InvalidEventName, match="255") as info:
        validate_name(name)
    assert str(len(name)) in str(info.value)
    assert not is_valid_name(name)


def test_validate_name_accepts_exactly_255_characters():
    name = "::".join(["x" * 63] * 3) + "::" + "y" * 60  # 3 * 63 + 60 + 3 * 2
    assert len(name) == MAX_NAME_LENGTH
    assert validate_name(name) == name


def test_invalid_event_name_is_a_value_error():
    with pytest.raises(ValueError):
        validate_name("bad name")
    with pytest.raises(ChannelsEventsError):
        validate_name("bad name")


def test_validate_name_stays_strict_after_many_valid_names():
    # Valid names are remembered; the memory must never let a bad name through.
    for i in range(9000):
        validate_name(f"ns::event{i}")
    with pytest.raises(InvalidEventName):
        validate_name("ns::bad name")


# -- validate_namespace / namespace_of ------------------------------------------


@pytest.mark.parametrize("namespace", ["shop", "billing", "shop.v2", "my-app", "a_b", "x" * 64])
def test_validate_namespace_accepts_one_segment(namespace):
    assert validate_namespace(namespace) == namespace


@pytest.mark.parametrize(
    "namespace", ["", "shop::Order", "bad ns", "x" * 65, None, 7, "shop:", "ns/x"]
)
def test_validate_namespace_refuses_anything_else(namespace):
    with pytest.raises(InvalidEventName, match="single segment") as info:
        validate_namespace(namespace)
    assert repr(namespace) in str(info.value)


@pytest.mark.parametrize(
    ("name", "namespace"),
    [
        ("shop::Order::created", "shop"),
        ("billing::invoice", "billing"),
        ("shop", "shop"),
        ("shop.v2::x", "shop.v2"),
    ],
)
def test_namespace_of_returns_first_segment(name, namespace):
    assert namespace_of(name) == namespace


# -- compile_pattern ---------------------------------------------------------------


def test_compile_pattern_returns_a_compiled_regex():
    regex = compile_pattern(r"shop::Order::.*")
    assert isinstance(regex, re.Pattern)
    assert regex.fullmatch("shop::Order::created")
    assert compile_pattern(r"shop::Order::.*") is regex


@pytest.mark.parametrize("pattern", [None, 5, b"shop::.*"])
def test_compile_pattern_refuses_non_str(pattern):
    with pytest.raises(InvalidPattern, match="must be a str"):
        compile_pattern(pattern)


@pytest.mark.parametrize("pattern", [["shop::.*"], {"shop": 1}])
def test_compile_pattern_refuses_unhashable_non_str(pattern):
    with pytest.raises(InvalidPattern, match="must be a str"):
        compile_pattern(pattern)


def test_compile_pattern_refuses_empty_pattern():
    with pytest.raises(InvalidPattern, match=r"empty.*'\.\*'"):
        compile_pattern("")


@pytest.mark.parametrize("pattern", ["shop::(", "shop::[a-", "*", "shop::(?P<x>a)(?P<x>b)"])
def test_compile_pattern_refuses_bad_regex(pattern):
    with pytest.raises(InvalidPattern, match="does not compile") as info:
        compile_pattern(pattern)
    assert repr(pattern) in str(info.value)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, ChannelsEventsError)


# -- literal_namespace -------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "namespace"),
    [
        ("shop::Order::created", "shop"),
        ("shop::Order::.*", "shop"),
        ("shop::.*", "shop"),
        (r"shop\.v2::.*", "shop.v2"),
        ("shop", "shop"),
        ("shop::a|shop::b", "shop"),
        ("shop::(?:a|b)", "shop"),
        (".*", None),
        (".*::created", None),
        ("shop::a|billing::b", None),
        ("(shop|billing)::.*", None),
        ("(?i)shop::x", None),
        ("(?x)shop::x", None),
        ("shop.*", None),
        ("sho?p::x", None),
        ("shop[a-z]::x", None),
    ],
)
def test_literal_namespace(pattern, namespace):
    assert literal_namespace(pattern) == namespace


def test_literal_namespace_refuses_bad_pattern():
    with pytest.raises(InvalidPattern):
        literal_namespace("shop::(")


# -- never_matches -----------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("blog:Post:.*", "'blog:Post' has a single ':'"),
        ("^blog:post$", "'blog:post' has a single ':'"),
        ("shop::(Order):created", "'Order:created' has a single ':'"),
        ("shop:::Order", "it has ':::'"),
        (":shop::x", "it starts with ':'"),
        ("shop::", "it ends with ':'"),
        ("shop::Order created", "it needs ' '"),
        ("shop::x/y", "it needs '/'"),
        ("shop::Ord\u00e9r", "it needs '\u00e9'"),
        ("a:b|c:d", "'a:b' has a single ':'"),
    ],
)
def test_never_matches_says_why_a_pattern_matches_no_name(pattern, reason):
    found = never_matches(pattern)
    assert found is not None and reason in found
    # What it says holds: no valid name built around the pattern's literals matches.
    for name in ("blog::Post::created", "shop::Order::created", "shop::x::y", "a::b", "c::d"):
        assert re.fullmatch(pattern, name) is None


@pytest.mark.parametrize(
    "pattern",
    [
        "blog::Post::.*",
        ".*",
        "shop:.*",  # '.' may be the second colon
        "shop::Order::(created|updated)",
        "a:b|c::d",  # one branch may match
        "(?i)SHOP::order",
        "shop::a{2}:b",  # repeats are not judged
        "^shop::Order::created$",
        "shop\\b::x",
    ],
)
def test_never_matches_passes_patterns_that_may_match(pattern):
    assert never_matches(pattern) is None


def test_never_matches_refuses_a_pattern_that_does_not_compile():
    with pytest.raises(InvalidPattern):
        never_matches("shop::(")
