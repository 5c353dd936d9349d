"""Private implementation of otel_crm. Nothing here is public API."""

from otel_crm._internal import secret_logs

# First, before anything imports the SDK: it builds a Resource at import time and logs a malformed
# OTEL_RESOURCE_ATTRIBUTES pair whole.
secret_logs.install()
