# The two commands of the README: `make demo` and `make test`.
# Both build .venv (and node_modules for the browser pieces) on a fresh machine.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed-stamp
NODE_STAMP := node_modules/.installed-stamp
HLSJS := player_demo/vendor/hls.min.js
HLSJS_MJS := player_demo/vendor/hls.min.mjs
LIVE_PLAYER := player_demo/vendor/twilio-live-player.min.js
LIVE_PLAYER_SRC := $(addprefix player_demo/,live-player.js hls-config.js payload.js source.js)
PYTEST_ARGS ?=

.PHONY: all setup demo test lint typecheck unit docs clean helm-lib helm-render helm-lint bench image image-ci

all: test

$(VENV_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The player page loads hls.js from its own directory: no build step, just a copy
# (the UMD build for pages that use window.Hls, the ES module for live-player.js).
$(HLSJS): $(NODE_STAMP)
	mkdir -p $(dir $@)
	cp node_modules/hls.js/dist/hls.min.js $@

$(HLSJS_MJS): $(NODE_STAMP)
	mkdir -p $(dir $@)
	cp node_modules/hls.js/dist/hls.min.mjs $@

# The <script> build of the Live Player SDK-compatible module (Twilio.Live.Player, as
# the SDK's twilio-live-player.min.js): live-player.js and hls.js in one IIFE, by esbuild.
# The command is package.json's `build:player` script, which the image's web stage runs too.
$(LIVE_PLAYER): $(NODE_STAMP) $(HLSJS_MJS) $(LIVE_PLAYER_SRC)
	npm run --silent build:player

setup: $(VENV_STAMP) $(NODE_STAMP) $(HLSJS) $(HLSJS_MJS) $(LIVE_PLAYER)

demo: setup
	$(VENV)/bin/mixer-ext demo

lint: $(VENV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV_STAMP)
	$(VENV)/bin/mypy

# The docs site (docs/, mkdocs.yml) into .cache/site; --strict fails on a broken link or
# anchor and on a page missing from the nav.
docs: $(VENV_STAMP)
	$(VENV)/bin/mkdocs build --strict --quiet

# The fast tests only (no browser, Janus, RTMP server or multi-second end-to-end run): a
# quick check while working; `make test` runs everything.
unit: $(VENV_STAMP)
	$(PY) -m pytest -m "not browser and not janus and not rtmp and not slow" $(PYTEST_ARGS)

# pytest exits 5 when it collected no test: that is a failure here, never hidden.
# --durations=30: every run's log names its slowest tests (the suite's time is watched).
test: setup lint typecheck docs helm-lib
	$(PY) -m pytest --durations=30 $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; \
	exit $$rc

# The full benchmarks (about 30 min; the README's tables come from runs of these scripts).
# `make test` runs each script only in its --quick form (tests/e2e/test_bench_smoke.py).
bench: setup
	$(PY) bench/core_tick.py
	$(PY) bench/encode_fanout.py
	$(PY) bench/capacity.py --backend embedded --steps 20,50,100
	$(PY) bench/capacity.py --backend janus --steps 20,50,100
	$(PY) bench/join_burst.py --steps 100,250
	$(PY) bench/silent.py
	$(PY) bench/talkers.py
	$(PY) bench/opus_decode.py
	$(PY) bench/mono_buffer.py
	$(PY) bench/latency.py
	$(PY) bench/glass_to_ear.py --seconds 60
	$(PY) bench/endurance.py

# Helm's own engine for the chart's tests: Helm v4's Go library as shipped in the PyPI
# wheel helm-sdkpy (loaded through ctypes by tests/deploy/helm_engine.py; the wheel wants
# Python >= 3.12, its library loads from any). The exact wheel is pinned by version and
# sha256 and only the library is kept, in .cache/helm-sdkpy/. A failed download never
# fails the build: the reason goes to .cache/helm-sdkpy/unavailable, and the Helm tests
# fail with it under CI=true and skip with it elsewhere (the next `make` tries again).
HELM_SDKPY_VERSION := 0.1.32
HELM_SDKPY_SHA256 := bcf5bf73cacc373bebedfb9c988969aa12a9eda86a140deba658fbf28eb789c5
HELM_STAMP := .cache/helm-sdkpy/$(HELM_SDKPY_SHA256).stamp

$(HELM_STAMP): | $(VENV_STAMP)
	$(PY) -m tests.deploy.helm_engine fetch --version $(HELM_SDKPY_VERSION) --sha256 $(HELM_SDKPY_SHA256)

helm-lib: $(HELM_STAMP)

# The chart's reference renderings (helm/rendered/), rendered by Helm itself, re-rendered
# after any chart change; tests/deploy/test_helm.py fails when they are stale.
helm-render: $(VENV_STAMP) helm-lib
	$(PY) -m tests.deploy.helm_engine render

# `helm lint` (Helm's own rules and schema validation) of the chart with every example.
helm-lint: $(VENV_STAMP) helm-lib
	$(PY) -m tests.deploy.helm_engine lint

# The container image with the Dockerfile's own base images (python:3.11-slim-bookworm,
# node:20-bookworm-slim from the registry), with Docker when its daemon answers, else
# Podman.  `make image IMAGE=registry.example.com/mixer-ext:0.1.0`.
IMAGE ?= mixer-ext:dev
image:
	@if docker info >/dev/null 2>&1; then engine=docker; \
	elif command -v podman >/dev/null; then engine=podman; \
	else echo "make image: neither Docker (with a running daemon) nor Podman is here" >&2; exit 2; fi; \
	echo "$$engine build --tag $(IMAGE) ."; \
	$$engine build --tag $(IMAGE) .

# The same Dockerfile on base images made here from Debian's packages (no registry
# needed; Podman and debootstrap, as root): what CI builds and tests/deploy/test_image.py runs.
IMAGE_CI ?= localhost/mixer-ext:ci
image-ci:
	.ci/image $(IMAGE_CI)

clean:
	rm -rf $(VENV) node_modules $(dir $(HLSJS)) .pytest_cache .mypy_cache .ruff_cache test-artifacts .cache
