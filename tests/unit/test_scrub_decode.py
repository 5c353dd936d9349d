from __future__ import annotations

import urllib.parse

import pytest

from otel_crm._internal.scrub_decode import needs_views, views
from tests.support.linear_time import assert_linear


def _maps(text: str) -> list[tuple[str, list[int], bool]]:
    return [(view.text, [view.original(i) for i in range(len(view.text) + 1)], view.plain) for view in views(text)]


@pytest.mark.parametrize(("text", "decoded", "positions"), [
    ("a%40b", "a@b", [0, 1, 4, 5]),
    ("%41%42", "AB", [0, 3, 6]),
    ("a%C3%A9b", "aéb", [0, 1, 7, 8]),  # two bytes, one char
    ("%E2%82%AC%40", "€@", [0, 9, 12]),
    ("%F0%9F%98%80@x", "\U0001f600@x", [0, 12, 13, 14]),
    ("x%C3%28y", "x\ufffd(y", [0, 1, 4, 7, 8]),  # an invalid byte: U+FFFD for its escape
    ("%252540", "@", [0, 7]),  # triple-encoded
    ("%25252540", "%40", [0, 7, 8, 9]),  # four levels: decoded three times only
])
def test_percent_decoded_view_and_its_map_back(text: str, decoded: str, positions: list[int]) -> None:
    assert _maps(text) == [(decoded, positions, True)]


def test_plus_is_a_space_only_in_a_query_and_only_when_literal() -> None:
    (plain, spaced) = views("/q?phone=%2B1+415&n=a+b#x+y")
    assert plain.text == "/q?phone=+1+415&n=a+b#x+y" and plain.plain
    assert spaced.text == "/q?phone=+1 415&n=a b#x+y" and not spaced.plain  # %2B stays a plus; fragment kept
    assert [spaced.original(i) for i in (9, 10, 11)] == [9, 12, 13]
    assert [view.text for view in views("name=Jane+Doe&x=1")] == ["name=Jane Doe&x=1"]  # a bare query string
    assert [view.text for view in views("?q=100%+off")] == ["?q=100% off"]  # a "%" that is no escape
    assert [view.text for view in views("?q=%E2%82%AC+\ue000")] == ["?q=€+\ue000", "?q=€ \ue000"]
    assert views("+1 415 555 2671 called") == []  # not a query: + is a plus
    assert views("/path/a+b") == []


@pytest.mark.parametrize(("text", "expected"), [
    ("plain text", False), ("100% sure", False), ("%zz", False), ("a%40b", True), ("?q=a+b", True),
    ("+1 (415) 555-2671", False), ("x=1+2", True), ("x = 1+2", False),
])
def test_needs_views(text: str, expected: bool) -> None:
    assert needs_views(text) is expected
    assert (views(text) != []) is expected


def test_decoding_agrees_with_the_standard_library() -> None:
    samples = ["jane.doe@example.com", "a b&c=d/e?f#g", "münchen €", "x+y=z", "\u00e9\u00e8 \U0001f600",
               "a b c d e f g h i j @ / ? & = #"]  # more than 8 escapes: the other ASCII path
    for sample in samples:
        for encoded in (urllib.parse.quote(sample, safe=""), urllib.parse.quote(urllib.parse.quote(sample, safe=""),
                                                                              safe="")):
            (view,) = views(encoded)
            assert view.text == sample
            assert view.original(len(view.text)) == len(encoded)


@pytest.mark.parametrize("name", ["escapes", "nested", "invalid", "multibyte", "pluses", "percent signs",
                                  "pluses and escapes"])
def test_views_are_linear(name: str) -> None:
    make = {"escapes": lambda n: "%41" * (n // 3), "nested": lambda n: "%252540" * (n // 7),
            "invalid": lambda n: "%C3%28" * (n // 6), "multibyte": lambda n: "%E2%82%AC" * (n // 9),
            "pluses": lambda n: "?" + "a+" * (n // 2), "percent signs": lambda n: "%" * n,
            "pluses and escapes": lambda n: "?" + "%41+" * (n // 4)}[name]

    def decode(text: str) -> None:
        for view in views(text):
            view.original(len(view.text) // 2)

    assert_linear(decode, make, name)


@pytest.mark.parametrize("secret", ["/pay?card=4111+1111+1111+1111&cvc=x",
                                    "/api/leads?phone=%2B1+415+555+2671&src=web"])
def test_a_url_encoded_into_a_query_value_is_read_with_its_own_plus_as_space(secret: str) -> None:
    """`urlencode({"note": url})` encodes the URL's `+` as `%2B`: a plus in the outer query, but a
    space in the URL it decodes to (found end to end: cards and phones passed this way)."""
    text = urllib.parse.urlencode({"note": secret})
    spaced = [view.text for view in views(text) if not view.plain]
    assert any("4111 1111 1111 1111" in v or "1 415 555 2671" in v for v in spaced), spaced
    for view in views(text):  # every view maps back onto the original
        assert view.original(len(view.text)) == len(text)
