# dancegen: `make demo` runs the main job on the embedded default, `make test` runs the tests.
# Both create the environment on a fresh machine (torch CPU wheel first, then everything pinned against it:
# see ../shared/specs/stack-notes.md for why torchvision must never be pulled in).

PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.dancegen-installed
MODELS_STAMP := $(VENV)/.dancegen-models
export HF_HUB_OFFLINE ?= 1
DEMO_OUT ?= demo_out

.PHONY: help install models demo test test-fast test-slow bench lint clean lock

help:  ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[dev,dwpose]"
	@if $(BIN)/pip show torchvision >/dev/null 2>&1; then echo "torchvision got installed; it breaks imports here" >&2; exit 1; fi
	touch $(STAMP)

lock: $(STAMP)  ## Regenerate constraints.txt: every package installed in .venv, pinned (what CI then installs)
	{ echo "# Every package of the tested environment, pinned: regenerate with 'make lock' after changing a"; \
	  echo "# dependency in pyproject.toml. torch is the CPU wheel installed first; anything that asks for"; \
	  echo "# torchvision must not replace it with a CUDA build (../shared/specs/stack-notes.md)."; \
	  $(BIN)/pip freeze --exclude-editable | grep -v '^-e ' | sed 's/^torch==\([0-9.]*\)+cpu$$/torch==\1/'; } \
	  > constraints.txt.new
	mv constraints.txt.new constraints.txt

$(MODELS_STAMP): $(STAMP)
	$(BIN)/python -m dancegen.pose.backends.fetch
	touch $(MODELS_STAMP)

install: $(STAMP) $(MODELS_STAMP)  ## Create .venv and fetch the default pose models (BlazePose, from PyPI)

models: $(MODELS_STAMP)  ## Fetch the default pose models only

demo: install  ## Synthetic clips -> poses -> retarget -> flow -> animate, music2dance, text2character (bundled models), in $(DEMO_OUT)/
	$(BIN)/dancegen demo -o $(DEMO_OUT)

# --dist loadfile: all tests of a module on one worker, so a module-scoped fixture (the bundled models' held-out quality
# runs) is computed once, not once per worker. (xdist 3.8's loadgroup does nothing under pytest 9.2: it tags tests
# through Item._nodeid, which pytest no longer reads.)
test: install  ## Fast offline test suite (CI)
	DANCEGEN_REQUIRE_MODELS=1 $(BIN)/python -m pytest -m "not slow and not gpu" -n 2 --dist loadfile -q

test-fast: install  ## Unit and equivalence tests only (no bundled-model quality tests): for iteration
	$(BIN)/python -m pytest -m "not slow and not gpu and not quality" -n 2 --dist loadfile -q

test-slow: install  ## Slow tests and tests that need real weights (DANCEGEN_WEIGHTS_DIR)
	DANCEGEN_RUN_SLOW=1 $(BIN)/python -m pytest -m "slow" -q

bench: install  ## Benchmarks (print ratios measured in one run)
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

lint: install
	$(BIN)/ruff check dancegen tests bench

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
