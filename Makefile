# Quayside: two commands do all set-up on a fresh machine — `make run` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export QUAYSIDE_HOME ?= $(CURDIR)/.quayside
export DAGSTER_HOME ?= $(QUAYSIDE_HOME)/dagster
export PYTHONWARNINGS ?= ignore

.PHONY: install run run-sources demo-data ui test test-fast bench clean

# Bytecode compiled at install, as in a production image: dbt runs, sensors and benchmark
# contenders start in new processes, which would otherwise compile their imports every time.
$(VENV)/.installed: pyproject.toml uv.lock
	@command -v uv >/dev/null || python3 -m pip install --quiet 'uv==0.13.9'
	uv sync --frozen --python 3.11 --compile-bytecode
	@touch $@

# The dbt manifest is prepared once here, never when the code location loads.
dbt_project/target/manifest.json: $(VENV)/.installed $(shell find dbt_project -name '*.sql' -o -name '*.yml' | grep -v target/)
	cd dbt_project && ../$(VENV)/bin/dbt parse --quiet --profiles-dir .

install: $(VENV)/.installed dbt_project/target/manifest.json

$(DAGSTER_HOME)/dagster.yaml:
	@mkdir -p $(DAGSTER_HOME) && printf 'telemetry:\n  enabled: false\n' > $@

## make run: install, generate the demo tenant's files, materialise every asset, print a summary
run: install $(DAGSTER_HOME)/dagster.yaml
	$(PY) -m quayside.cli demo --end $$(date -u -d yesterday +%F)
	$(PY) -m lake_assets.run

# Local servers from the npm registry (sshd and PostgreSQL come from Debian: .ci/run installs them).
AZURITE := .servers/node_modules/.bin/azurite-blob
$(AZURITE):
	npm install --silent --no-audit --no-fund --prefix .servers azurite@3.35.0

## make run-sources: the same demo delivered through every connector (S3, SFTP, Azure Blob, file
## share, PostgreSQL, HTTP API pull and push) by real servers on 127.0.0.1, into its own lake
SOURCES_HOME := $(CURDIR)/.quayside-sources
run-sources: install $(AZURITE) $(DAGSTER_HOME)/dagster.yaml
	@test -x /usr/sbin/sshd -a -x /usr/lib/postgresql/15/bin/initdb || \
	  { echo "needs Debian's openssh-server and postgresql-15 (apt-get install -y openssh-server postgresql-15)"; exit 1; }
	rm -rf $(SOURCES_HOME)
	QUAYSIDE_HOME=$(SOURCES_HOME) $(PY) -m lake_assets.run_sources --end $$(date -u -d yesterday +%F)

## make ui: the Dagster UI on 127.0.0.1:3000, sensors and schedules on
ui: install $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/dagster dev -h 127.0.0.1 -p 3000 -w workspace.yaml

## make test: the whole suite (starts its own servers on 127.0.0.1)
test: install $(AZURITE)
	$(PY) -m pytest -q

## make bench [SCENARIO=n]: Quayside side by side with its peers and the physical limit -> docs/benchmarks.md
bench: install
	$(PY) -m benchmarks.run $(if $(SCENARIO),--scenario $(SCENARIO))

clean:
	rm -rf $(QUAYSIDE_HOME) $(SOURCES_HOME)
