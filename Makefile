# Every target sets itself up: a fresh machine needs only Python 3.11, pip and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench lock clean

# setuptools warns, for editable installs of mapped packages, that a folder named like the package
# could shadow it; none is (the package is docktor, the folders agent/ and tools/), so that
# UserWarning is silenced for the one install of docktor itself.
# The first run installs about 100 pinned packages (a minute or two): pip shows each one as it goes.
$(STAMP): pyproject.toml requirements.lock
	@echo "Setting up $(VENV): Docktor's pinned dependencies (requirements.lock), once; later runs start at once."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install --progress-bar off -r requirements.lock
	PYTHONWARNINGS=ignore::UserWarning $(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)
	@echo "$(VENV) is ready."

demo: $(STAMP)
	$(BIN)/docktor demo $(ARGS)

# The suite on TEST_WORKERS workers (pytest-xdist): most tests wait on timers, servers and
# containers, not on the CPU. --dist loadgroup keeps a module that shares a server on one worker
# (tests/conftest.py); TEST_WORKERS=0 runs it in this one process.
TEST_WORKERS ?= 4
test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder $(PYTEST_ARGS)

# mypy sees the installed names (docktor.agent, docktor.tools) through links in build/lint/.
lint: $(STAMP)
	mkdir -p build/lint/docktor
	ln -sfn ../../../agent build/lint/docktor/agent
	ln -sfn ../../../tools build/lint/docktor/tools
	$(BIN)/ruff check .
	$(BIN)/mypy -p docktor

# The project's own figures (docs/benchmarks.md): start-up, decision throughput and daemon
# footprint, and the policies on the shipped load traces. Also, with their peers:
#   python -m benchmarks.llm_latency (the llama.cpp peer), python -m benchmarks.compose_stack (Docker).
# The figures that need only this machine (no Docker, no LLM, no ../shared), a few minutes;
# the rest of docs/benchmarks.md names its own command each.
bench: $(STAMP)
	$(BIN)/python -m benchmarks.startup
	$(BIN)/python -m benchmarks.footprint
	$(BIN)/docktor bench
	$(BIN)/python -m benchmarks.policy_defaults
	$(BIN)/python -m benchmarks.nats_multi_sim
	$(BIN)/python -m benchmarks.versus_hpa_tuned

lock: $(STAMP)
	$(BIN)/pip freeze --all --exclude-editable | sed '1i # Exact versions the Makefile installs (pip install -r requirements.lock, then docktor itself with --no-deps).\n# Regenerate with: make lock' > requirements.lock

clean:
	rm -rf $(VENV) build .pytest_cache .hypothesis .mypy_cache .ruff_cache
