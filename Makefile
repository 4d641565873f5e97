# The few commands everyone runs. Each runs setup first (idempotent, quick when done).
.PHONY: setup demo test lint deny helm build

CARGO ?= cargo
DEMO_DIR := .cache/vigil/demo
# The tests' Python tools, which setup installs (scripts/requirements-test.txt).
VENV_PY := $(or $(VIGIL_CACHE_DIR),.cache/vigil)/venv/bin/python

setup:
	bash scripts/setup.sh

build: setup
	$(CARGO) build --locked --release -p vigil

# The main job on the embedded default config: scan a generated clip (the benign
# astronaut test image shown for 5 s, re-encoded) and print per-frame JSON + summary.
demo: build
	mkdir -p $(DEMO_DIR)
	gst-launch-1.0 -q filesrc location=.cache/vigil/testdata/astronaut.png ! decodebin ! videoconvert \
	  ! imagefreeze num-buffers=125 ! video/x-raw,framerate=25/1 ! videoconvert \
	  ! x264enc speed-preset=ultrafast bitrate=800 ! h264parse ! mp4mux ! filesink location=$(DEMO_DIR)/demo.mp4
	./target/release/vigil scan $(DEMO_DIR)/demo.mp4

# Supply-chain gate: cargo-deny against deny.toml (licences, bans, sources; advisories
# when a local RustSec copy exists), then proof that it catches violations.
deny: setup
	CARGO=$(CARGO) bash scripts/deny.sh
	CARGO=$(CARGO) bash scripts/deny.sh --self-test

lint: setup deny
	$(CARGO) fmt --all --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

# The Helm chart (helm/vigil), offline, in seconds: rendered by Helm's own engine and
# linted, every manifest validated against Kubernetes 1.33's schemas, compared with the
# golden renderings, wrong values refused, the alert rules through promtool (check and
# unit tests); then proof that the golden and rule checks bite.
helm: setup
	$(VENV_PY) scripts/check_helm.py
	$(VENV_PY) scripts/check_helm.py --self-test

# Supply-chain, format and lint gates, the chart, then every test (real GStreamer, real
# models), every shipped config validated, the chart's rendered configs included.
test: lint helm
	$(CARGO) test --locked --workspace
	for f in config/*.toml config/policies/*.toml; do ./target/debug/vigil validate "$$f" || exit 1; done
	$(VENV_PY) scripts/check_helm.py --validate-configs ./target/debug/vigil
