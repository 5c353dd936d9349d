"""The secrets otel_crm must never let out, one realistic value per kind, for unit and end-to-end tests.

Each :class:`Secret` is the text as it shows up in telemetry (with the context that makes it a
secret: ``Authorization: Bearer …``, ``?password=…``, a URL with userinfo) and the substrings that
must not appear anywhere in the output once it has passed otel_crm. Substrings are at least six
characters, and ten when they are all hex digits, so a ``[HASH:…]`` marker (16 hex digits) cannot
reasonably contain one by chance.

:data:`ALLOWED` is the control: a Luhn-valid 16-digit deal id that looks like a card but is
allow-listed (key ``crm.deal.id``, pattern ``DEAL-\\d{16}``) and MUST appear.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ALLOWED", "ALLOW_ENV", "ALLOW_KEYS", "ALLOW_PATTERNS", "CORPUS", "DEAL_ID", "JWT", "Allowed", "Secret",
           "leaks"]


@dataclass(frozen=True)
class Secret:
    kind: str
    text: str
    must_not_appear: tuple[str, ...]


@dataclass(frozen=True)
class Allowed:
    kind: str
    key: str | None  # the attribute key it is recorded under (None: free text, any key)
    text: str
    must_appear: str


JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ"
       ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")
_JWT_PARTS = ("eyJzdWIiOiIxMjM0NTY3ODkw", "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")
_RSA_LINES = ("MIIEowIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM9Oi6nl1zYmvC8wUhnBzK2Lr7q1qT",
              "hkM9xN0q7b7QAn4v5WbQ2y1bD8VmJx0cGfR2rXo6xG3c1c0pJw9N5d2eLrZ4kXyA")
_SSH_LINE = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW"
_EC_LINE = "MHcCAQEEIIrYSSNQFaA2Hwf1duRSxKtLYX5CB04fSeQ6tF1aY/PuoAoGCCqGSM49"
_PKCS8_LINE = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj"

CORPUS: tuple[Secret, ...] = (
    # --- personal data ---------------------------------------------------------------------------
    Secret("email", "contact jane.doe+crm@example.co.uk signed up", ("jane.doe+crm@example.co.uk", "jane.doe")),
    Secret("email-percent", "/api/contacts?email=jane.doe%40example.com&page=2",
           ("jane.doe%40example.com", "jane.doe@example.com", "jane.doe")),
    Secret("email-double-percent", "/r?next=%2Fcontacts%3Femail%3Djane.doe%2540example.com",
           ("jane.doe%2540example.com", "jane.doe")),
    Secret("email-plus-in-query", "/api/contacts?email=jane+crm@example.com&page=2",
           ("jane+crm@example.com", "crm@example.com", "jane+crm")),
    Secret("phone-international", "call +1 (415) 555-2671 now", ("555-2671", "(415) 555")),
    Secret("phone-e164", "sms to +14155552671 sent", ("14155552671", "4155552671")),
    Secret("phone-us", "us 415-555-2671", ("415-555-2671", "555-2671")),
    Secret("phone-uk", "uk +44 20 7946 0958", ("7946 0958", "20 7946")),
    Secret("phone-national-trunk", "london 020 7946 0958", ("020 7946", "7946 0958")),
    Secret("phone-query-encoded", "/api/leads?phone=%2B1+415+555+2671&src=web",
           ("415+555+2671", "555+2671", "%2B1+415")),
    Secret("ssn", "ssn 536-22-1234 on file", ("536-22-1234", "22-1234")),
    Secret("ssn-spaces", "ssn 536 22 1234 on file", ("536 22 1234", "22 1234")),
    # --- payment ---------------------------------------------------------------------------------
    Secret("card-plain", "card 4111111111111111 charged", ("4111111111111111",)),
    Secret("card-spaces", "card 4111 1111 1111 1111 charged", ("4111 1111 1111 1111", "1111 1111")),
    Secret("card-dashes", "card 5500-0000-0000-0004 charged", ("5500-0000-0000-0004", "0000-0004")),
    Secret("card-dots", "card 4012.8888.8888.1881 charged", ("4012.8888.8888.1881", "8888.1881")),
    Secret("card-amex", "amex 3782 822463 10005", ("3782 822463 10005", "822463 10005")),
    Secret("card-query-percent", "/pay?card=4111%201111%201111%201111&cvc=x",
           ("4111%201111%201111%201111", "1111%201111")),
    Secret("card-query-plus", "/pay?card=4111+1111+1111+1111&cvc=x", ("4111+1111+1111+1111", "1111+1111")),
    Secret("iban", "refund to DE89 3704 0044 0532 0130 00 today", ("3704 0044 0532 0130", "0532 0130 00")),
    Secret("iban-compact", "iban=GB29NWBK60161331926819", ("GB29NWBK60161331926819", "NWBK60161331926819")),
    Secret("iban-letters", "FR14 2004 1010 0505 0001 3M02 606", ("2004 1010 0505", "0001 3M02 606")),
    Secret("iban-percent", "/pay?iban=DE89%203704%200044%200532%200130%2000",
           ("3704%200044", "0532%200130%2000")),
    # --- credentials -----------------------------------------------------------------------------
    Secret("bearer", "Authorization: Bearer abcDEF123456.ghiJKL-789_xyz", ("abcDEF123456.ghiJKL-789_xyz",)),
    Secret("basic-auth", "Authorization: Basic dXNlcjpwYXNzd29yZA==", ("dXNlcjpwYXNzd29yZA",)),
    Secret("jwt-authorization", f"Authorization: Bearer {JWT}", _JWT_PARTS),
    Secret("jwt-bare", f"session {JWT} expired", _JWT_PARTS),
    Secret("jwt-in-query", f"/callback?id_token={JWT}&state=x", _JWT_PARTS),
    Secret("jwt-after-encoded-equals", f"/cb?state=abc%26id_token%3D{JWT}", _JWT_PARTS),
    Secret("openai-key", "OPENAI key sk-proj-AbCdEfGhIjKlMnOpQrStUvWx used", ("AbCdEfGhIjKlMnOpQrStUvWx",)),
    Secret("anthropic-key", "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_xyz",
           ("AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",)),
    Secret("stripe-key", "stripe sk_live_51HabcdefghijklmnopQRST", ("51HabcdefghijklmnopQRST",)),
    Secret("aws-access-key-id", "aws AKIAIOSFODNN7EXAMPLE used", ("AKIAIOSFODNN7EXAMPLE", "IOSFODNN7EXAMPLE")),
    Secret("aws-secret-access-key", "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
           ("wJalrXUtnFEMI/K7MDENG", "bPxRfiCYEXAMPLEKEY")),
    Secret("google-api-key", "maps AIzaSyA1234567890abcdefghijklmnopqrstuv", ("SyA1234567890abcdefghijklmnopqrstuv",)),
    Secret("github-token", "gh ghp_abcdefghijklmnopqrstuvwxyz0123456789", ("abcdefghijklmnopqrstuvwxyz0123456789",)),
    Secret("github-pat", "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
           ("11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",)),
    Secret("slack-token", "slack xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOp",
           ("1234567890123-AbCdEfGhIjKlMnOp",)),
    Secret("api-key-query", "https://api.example.com/v1/x?page=2&api_key=k3y-Value_99&sort=asc", ("k3y-Value_99",)),
    Secret("password-query", "GET /login?user=bob&password=hunter2!", ("hunter2!",)),
    Secret("password-query-percent", "/login?user=bob&password=p%40ss%2Fw0rd", ("p%40ss%2Fw0rd", "p@ss/w0rd")),
    Secret("password-json", '{"user": "bob", "password": "correct horse battery"}', ("correct horse battery",)),
    Secret("pem-rsa", "-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(_RSA_LINES) + "\n-----END RSA PRIVATE KEY-----\n",
           _RSA_LINES),
    Secret("pem-openssh", f"key:\n-----BEGIN OPENSSH PRIVATE KEY-----\n{_SSH_LINE}\n-----END OPENSSH PRIVATE KEY-----",
           (_SSH_LINE,)),
    Secret("pem-json-escaped",
           '{"sa": {"pk": "-----BEGIN PRIVATE KEY-----\\n' + _PKCS8_LINE + '\\n-----END PRIVATE KEY-----\\n"}}',
           (_PKCS8_LINE,)),
    Secret("pem-truncated", f"-----BEGIN EC PRIVATE KEY-----\n{_EC_LINE}", (_EC_LINE,)),
    # --- URL userinfo, per scheme ----------------------------------------------------------------
    Secret("userinfo-https", "fetch https://admin:hunter2@db.example.com/status", ("hunter2",)),
    Secret("userinfo-in-path", "GET /x/https://admin:hunter2@db.example.com/y", ("hunter2",)),
    Secret("userinfo-postgres", "postgres://crm_user:s3cr3t-pw@db.internal:5432/crm", ("s3cr3t-pw",)),
    Secret("userinfo-redis-empty-user", "redis://:r3dis-pw@cache:6379/0", ("r3dis-pw",)),
    Secret("userinfo-amqp", "amqp://guest:rabbit-pw9@mq.internal/vhost", ("rabbit-pw9",)),
    Secret("userinfo-mongodb-srv", "mongodb+srv://app:m0ngo-pw@cluster0.example.net/db", ("m0ngo-pw",)),
    Secret("userinfo-at-in-password", "mysql://app:p@ssw0rd!@db/crm", ("p@ssw0rd!", "ssw0rd!")),
    Secret("userinfo-token-only", "git clone https://x7Kq9TzL2mP4vR8w@git.example.com/repo.git",
           ("x7Kq9TzL2mP4vR8w",)),
    Secret("userinfo-percent-encoded", "/login?next=https%3A%2F%2Fadmin%3Ahunter2%40db.example.com%2F",
           ("hunter2",)),
)

DEAL_ID = "4111111111111111"  # Luhn-valid, 16 digits: a card to the patterns
ALLOW_KEYS = ("crm.deal.id",)
ALLOW_PATTERNS = (r"DEAL-\d{16}",)
ALLOW_ENV = {"OTEL_CRM_SCRUB_ALLOW_KEYS": ",".join(ALLOW_KEYS),
             "OTEL_CRM_SCRUB_ALLOW_PATTERNS": ",".join(ALLOW_PATTERNS)}
ALLOWED: tuple[Allowed, ...] = (
    Allowed("deal-id-by-key", "crm.deal.id", DEAL_ID, DEAL_ID),
    Allowed("deal-id-by-pattern", None, f"deal DEAL-{DEAL_ID} won", f"DEAL-{DEAL_ID}"),
)


def leaks(output: str, secret: Secret) -> list[str]:
    """The forbidden substrings of `secret` found in `output`."""
    return [part for part in secret.must_not_appear if part in output]
