# `make demo` and `make test` are all a fresh machine needs (see README.md).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= $(MMGENRE_DATA)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export YOLO_OFFLINE := 1

.PHONY: venv demo test train bench screenshots clean

$(BIN)/.installed: requirements.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, from the local wheel store, so no other requirement can pull another build.
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -r requirements.txt
	touch $@

venv: $(BIN)/.installed

demo: venv
	$(BIN)/python -m dashboard.serve

test: venv
	$(BIN)/python -m pytest -q

train: venv
	$(BIN)/python -m train --data "$(DATA)" --models all --out checkpoints/

clean:
	rm -rf $(VENV) .pytest_cache
