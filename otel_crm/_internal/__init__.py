"""Private implementation of otel_crm. Nothing here is public API."""
