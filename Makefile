# The two commands of the README. Each sets up .venv first (a no-op once installed).
.PHONY: setup demo test lint

setup:
	./scripts/setup.sh

demo: setup
	.venv/bin/biofuse demo --workdir demo-output

# The whole suite, slow (model-heavy) tests included; plain `pytest` runs the fast ones.
test: setup
	.venv/bin/python -m pytest -m "slow or not slow" -q

lint: setup
	.venv/bin/ruff check .
