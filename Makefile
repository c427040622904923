# Two commands matter: `make demo` and `make test`. Each builds its own
# environment in .venv from nothing but Python 3.11+ and pip.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/lpu check examples/gpt_block.lpu
	$(BIN)/lpu eval examples/gpt_block.lpu --seed 0

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/python -m pip install --quiet ruff
	$(BIN)/ruff check .

docs: $(STAMP)
	$(BIN)/python -m isa.docs > docs/isa.md

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis *.egg-info
