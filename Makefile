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
	$(BIN)/lpu model gpt2 --layers 4 --d-model 64 --heads 4 --vocab 128 --max-seq 16 -o out/gpt2.lpu -w out/gpt2.npz
	$(BIN)/lpu compile out/gpt2.lpu --system node --tp 4 --pp 2 -w out/gpt2.npz -o out/gpt2.lpuprog
	$(BIN)/lpu generate out/gpt2.lpuprog --prompt-ids 1,2,3,4 --tokens 8 --check
	$(BIN)/lpu report out/gpt2.lpuprog

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/python -m pip install --quiet ruff
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/one_chip.py
	$(BIN)/python benchmarks/many_chips.py
	$(BIN)/python benchmarks/transformers.py
	$(BIN)/python benchmarks/mutation.py
	$(BIN)/python benchmarks/timing_only.py
	$(BIN)/python benchmarks/views.py
	$(BIN)/python benchmarks/fuzz.py

docs: $(STAMP)
	$(BIN)/python -m isa.docs > docs/isa.md

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis *.egg-info out
