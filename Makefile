# Two commands matter: `make demo` and `make test`. Each builds its own
# environment in .venv from nothing but Python 3.11+ and pip.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint docs bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	@mkdir -p out
	$(BIN)/lpu check examples/gpt_block.lpu > out/gpt_block.canonical.lpu
	$(BIN)/lpu compile examples/gpt_block.lpu --system node --chips 8 --random-weights 0 -o out/gpt_block.best.lpuprog
	$(BIN)/lpu compile examples/gpt_block.lpu --system node --tp 2 --pp 2 --random-weights 0 -o out/gpt_block.lpuprog
	$(BIN)/lpu run out/gpt_block.lpuprog --check

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/python -m pip install --quiet ruff
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/one_chip.py
	$(BIN)/python benchmarks/many_chips.py
	$(BIN)/python benchmarks/mutation.py

docs: $(STAMP)
	$(BIN)/python -m isa.docs > docs/isa.md

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis *.egg-info out
