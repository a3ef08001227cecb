# The two commands of the README. Each sets up .venv first (a no-op once installed).
.PHONY: setup demo test lint

setup:
	./scripts/setup.sh

demo: setup
	.venv/bin/biofuse demo --workdir demo-output

# The whole suite, slow (model-heavy) tests included; plain `pytest` runs the fast ones.
# The catalog tests also run on a local PostgreSQL (scripts/postgres.sh starts it; an already
# exported BIOFUSE_TEST_POSTGRES_URL names another server instead); the analyst page's browser
# test needs Debian's Chromium (scripts/chromium.sh installs it).
test: setup
	@./scripts/chromium.sh
	@url="$${BIOFUSE_TEST_POSTGRES_URL:-$$(./scripts/postgres.sh)}" && \
	BIOFUSE_TEST_POSTGRES_URL="$$url" .venv/bin/python -m pytest -m "slow or not slow" -q

lint: setup
	.venv/bin/ruff check .
