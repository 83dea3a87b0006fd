"""Hand-run chaos tools (not part of `make test`): `python -m tests.chaos.make_run --help`."""
