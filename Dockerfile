# syntax=docker/dockerfile:1
# mixer-ext: one image for the worker (`mixer-ext run`) and the embedded room server
# (`mixer-ext room-server`).  Build from the top of the checkout:
#
#   docker build -t registry.example.com/mixer-ext:0.1.0 .
#
# Three stages: `web` fetches hls.js at the version pinned in package-lock.json (the
# player page loads it from its own directory) and builds the player module's <script>
# file, `build` installs the package and its runtime dependencies into a venv (PyAV and aiortc wheels bundle FFmpeg, libopus, libvpx
# and libsrtp, so the runtime needs no system codec packages), `runtime` is that venv on
# a slim Python with a non-root user.  No compiler, npm, pip cache or dev extra ships.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG NODE_IMAGE=node:20-bookworm-slim

FROM ${NODE_IMAGE} AS web
WORKDIR /web
COPY package.json package-lock.json ./
# --omit=dev: hls.js and esbuild only (playwright-core, twilio, twilio-video are for the tests).
RUN npm ci --omit=dev --no-audit --no-fund --loglevel=error \
 && test -s node_modules/hls.js/dist/hls.min.js && test -s node_modules/hls.js/dist/hls.min.mjs
# The player module's <script> build (twilio-live-player.min.js, as the Live Player SDK
# shipped it): live-player.js and hls.js in one file, by package.json's build:player.
COPY player_demo/live-player.js player_demo/hls-config.js player_demo/payload.js player_demo/source.js ./player_demo/
RUN mkdir -p player_demo/vendor \
 && cp node_modules/hls.js/dist/hls.min.mjs player_demo/vendor/ \
 && npm run --silent build:player \
 && test -s player_demo/vendor/twilio-live-player.min.js

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/mixer-ext
WORKDIR /src
# A plain (non-editable) install without the dev extra: runtime dependencies only, plus
# the kubernetes client, for `mixer-ext api` with MIXER_API_LAUNCHER=kubernetes (the chart).
# The dependencies first, from pyproject.toml alone (an empty package and README stand in
# for the real ones and are uninstalled): this layer stays cached until pyproject.toml
# changes, so a change to the code or the README reinstalls only the package.
COPY pyproject.toml ./
RUN mkdir mixer_ext && touch mixer_ext/__init__.py README.md \
 && /opt/mixer-ext/bin/pip install ".[kubernetes]" \
 && /opt/mixer-ext/bin/pip uninstall --yes mixer-ext \
 && rm -rf mixer_ext README.md build ./*.egg-info
COPY README.md ./
COPY mixer_ext ./mixer_ext
RUN /opt/mixer-ext/bin/pip install --no-deps . \
 && /opt/mixer-ext/bin/pip check \
 && /opt/mixer-ext/bin/python -c "import av, aiortc, kubernetes, mixer_ext.cli"

FROM ${PYTHON_IMAGE} AS runtime
# MALLOC_ARENA_MAX=2: glibc's per-thread arenas otherwise keep what FFmpeg frees per HLS
# segment and RSS climbs ~10 MB per audio minute (issue 16.0, tests/test_output_rss.py)
ENV MALLOC_ARENA_MAX=2
ENV PATH=/opt/mixer-ext/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MIXER_HTTP_HOST=0.0.0.0 \
    MIXER_HLS_DIR=/data/hls \
    MIXER_PLAYER_DIR=/opt/mixer-ext/player_demo
# A fixed numeric uid/gid so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
RUN groupadd --system --gid 10001 mixer \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
      --shell /usr/sbin/nologin mixer \
 && mkdir -p /data \
 && chown 10001:10001 /data
COPY --from=build /opt/mixer-ext /opt/mixer-ext
COPY player_demo /opt/mixer-ext/player_demo
COPY --from=web /web/node_modules/hls.js/dist/hls.min.js /opt/mixer-ext/player_demo/vendor/hls.min.js
# the ES module build, which the page's live-player.js imports
COPY --from=web /web/node_modules/hls.js/dist/hls.min.mjs /opt/mixer-ext/player_demo/vendor/hls.min.mjs
# the <script> build of the player module, built in the web stage
COPY --from=web /web/player_demo/vendor/twilio-live-player.min.js /opt/mixer-ext/player_demo/vendor/twilio-live-player.min.js
USER 10001:10001
# /data holds HLS (MIXER_HLS_DIR) and relative file: recordings; mount a volume there
# when the root filesystem is read-only (the Helm chart mounts an emptyDir).
WORKDIR /data
# 8080: the worker's HTTP endpoint (MIXER_HTTP_PORT), 9090: /metrics (MIXER_METRICS_PORT),
# 7880: the embedded room server.  Nothing listens unless its setting or command says so.
EXPOSE 8080 9090 7880
ENTRYPOINT ["mixer-ext"]
CMD ["--help"]
