# `make demo` and `make test` are all a fresh machine needs (see README.md).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= $(MMGENRE_DATA)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export YOLO_OFFLINE := 1

.PHONY: venv sysdeps demo test train bench screenshots clean

$(BIN)/.installed: requirements.txt requirements-nodeps.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, from the local wheel store, so no other requirement can pull another build.
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -r requirements-nodeps.txt
	touch $@

venv: $(BIN)/.installed

# nginx (the one-origin reverse proxy) comes from Debian; installed only when missing.
sysdeps:
	@command -v nginx >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; \
	  else echo "nginx is missing: run 'sudo apt-get install -y nginx'"; exit 1; fi; }

demo: venv sysdeps
	$(BIN)/python -m dashboard.serve --port 7860

test: venv sysdeps
	$(BIN)/python -m pytest -q

train: venv
	$(BIN)/python -m train --data "$(DATA)" --models all --out checkpoints/

# The README's pictures: every page and the Gradio demo, small PNGs in assets/ (needs data).
screenshots: venv sysdeps
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is missing: run 'sudo apt-get install -y chromium'"; exit 1; fi; }
	$(BIN)/python -m dashboard.screenshots assets/ --data "$(DATA)" --checkpoints checkpoints/

bench: venv sysdeps
	$(BIN)/python -m train.benchmarks.features --data "$(DATA)"
	$(BIN)/python -m train.benchmarks.train --data "$(DATA)"
	$(BIN)/python -m dashboard.benchmarks.explain --checkpoint checkpoints/cross_attention --data "$(DATA)" --n 20
	$(BIN)/python -m dashboard.benchmarks.pages --data "$(DATA)" --checkpoints checkpoints/ --browser

clean:
	rm -rf $(VENV) .pytest_cache
