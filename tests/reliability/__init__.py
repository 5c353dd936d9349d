"""The reliability suite (`make reliability`, docs/reliability.md); quick scenarios run in `make test`."""
