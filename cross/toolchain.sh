#!/usr/bin/env bash
# Installs what a Docker-free cross build of pimesh needs for one target, and nothing that is
# already there: the Rust standard library for the target (rustup) and Debian's cross linker
# and its C library (apt, as root or through sudo). The linkers are named in .cargo/config.toml.
#
#   cross/toolchain.sh aarch64-unknown-linux-musl
set -euo pipefail

target="${1:?usage: cross/toolchain.sh TARGET (e.g. aarch64-unknown-linux-musl)}"

case "$target" in
  aarch64-unknown-linux-gnu | aarch64-unknown-linux-musl)
    linker=aarch64-linux-gnu-gcc packages="gcc-aarch64-linux-gnu libc6-dev-arm64-cross" ;;
  armv7-unknown-linux-gnueabihf)
    linker=arm-linux-gnueabihf-gcc packages="gcc-arm-linux-gnueabihf libc6-dev-armhf-cross" ;;
  *)
    echo "cross/toolchain.sh: no Docker-free recipe for $target." >&2
    echo "  Supported: aarch64-unknown-linux-musl, aarch64-unknown-linux-gnu, armv7-unknown-linux-gnueabihf." >&2
    echo "  For ARMv6 (Pi Zero W, Pi 1) use cross with Docker; see cross/README.md." >&2
    exit 2 ;;
esac

if ! rustc --print target-libdir --target "$target" 2>/dev/null | xargs -r test -d; then
  if ! command -v rustup >/dev/null 2>&1; then
    echo "cross/toolchain.sh: the Rust standard library for $target is missing and rustup is not" >&2
    echo "  installed; install rustup, or your distribution's rust-std for $target." >&2
    exit 1
  fi
  echo "cross/toolchain.sh: rustup target add $target"
  rustup target add "$target"
fi

# The cross gcc links; its C library (only a Recommends of gcc) holds the gnu targets' crt files.
missing=""
for package in $packages; do
  if command -v dpkg-query >/dev/null 2>&1; then
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $package"
  elif ! command -v "$linker" >/dev/null 2>&1; then
    missing="$missing $package"
  fi
done
if [ -n "$missing" ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || {
      echo "cross/toolchain.sh: missing$missing; as root run: apt-get install$missing" >&2
      exit 1
    }
    sudo=sudo
  fi
  echo "cross/toolchain.sh: apt-get install$missing (for $linker)"
  $sudo apt-get update -qq
  # shellcheck disable=SC2086 # one word per package
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing
fi
