# callbot: set up, run and test. `make run` and `make test` are the two commands of the README.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Debian packages: espeak-ng (French voice), sox; asterisk sounds (real French speech for tests);
# sip-tester (SIPp), baresip-core, kamailio: the SIP side's test user agents and dispatcher;
# postgresql: the transcript store's tests start a real server; chromium: the console's
# browser tests (Playwright drives Debian's chromium, never a downloaded browser);
# libjemalloc2: the workers' allocator (workers.allocator)
SYSTEM_PACKAGES := espeak-ng sox asterisk-core-sounds-fr-wav asterisk-core-sounds-fr \
                   sip-tester baresip-core kamailio postgresql chromium libjemalloc2
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup run test system venv models train bench clean

## setup: system packages, virtual environment, models, trained classifier, rendered answers
setup: system venv models train

system:
	@missing=""; for p in $(SYSTEM_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

venv: $(BIN)/callbot

$(BIN)/callbot: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $@

models: venv
	$(BIN)/callbot models install $(MODELS_FLAGS)

# Retrain only when the knowledge base changed (or no model yet): `make run` starts fast.
MODEL := models/intent-classifier.pkl
KB_FILES := $(shell find kb -type f 2>/dev/null)

train: $(MODEL)

$(MODEL): $(KB_FILES) | venv
	$(BIN)/callbot train

## run: set everything up, then answer calls on the embedded default configuration
## (SIP on 127.0.0.1:5060: Kamailio in front of two workers; Ctrl-C stops everything)
run: setup
	$(BIN)/callbot serve

## test: set everything up (with the engine stand-ins the tests use), then run the tests
test: MODELS_FLAGS = --test-models
test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) models/*/ models/*.pkl data/
