from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path

import pytest
from opentelemetry.util.types import AttributeValue

from otel_crm._internal.scrubbing import KEEP, REDACT, Scrubber, ScrubMatch
from otel_crm._internal.settings import SettingsError, resolve_settings
from tests.support.privacy_corpus import (
    ALLOW_ENV,
    ALLOW_KEYS,
    ALLOW_PATTERNS,
    ALLOWED,
    CORPUS,
    DEAL_ID,
    Secret,
    leaks,
)

JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ"
       ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")
# (context with the secret, the secret itself): the secret must not survive scrubbing.
SECRETS: list[tuple[str, str]] = [
    ("contact {} signed up", "jane.doe+crm@example.co.uk"),
    ("from:{}", "BOB_99@Sub.Example.ORG"),
    ("Authorization: Bearer {}", "abcDEF123456.ghiJKL-789_xyz"),
    ("curl -H 'authorization: {}'", "Basic dXNlcjpwYXNzd29yZA=="),
    ("sent Basic {} upstream", "YWxhZGRpbjpvcGVuc2VzYW1l"),
    ("header bearer {}", JWT),
    ("token is {}", JWT),
    ("key={}", "sk-abcdefghijklmnopqrstuvwxyz0123456789"),
    ("anthropic {} ok", "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_xyz"),
    ("openai {}", "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx"),
    ("stripe {}", "sk_live_51HabcdefghijklmnopQRST"),
    ("aws {} used", "AKIAIOSFODNN7EXAMPLE"),
    ("aws sts {}", "ASIAY34FZKBOKMUTVV7A"),
    ("gh {}", "ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
    ("pat {}", "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz"),
    ("slack {}", "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOp"),
    ("google {}", "AIzaSyA1234567890abcdefghijklmnopqrstuv"),
    ("https://api.example.com/v1/x?page=2&api_key={}&sort=asc", "k3y-Value_99"),
    ("/callback?access_token={}#frag", "ya29.a0AfH6SMB"),
    ("GET /login?user=bob&password={}", "hunter2!"),
    ("/x?APIKEY={}&y=1", "ABCDEF"),
    ("/x?client_secret={};z", "cs_987"),
    ("pwd={} secret=x", "p4ss"),
    ("postgresql://crm:{}@db.internal:5432/crm", "s3cr3t-pw"),
    ('{{"user": "bob", "password": "{}"}}', "correct horse battery"),
    ("{{'refresh_token': '{}'}}", "rt-abc-123"),
    ("card {} charged", "4111 1111 1111 1111"),
    ("card {} charged", "4111-1111-1111-1111"),
    ("card {}.", "4111111111111111"),
    ("mc {}", "5500 0000 0000 0004"),
    ("amex {}", "3782 822463 10005"),
    ("amex {}", "378282246310005"),
    ("ref 12 {} end", "6011 1111 1111 1117"),
    ("call {} now", "+1 (415) 555-2671"),
    ("uk {}", "+44 20 7946 0958"),
    ("e164 {}", "+14155552671"),
    ("de {}", "+49 30 901820"),
    ("us {}", "(415) 555-2671"),
    ("us {}", "415-555-2671"),
    ("us {}", "415.555.2671"),
    ("london {}", "020 7946 0958"),
    ("mobile {}", "07700 900123"),
    ("fr {}", "06 12 34 56 78"),
]
# Must come through unchanged (and as the same object).
CLEAN = [
    "POST /api/v1/contacts/{contact_id}",
    "/api/v1/contacts/48213",
    "order 4111111111111112 shipped",  # fails Luhn
    "order ORD-2024-000123456789",
    "invoice 1234567890123",
    "550e8400-e29b-41d4-a716-446655440000",
    "12345678-1234-1234-1234-123456789012",
    "trace 4bf92f3577b34da6a3ce929d0e0e4736 span 00f067aa0ba902b7",
    "2024-01-15T10:30:00.123Z",
    "2024-01-15 10:30:00+05:30",
    "epoch 1700000000123 ns 1700000000123456789",
    "price $1,299.99 (EUR 1.299,99) qty 12",
    "42",
    "1234567",
    "version 10.2.3 build 20240115",
    "ip 192.168.100.12 port 5432",
    "tokens_used=42 max_tokens=512",
    "input_tokens: 1200",
    "Basic information about plans",
    "Bearer token expired",
    "task-runner disk-usage risk-score",
    "SELECT id, name FROM contacts WHERE tenant_id = $1 AND id = $2",
    "@decorator applied at handler.py:42",
    "ratio 0.4111111111111111",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36",
]


@pytest.mark.parametrize(("context", "secret"), SECRETS)
def test_default_patterns_scrub_each_secret(scrubber: Scrubber, context: str, secret: str) -> None:
    text = context.format(secret)
    scrubbed = scrubber.scrub_text(text)
    assert secret not in scrubbed
    assert "[REDACTED:" in scrubbed
    assert scrubber.scrub_text(scrubbed) == scrubbed  # markers are never matched again


@pytest.mark.parametrize("text", CLEAN)
def test_non_secrets_survive_as_the_same_object(scrubber: Scrubber, text: str) -> None:
    assert scrubber.scrub_text(text) is text


def test_markers_keep_the_context_readable(scrubber: Scrubber) -> None:
    url = "https://crm.example.com/api?page=2&api_key=abc123&token=t0k"
    assert scrubber.scrub_text(url) == ("https://crm.example.com/api?page=2&api_key=[REDACTED:secret]"
                                        "&token=[REDACTED:secret]")
    assert scrubber.scrub_text("Authorization: Bearer abcdefgh12345678") == \
        "Authorization: Bearer [REDACTED:secret]"
    assert scrubber.scrub_text("https://bob:pw1234@db/x") == "https://bob:[REDACTED:secret]@db/x"
    assert scrubber.scrub_text("mail a@b.com, call +1 415 555 2671, card 4111111111111111") == \
        "mail [REDACTED:email], call [REDACTED:phone], card [REDACTED:card]"


def test_hash_mode_joins_equal_values_and_depends_on_the_salt() -> None:
    first, again, other = (Scrubber(mode="hash", salt="s1"), Scrubber(mode="hash", salt="s1"),
                           Scrubber(mode="hash", salt="s2"))
    a = first.scrub_text("signup by Jane@Example.com")
    b = again.scrub_text("login jane@example.COM ok")
    c = other.scrub_text("signup by Jane@Example.com")
    marker = re.compile(r"\[HASH:[0-9a-f]{16}\]")
    (hash_a,), (hash_b,), (hash_c,) = marker.findall(a), marker.findall(b), marker.findall(c)
    assert hash_a == hash_b  # normalised: emails join whatever their case
    assert hash_a != hash_c
    assert "jane" not in a.lower()
    # Phones and cards hash their digits, so formatting does not break the join.
    assert first.scrub_text("4111 1111 1111 1111") == first.scrub_text("4111-1111-1111-1111")
    assert first.scrub_text("x=1 token=abc") != first.scrub_text("x=1 token=abd")
    text = "token=abc mail x@y.io"
    assert first.scrub_text(first.scrub_text(text)) == first.scrub_text(text)


def test_hash_mode_without_salt_uses_one_random_salt_per_process(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="otel_crm")
    one, two = Scrubber(mode="hash"), Scrubber(mode="hash")
    assert one.scrub_text("a@b.com") == two.scrub_text("a@b.com")
    assert one.scrub_text("a@b.com") != Scrubber(mode="hash", salt="x").scrub_text("a@b.com")
    lines = [r.getMessage() for r in caplog.records if "random per-process salt" in r.getMessage()]
    assert len(lines) <= 1  # logged once per process (maybe by an earlier test)


@pytest.mark.parametrize("key", [
    "password", "PASSWORD", "user.password", "db_password", "passwd", "secret", "app.client_secret",
    "authorization", "http.request.header.authorization", "http.request.header.cookie",
    "http.response.header.set-cookie", "http.request.header.x-api-key", "api_key", "apikey", "token",
    "access_token", "refresh_token", "private_key", "crm.oauth.refresh-token"])
def test_deny_listed_keys_replace_the_whole_value(scrubber: Scrubber, key: str) -> None:
    assert scrubber.scrub_value(key, "plain") == "[REDACTED]"
    assert scrubber.scrub_value(key, 1234) == "[REDACTED]"
    assert scrubber.scrub_value(key, ("a", "b")) == ("[REDACTED]", "[REDACTED]")


@pytest.mark.parametrize("key", ["gen_ai.usage.input_tokens", "token_count", "crm.tenant.id", "http.route",
                                 "passwordless", "cookies_enabled"])
def test_other_keys_keep_their_values(scrubber: Scrubber, key: str) -> None:
    assert scrubber.scrub_value(key, "plain") == "plain"
    assert scrubber.scrub_value(key, 7) == 7


def test_scrub_value_and_attributes(scrubber: Scrubber) -> None:
    assert scrubber.scrub_value("x", 4111111111111111) == 4111111111111111  # numbers untouched
    assert scrubber.scrub_value("x", 1.5) == 1.5 and scrubber.scrub_value("x", True) is True
    seq = ("ok", "mail a@b.com")
    assert scrubber.scrub_value("x", seq) == ("ok", "mail [REDACTED:email]")
    clean_seq = ("a", "b")
    assert scrubber.scrub_value("x", clean_seq) is clean_seq
    assert scrubber.scrub_value("x", {"k": "a@b.com", "pwd": 1}) == {"k": "[REDACTED:email]", "pwd": "[REDACTED]"}
    attributes: dict[str, AttributeValue] = {"http.route": "/x", "n": 3, "url.query": "token=abc",
                                             "cookie": "sid=1"}
    scrubbed = scrubber.scrub_attributes(attributes)
    assert scrubbed == {"http.route": "/x", "n": 3, "url.query": "token=[REDACTED:secret]",
                        "cookie": "[REDACTED]"}
    assert list(scrubbed or {}) == list(attributes)  # order kept
    assert attributes["url.query"] == "token=abc"  # input not mutated
    clean: dict[str, AttributeValue] = {"http.route": "/x", "n": 3}
    assert scrubber.scrub_attributes(clean) is clean
    assert scrubber.scrub_attributes(None) is None


def test_extra_keys_and_custom_patterns(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="otel_crm")
    scrubber = Scrubber(extra_patterns=[r"EMP-\d{6}", r"(unclosed", r"q*"], extra_keys=["Crm.SSN"])
    assert scrubber.scrub_text("employee EMP-123456 left") == "employee [REDACTED:custom] left"
    assert scrubber.scrub_text("plain text") == "plain text"  # empty matches of q* ignored
    assert scrubber.scrub_value("person.crm.ssn", "078-05-1120") == "[REDACTED]"
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "OTEL_CRM_SCRUB_PATTERNS" in warnings[0] and "(unclosed" in warnings[0]


def test_from_settings() -> None:
    assert Scrubber.from_settings(resolve_settings({}, scrub_mode="off")) is None
    scrubber = Scrubber.from_settings(resolve_settings(
        {"OTEL_CRM_SCRUB_PATTERNS": r"EMP-\d+", "OTEL_CRM_SCRUB_KEYS": "ssn"}, scrub_mode="hash",
        scrub_salt="pepper"))
    assert scrubber is not None and scrubber.mode == "hash"
    assert scrubber.scrub_text("EMP-1") == Scrubber(mode="hash", salt="pepper", extra_patterns=[
        r"EMP-\d+"]).scrub_text("EMP-1")
    assert scrubber.scrub_value("ssn", "x").startswith("[HASH:")  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="redact or hash"):
        Scrubber(mode="off")


def test_log_body_walk(scrubber: Scrubber) -> None:
    body = {"msg": "from a@b.com", "auth": {"password": "x", "list": ["ok", "token=1"]}, "n": 1}
    assert scrubber.scrub_body(body) == {
        "msg": "from [REDACTED:email]", "n": 1,
        "auth": {"password": "[REDACTED]", "list": ["ok", "token=[REDACTED:secret]"]}}
    deep: object = "a@b.com"
    for _ in range(12):
        deep = [deep]
    assert "a@b.com" not in json.dumps(scrubber.scrub_body(deep))
    clean = {"a": ["b", {"c": 1}]}
    assert scrubber.scrub_body(clean) is clean
    record = {"message": "user a@b.com failed", "exception_message": "card 4111111111111111",
              "stack_trace": "x", "level": "error"}
    scrubbed = scrubber.scrub_body(record)
    assert scrubbed["message"] == "user [REDACTED:email] failed"
    assert scrubbed["exception_message"] == "card [REDACTED:card]"
    assert record["message"] == "user a@b.com failed"  # a new dict, input untouched


# --- long strings ------------------------------------------------------------------------------
@pytest.mark.parametrize("offset", [0, 5000, 7100, 7160, 8180, 8192, 8200, 14300, 50_000, 99_900])
def test_long_strings_are_scanned_in_full(scrubber: Scrubber, offset: int) -> None:
    secrets = ["jane@example.com", "4111 1111 1111 1111", JWT, "sk-abcdefghijklmnopqrstuvwxyz"]
    for secret in secrets:
        text = ("lorem ipsum " * 9000)[:offset] + " " + secret + " " + "dolor sit " * 100
        scrubbed = scrubber.scrub_text(text)
        assert secret not in scrubbed, (offset, secret)
        assert scrubbed.startswith(text[:offset]) and scrubbed.endswith("dolor sit " * 100)


def test_small_scan_windows_keep_every_match() -> None:
    scrubber = Scrubber(max_scan_chars=256)
    emails = [f"user{index}@example.com" for index in range(300)]
    text = " filler ".join(emails)
    scrubbed = scrubber.scrub_text(text)
    assert scrubbed.count("[REDACTED:email]") == 300
    assert "@" not in scrubbed


# --- encodings -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "expected"), [
    ("?email=jane%40example.com&x=1", "?email=[REDACTED:email]&x=1"),
    ("/a%20b/?q=%C3%A9t%C3%A9&email=jane%2540example.com#top", "/a%20b/?q=%C3%A9t%C3%A9&email=[REDACTED:email]#top"),
    ("?phone=%2B1+415+555+2671&name=Jane+Doe", "?phone=[REDACTED:phone]&name=Jane+Doe"),
    ("?card=4111+1111+1111+1111&n=2", "?card=[REDACTED:card]&n=2"),
    ("next=https%3A%2F%2Fadmin%3Ahunter2%40db%2F", "next=https%3A%2F%2Fadmin%3A[REDACTED:secret]%40db%2F"),
    ("/login?password=a%26b&x=1", "/login?password=[REDACTED:secret]&x=1"),  # "&" inside the value
    ("100%25 sure, 50%off", "100%25 sure, 50%off"),
])
def test_percent_decoded_findings_keep_the_rest_byte_for_byte(scrubber: Scrubber, text: str, expected: str) -> None:
    assert scrubber.scrub_text(text) == expected
    assert scrubber.scrub_text(expected) == expected


def test_hashes_of_encoded_and_plain_values_join() -> None:
    scrubber = Scrubber(mode="hash", salt="s")
    assert scrubber.scrub_text("jane@example.com") == scrubber.scrub_text("jane%40example.com")


# --- the privacy corpus --------------------------------------------------------------------------
KEYS = ("crm.note", "url.query", "http.request.header.x-debug", "exception.message", "db.query.text", "code.ns")


def _routes(scrubber: Scrubber, text: str) -> list[str]:
    """Every way a string reaches the scrubber: text, attribute values, log bodies, JSON lines."""
    attributes = {key: text for key in KEYS} | {"crm.tags": (text, "ok")}
    return [scrubber.scrub_text(text), scrubber.scrub_text(f"said: {text} (again: {text})"),
            *(str(scrubber.scrub_value(key, text)) for key in KEYS),
            repr(scrubber.scrub_attributes(attributes)),
            repr(scrubber.scrub_body({"message": text, "extra": {"items": [text, {"deep": text}]}})),
            json.dumps(scrubber.scrub_body({"message": text, "tenant_id": text}))]


@pytest.mark.parametrize("mode", ["redact", "hash"])
@pytest.mark.parametrize("secret", CORPUS, ids=[secret.kind for secret in CORPUS])
def test_no_corpus_secret_leaks_by_any_route(mode: str, secret: Secret) -> None:
    scrubber = Scrubber(mode=mode, salt="corpus", allow_keys=ALLOW_KEYS, allow_patterns=ALLOW_PATTERNS)
    for output in _routes(scrubber, secret.text):
        assert leaks(output, secret) == [], output


def test_corpus_figures_match_the_docs() -> None:
    scrubber = Scrubber(allow_keys=ALLOW_KEYS, allow_patterns=ALLOW_PATTERNS)
    checks = [(secret, output) for secret in CORPUS for output in _routes(scrubber, secret.text)]
    leaked = [secret.kind for secret, output in checks if leaks(output, secret)]
    assert leaked == []
    assert len({secret.kind for secret in CORPUS}) == len(CORPUS) >= 50
    docs = (Path(__file__).resolve().parents[2] / "docs" / "privacy.md").read_text()
    assert f"{len(CORPUS)} kinds of secret" in docs and f"{len(_routes(scrubber, 'x'))} routes" in docs


# --- allow-list and callback ---------------------------------------------------------------------
def test_the_deal_id_example() -> None:
    settings = resolve_settings(ALLOW_ENV)
    assert settings.scrub_allow_keys == ALLOW_KEYS and settings.scrub_allow_patterns == ALLOW_PATTERNS
    scrubber = Scrubber.from_settings(settings)
    assert scrubber is not None
    for allowed in ALLOWED:
        if allowed.key is None:
            assert allowed.must_appear in scrubber.scrub_text(allowed.text)
        else:
            assert scrubber.scrub_value(allowed.key, allowed.text) == allowed.must_appear
            assert scrubber.scrub_attributes({allowed.key: allowed.text}) == {allowed.key: allowed.must_appear}
            assert scrubber.scrub_body({"CRM.Deal.ID": allowed.text}) == {"CRM.Deal.ID": allowed.must_appear}
    # Only there: the same number elsewhere is still a card.
    assert scrubber.scrub_value("crm.note", DEAL_ID) == "[REDACTED:card]"
    assert scrubber.scrub_text(f"deal_id={DEAL_ID}") == "deal_id=[REDACTED:card]"
    assert scrubber.scrub_text(f"DEAL-{DEAL_ID[:12]} {DEAL_ID}") == f"DEAL-{DEAL_ID[:12]} [REDACTED:card]"
    assert Scrubber(allow_keys=["crm.deal_id"]).scrub_value("CRM.Deal-ID", DEAL_ID) == DEAL_ID  # - and _ alike
    # The deny-list wins over the allow-list; configure() arguments work like the variables.
    assert Scrubber(allow_keys=["api_key"]).scrub_value("api_key", "x") == "[REDACTED]"
    assert resolve_settings({}, scrub_allow_keys=["crm.deal.id"]).scrub_allow_keys == ("crm.deal.id",)


def test_invalid_allow_patterns_one_line_or_refused_in_strict_mode(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="otel_crm")
    env = {"OTEL_CRM_SCRUB_ALLOW_PATTERNS": r"(deal,DEAL-\d{16}"}
    scrubber = Scrubber.from_settings(resolve_settings(env))
    assert scrubber is not None and scrubber.scrub_text(f"DEAL-{DEAL_ID}") == f"DEAL-{DEAL_ID}"
    (line,) = [r.getMessage() for r in caplog.records if "ALLOW_PATTERNS" in r.getMessage()]
    assert "OTEL_CRM_SCRUB_ALLOW_PATTERNS" in line and "(deal" in line
    with pytest.raises(SettingsError, match="OTEL_CRM_SCRUB_ALLOW_PATTERNS='\\(deal'"):
        Scrubber.from_settings(resolve_settings(env | {"OTEL_CRM_STRICT": "true"}))


def test_invalid_scrub_pattern_is_refused_in_strict_mode(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="otel_crm")
    env = {"OTEL_CRM_SCRUB_PATTERNS": r"(unclosed,EMP-\d+"}
    scrubber = Scrubber.from_settings(resolve_settings(env))
    assert scrubber is not None and scrubber.scrub_text("id EMP-1234") == "id [REDACTED:custom]"
    assert len([r for r in caplog.records if "OTEL_CRM_SCRUB_PATTERNS" in r.getMessage()]) == 1
    with pytest.raises(SettingsError, match="OTEL_CRM_SCRUB_PATTERNS='\\(unclosed'"):
        Scrubber.from_settings(resolve_settings(env | {"OTEL_CRM_STRICT": "true"}))


def test_callback_sees_each_match_and_where_it_was_found() -> None:
    seen: list[ScrubMatch] = []

    def decide(match: ScrubMatch) -> str:
        seen.append(match)
        return KEEP if match.kind == "card" and match.key == "crm.deal.ref" else REDACT

    scrubber = Scrubber(callback=decide)
    assert scrubber.scrub_value("crm.deal.ref", f"ref {DEAL_ID}", signal="traces") == f"ref {DEAL_ID}"
    assert seen == [ScrubMatch("card", "card", DEAL_ID, "crm.deal.ref", "traces")]
    # Not cached as clean: the same text under another key is asked about again, and redacted.
    assert scrubber.scrub_value("crm.note", f"ref {DEAL_ID}", signal="logs") == "ref [REDACTED:card]"
    assert scrubber.scrub_text("?email=jane%40example.com", key="url.query") == "?email=[REDACTED:email]"
    assert seen[-1] == ScrubMatch("email", "email", "jane@example.com", "url.query", None)  # decoded text
    assert scrubber.scrub_body({"msg": "token=abc123"}, signal="logs") == {"msg": "token=[REDACTED:secret]"}
    assert seen[-1] == ScrubMatch("secret", "query", "abc123", "msg", "logs")
    with pytest.raises(dataclasses.FrozenInstanceError):  # callbacks cannot alter it
        seen[0].text = "x"  # type: ignore[misc]


@pytest.mark.usefixtures("no_reraise")
def test_a_failing_callback_fails_closed_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    def broken(match: ScrubMatch) -> str:
        raise RuntimeError("bug in user code")

    assert Scrubber(callback=broken).scrub_text(f"card {DEAL_ID}") == "card [REDACTED:card]"
    assert Scrubber(callback=lambda match: "yes").scrub_text(f"card {DEAL_ID}") == "card [REDACTED:card]"
    messages = [r.getMessage() for r in caplog.records]
    assert any("scrub_callback" in m and "bug in user code" in m for m in messages)


def test_a_failing_callback_surfaces_under_pytest() -> None:
    def broken(match: ScrubMatch) -> str:
        raise RuntimeError("bug in user code")

    with pytest.raises(RuntimeError, match="bug in user code"):
        Scrubber(callback=broken).scrub_text(f"card {DEAL_ID}")
    with pytest.raises(TypeError, match="callable"):
        Scrubber(callback="keep")  # type: ignore[arg-type]
