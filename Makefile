# Two entry points for a fresh machine: `make run` and `make test`. Each sets itself up.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test bench clean

# torch goes first, as the CPU build: installed any later, sentence-transformers would pull the
# CUDA wheels (gigabytes). The Dockerfile follows the same order.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

# Offline by default: ingest the bundled sample news and open the console.
# With DISCORD_TOKEN set, the same command runs the Discord bot.
run: setup
	$(BIN)/newsdesk --config config.toml start

test: setup
	$(BIN)/python -m pytest -q

# The first run ingests ../shared/data/reuters and bbc into newsdesk-data/bench (about twenty
# minutes); later runs reuse it. Writes bench/results/*.json, the plot and bench/REPORT.md.
bench: setup
	$(BIN)/python -c "import matplotlib" 2>/dev/null || $(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/newsdesk --config config.toml bench

clean:
	rm -rf $(VENV) newsdesk-data .pytest_cache
