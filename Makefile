# One command for the main job, one for the tests. Each creates .venv and installs pinned versions first.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
RUN_DIR ?= runs/main
STAMP   := $(VENV)/.installed

.PHONY: setup browser main test clean

$(STAMP): requirements.lock pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

## main: train RcdNet on the four hospitals (BUSI, BUS-UCLM, BrEaST, UDIAT), evaluate on their validation split, write $(RUN_DIR)/report.md
main: $(STAMP)
	$(BIN)/rcdnet train --out $(RUN_DIR) $(if $(wildcard $(RUN_DIR)/checkpoints/last.pt $(RUN_DIR)/members/*/checkpoints/last.pt),--resume,)

## browser: Debian's Chromium for the web-page test (skipped with a message where it cannot be installed)
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
		|| echo "chromium could not be installed: the web-page test will be skipped"

## test: the whole test suite (300 tests; how long it takes on 2 CPU cores: README)
test: $(STAMP) browser
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache
