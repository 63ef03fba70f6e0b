#!/usr/bin/env bash
# Installs what building (`build`) or testing (`test`) Kura needs and is missing.
# Idempotent and quiet when everything is there. Runs as root on Debian 12
# (as CI and the dev machines do); otherwise uses sudo when available.
set -euo pipefail

mode="${1:-build}"
SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then
    echo "install-deps: apt-get update"
    $SUDO apt-get update -qq
    apt_updated=1
  fi
  echo "install-deps: apt-get install $*"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

# --- build: libclang for librocksdb-sys' bindgen (protoc is vendored by a crate), libssl ---
missing=()
# (libclang-cpp, which a fresh machine may have, is not what bindgen loads.)
if [ -z "${LIBCLANG_PATH:-}" ] && ! dpkg -s libclang-dev >/dev/null 2>&1; then
  missing+=(libclang-dev)
fi
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
# libcrypto for the gateway's ETag MD5 (decision 0040), found through pkg-config
dpkg -s libssl-dev >/dev/null 2>&1 || missing+=(libssl-dev)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
command -v c++ >/dev/null 2>&1 || missing+=(g++)
if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo is missing; Kura needs the Rust toolchain (rustup) installed" >&2
  exit 1
fi

[ "$mode" = test ] || exit 0

# --- test: cargo-nextest and the real S3 clients the end-to-end tests drive ---
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "install-deps: cargo install cargo-nextest"
  cargo install cargo-nextest --locked
fi
missing=()
command -v rclone >/dev/null 2>&1 || missing+=(rclone)
command -v s3cmd >/dev/null 2>&1 || missing+=(s3cmd)
# headless Chromium: tests/py/tagging_cors.py fetches from another origin as a browser does
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v restic >/dev/null 2>&1 || missing+=(restic)
if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
# boto3 and the aws CLI from PyPI: current botocore sends aws-chunked bodies with
# a CRC32 trailer by default, the path most SDK users hit.
if ! python3 -c 'import boto3' >/dev/null 2>&1 || ! command -v aws >/dev/null 2>&1; then
  echo "install-deps: pip install boto3 awscli"
  python3 -m pip install -q boto3 awscli 2>/dev/null || python3 -m pip install -q --break-system-packages boto3 awscli
fi
