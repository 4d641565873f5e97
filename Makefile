# The few commands everyone runs. Each runs setup first (idempotent, quick when done).
.PHONY: setup demo test lint build

CARGO ?= cargo
DEMO_DIR := .cache/vigil/demo

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

lint: setup
	$(CARGO) fmt --all --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

# Format and lint gates, then every test (real GStreamer, real models).
test: lint
	$(CARGO) test --locked --workspace
	for f in config/*.toml config/policies/*.toml; do ./target/debug/vigil validate "$$f" || exit 1; done
