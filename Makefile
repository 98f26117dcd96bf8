# Every target sets itself up: a fresh machine needs only Python 3.11, pip and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench lint lock clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/docktor demo $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The backbone's figures and the policies on the public load traces (docs/benchmarks.md).
# Also: python -m agent.bench_llm (needs the llama.cpp peer), python -m agent.bench_compose (needs Docker).
bench: $(STAMP)
	$(BIN)/python -m agent.benchmark
	$(BIN)/docktor bench

lock: $(STAMP)
	$(BIN)/pip freeze --exclude-editable | sed '1i # Exact versions the Makefile installs. Regenerate with: make lock' > requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
