# archlab — set-up, tests, demo, benchmarks.  Each target creates .venv when missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# Point the data root at the shared data folder when it sits beside the repo.
ifneq ($(wildcard ../shared/data),)
export ARCHLAB_DATA ?= $(abspath ../shared/data)
endif

.PHONY: install test lint bench demo clean

install: $(STAMP)

# torch first, pinned to the tested CPU build (the package accepts torch>=2.4,<3; installed
# unpinned, pip would fetch a multi-GB CUDA build), then archlab with every extra.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[all,test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts

bench: $(STAMP)
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache

# The main job: train GPT on tiny Shakespeare (nanoGPT's CPU config), then let it write;
# says how long the training command took (`archlab bench demo` compares it to the raw loop).
DEMO_DIR ?= runs/demo-$(shell date +%Y%m%d-%H%M%S)
demo: $(STAMP)
	@start=$$(date +%s); \
	$(VENV)/bin/archlab train gpt-shakespeare-char --out $(DEMO_DIR) && \
	echo "make demo: archlab train gpt-shakespeare-char took $$(( $$(date +%s) - start )) s"
	$(VENV)/bin/archlab generate $(DEMO_DIR) --prompt "ROMEO:" --max-new-tokens 500 --seed 1
