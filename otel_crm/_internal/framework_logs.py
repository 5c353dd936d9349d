"""Development servers' own request lines, muted while otel_crm writes the access line.

werkzeug (`flask run`, `app.run()`) logs `127.0.0.1 - - [date] "GET / HTTP/1.1" 200 -` on the
`werkzeug` logger and Django's runserver `"GET / HTTP/1.1" 200 12` on `django.server`: with our
access line on, every request would print two lines. A filter on each of those loggers drops
their request lines only (the template `"%s" %s %s` both servers use for them); their startup,
reload and error lines pass.
"""

from __future__ import annotations

import logging

__all__ = ["SERVER_LOGGERS", "RequestLineFilter", "mute_server_request_lines", "unmute_server_request_lines"]

SERVER_LOGGERS = ("werkzeug", "django.server")
_REQUEST_TEMPLATE = '"%s" %s %s'


class RequestLineFilter(logging.Filter):
    """Drops a development server's per-request line; keeps everything else it logs."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg
        if isinstance(msg, str) and msg.rstrip().endswith(_REQUEST_TEMPLATE):
            self.dropped += 1
            return False
        return True


_filter = RequestLineFilter()


def mute_server_request_lines() -> None:
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        if _filter not in logger.filters:
            logger.addFilter(_filter)


def unmute_server_request_lines() -> None:
    for name in SERVER_LOGGERS:
        logging.getLogger(name).removeFilter(_filter)
