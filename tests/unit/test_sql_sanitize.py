from __future__ import annotations

from collections.abc import Callable

import pytest

from otel_crm._internal.settings import resolve_settings
from otel_crm._internal.sql_sanitize import sanitize_sql
from tests.support.linear_time import assert_linear

# (statement as the driver or the ORM sends it, db.query.text we record)
STATEMENTS: list[tuple[str, str]] = [
    # SQLAlchemy: literals rendered inline (the example), then what its dialects send.
    ("INSERT INTO companies (name, employees) VALUES ('Acme', 80)",
     "INSERT INTO companies (name, employees) VALUES (?, ?)"),
    ("INSERT INTO companies (name, employees) VALUES (%(name)s, %(employees)s) RETURNING companies.id",
     "INSERT INTO companies (name, employees) VALUES (%(name)s, %(employees)s) RETURNING companies.id"),
    ("SELECT companies.id, companies.name FROM companies WHERE companies.name = ? LIMIT ? OFFSET ?",
     "SELECT companies.id, companies.name FROM companies WHERE companies.name = ? LIMIT ? OFFSET ?"),
    ("SELECT companies.id FROM companies WHERE companies.name = 'O''Brien & Co' AND companies.employees > 50 "
     "AND companies.created_at > '2024-01-15 10:30:00'",
     "SELECT companies.id FROM companies WHERE companies.name = ? AND companies.employees > ? "
     "AND companies.created_at > ?"),
    ("UPDATE contacts SET email=:email_1 WHERE contacts.id = :id_1",
     "UPDATE contacts SET email=:email_1 WHERE contacts.id = :id_1"),
    # Django ORM (PostgreSQL backend): quoted identifiers, %s placeholders, casts, LIMIT.
    ('SELECT "crm_deal"."id", "crm_deal"."name" FROM "crm_deal" INNER JOIN "crm_company" '
     'ON ("crm_deal"."company_id" = "crm_company"."id") WHERE ("crm_deal"."tenant_id" = %s '
     'AND "crm_company"."name"::text LIKE %s AND "crm_deal"."id" IN (%s, %s, %s)) '
     'ORDER BY "crm_deal"."id" DESC LIMIT 21',
     'SELECT "crm_deal"."id", "crm_deal"."name" FROM "crm_deal" INNER JOIN "crm_company" '
     'ON ("crm_deal"."company_id" = "crm_company"."id") WHERE ("crm_deal"."tenant_id" = %s '
     'AND "crm_company"."name"::text LIKE %s AND "crm_deal"."id" IN (%s, %s, %s)) '
     'ORDER BY "crm_deal"."id" DESC LIMIT ?'),
    ('INSERT INTO "crm_contact" ("email", "name") VALUES (%s, %s), (%s, %s) RETURNING "crm_contact"."id"',
     'INSERT INTO "crm_contact" ("email", "name") VALUES (%s, %s), (%s, %s) RETURNING "crm_contact"."id"'),
    # MySQL backend: backticks.
    ("SELECT `crm_deal`.`id` FROM `crm_deal` WHERE `crm_deal`.`amount` > 1000 LIMIT 21",
     "SELECT `crm_deal`.`id` FROM `crm_deal` WHERE `crm_deal`.`amount` > ? LIMIT ?"),
    # Hand-written: IN lists of literals collapse, lists of placeholders stay per element.
    ("SELECT * FROM deals WHERE stage IN ('won', 'lost') AND owner NOT IN ( 1 , 2 ,3 ) AND id in (7)",
     "SELECT * FROM deals WHERE stage IN (?) AND owner NOT IN (?) AND id in (?)"),
    ("SELECT * FROM deals WHERE id IN (1, $1, 3)", "SELECT * FROM deals WHERE id IN (?, $1, ?)"),
    # Numbers: negative, decimal, hex, scientific; a binary minus stays.
    ("UPDATE accounts SET balance = balance - 10.5, flags = 0xFF, ratio = 1.5e-3, delta = -42, x = .5 WHERE id=7",
     "UPDATE accounts SET balance = balance - ?, flags = ?, ratio = ?, delta = ?, x = ? WHERE id=?"),
    ("SELECT t1.col2, table_2024.x FROM t1, table_2024", "SELECT t1.col2, table_2024.x FROM t1, table_2024"),
    # Booleans, typed literals; NULL is not a value.
    ("SELECT * FROM users WHERE active = TRUE AND deleted = false AND x IS NULL",
     "SELECT * FROM users WHERE active = ? AND deleted = ? AND x IS NULL"),
    ("SELECT * FROM e WHERE d > DATE '2024-01-01' AND t < TIMESTAMP '2024-01-01 00:00' AND i < INTERVAL '1 day'",
     "SELECT * FROM e WHERE d > DATE ? AND t < TIMESTAMP ? AND i < INTERVAL ?"),
    ("SELECT E'a\\nb', N'Jane', X'DEADBEEF', B'1010', U&'d\\0061t', _utf8mb4'x', ''",
     "SELECT ?, ?, ?, ?, ?, ?, ?"),
    ("SELECT $$O'Brien$$, $body$ secret 'x' $body$ FROM t", "SELECT ?, ? FROM t"),
    # Comments are free text: removed.
    ("SELECT id FROM users -- filter on jane@example.com\nWHERE email = 'jane@example.com'",
     "SELECT id FROM users\nWHERE email = ?"),
    ("SELECT * FROM t /*controller='index',framework='django%3A4.2'*/", "SELECT * FROM t"),
    ("SELECT * FROM deals WHERE stage IN ('won', 'lost') AND amount > -10.5 -- by jane",  # docs/privacy.md
     "SELECT * FROM deals WHERE stage IN (?) AND amount > ?"),
    ("SELECT 1 /* a /* nested */ 'x' */ FROM t # mysql comment 42\nWHERE a = 1",
     "SELECT ? FROM t\nWHERE a = ?"),
    ("SELECT * FROM #temp WHERE x = 1", "SELECT * FROM #temp WHERE x = ?"),  # SQL Server temp table
    # Multi-line.
    ("SELECT c.id,\n       c.email\nFROM contacts c\nWHERE c.tenant_id = 42\n  AND c.email LIKE '%@example.com'\n",
     "SELECT c.id,\n       c.email\nFROM contacts c\nWHERE c.tenant_id = ?\n  AND c.email LIKE ?\n"),
    # Placeholders of every paramstyle stay.
    ("SELECT * FROM t WHERE a = ? AND b = ?1 AND c = %s AND d = %(d)s AND e = :e AND f = :1 AND g = $2 AND h = @p1",
     "SELECT * FROM t WHERE a = ? AND b = ?1 AND c = %s AND d = %(d)s AND e = :e AND f = :1 AND g = $2 AND h = @p1"),
    ('SELECT "2024_sales", `1col` FROM t WHERE x = 1', 'SELECT "2024_sales", `1col` FROM t WHERE x = ?'),
    ("SELECT CAST(x AS NUMERIC(10, 2)), y::int FROM t", "SELECT CAST(x AS NUMERIC(?, ?)), y::int FROM t"),
    # Double quotes: identifiers, except where only a value can be.
    ('SELECT "song list" FROM "t" WHERE "name" = "Acme" AND "t"."c" = "t2"."c"',
     'SELECT "song list" FROM "t" WHERE "name" = ? AND "t"."c" = "t2"."c"'),
]


@pytest.mark.parametrize(("statement", "expected"), STATEMENTS)
def test_real_statements(statement: str, expected: str) -> None:
    assert sanitize_sql(statement) == expected
    assert sanitize_sql(expected) == expected  # idempotent


def test_mysql_double_quoted_strings() -> None:
    statement = 'SELECT * FROM users WHERE name = "Acme" AND id IN ("a", "b")'
    assert sanitize_sql(statement, system="mysql") == "SELECT * FROM users WHERE name = ? AND id IN (?)"
    assert sanitize_sql(statement, system="MariaDB") == "SELECT * FROM users WHERE name = ? AND id IN (?)"


@pytest.mark.parametrize(("statement", "secrets"), [
    ("SELECT * FROM t WHERE note = 'it is a secret", ["secret"]),  # unterminated: the rest goes
    ("SELECT * FROM t WHERE note = 'x' AND y = $$never closed", ["never", "closed"]),
    ('SELECT * FROM t WHERE "unterminated = 5', ["unterminated"]),
    ("SELECT * FROM t WHERE a = 1 /* never closed 'hunter2'", ["hunter2", "never"]),
    # Backslash escapes (MySQL) or not (standard): whichever the database reads, nothing leaks.
    ("SELECT * FROM t WHERE name = 'O\\'Brien' AND pw = 'hunter2'", ["Brien", "hunter2"]),
    ("SELECT * FROM t WHERE path = 'C:\\' AND pw = 'hunter2' AND n = 'x'", ["hunter2"]),
    ("SELECT * FROM t WHERE a = \"" + "x" * 200 + '"', ["xxxx"]),  # too long for an identifier
])
def test_fail_closed(statement: str, secrets: list[str]) -> None:
    sanitized = sanitize_sql(statement)
    assert sanitized.startswith("SELECT * FROM t WHERE ")
    for secret in secrets:
        assert secret not in sanitized, sanitized


def test_a_nul_in_the_input_is_not_taken_for_our_marker() -> None:
    assert sanitize_sql("SELECT '\x00' IN (1, \x00)") == "SELECT ? IN (?, \ufffd)"


def test_capture_db_literals_setting() -> None:
    assert resolve_settings({}).capture_db_literals is False
    assert resolve_settings({"OTEL_CRM_CAPTURE_DB_LITERALS": "true"}).capture_db_literals is True


ADVERSARIAL: dict[str, Callable[[int], str]] = {
    "strings": lambda n: "'a'," * (n // 4),
    "numbers": lambda n: "1," * (n // 2),
    "signed numbers": lambda n: "=-1" * (n // 3),
    "one open quote": lambda n: "'" + "a" * n,
    "escaped quotes": lambda n: "'\\'" * (n // 3),
    "backslashes": lambda n: "\\" * n,
    "doubled quotes": lambda n: "''" * (n // 2),
    "comment openers": lambda n: "/*" * (n // 2),
    "comment closers": lambda n: "/**/" * (n // 4),
    "line comments": lambda n: "--\n" * (n // 3),
    "dollar quotes": lambda n: "$$" * (n // 2),
    "dollar tags": lambda n: "$a$" * (n // 3),
    "double quotes": lambda n: '="' * (n // 2),
    "in lists": lambda n: "IN (1, " * (n // 7),
    "booleans": lambda n: "true " * (n // 5),
    "prefixes": lambda n: "_abc'" * (n // 5),
}


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_one_megabyte_of_adversarial_sql_is_linear(name: str) -> None:
    # Python 3.10's exact rewrite of the possessive forms (lookahead + backreference) is linear
    # too, only slower: per_megabyte_bound allows for it.
    assert_linear(sanitize_sql, ADVERSARIAL[name], name)
