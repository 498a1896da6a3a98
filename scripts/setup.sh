#!/usr/bin/env bash
# One command that installs and builds everything on a fresh Debian 12 + Node 20 machine: the Debian packages the
# build and the tests need (cmake, g++, git; docker-registry, openssl, skopeo, util-linux's script/setpriv), then
# `npm ci`, which compiles the TypeScript and the native addon (llama.cpp, fetched through npm), here together with
# llama.cpp's own tools that the tests compare against. Safe to re-run: what is there already is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v script >/dev/null 2>&1 || missing+=(bsdutils)
command -v setpriv >/dev/null 2>&1 || missing+=(util-linux)
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
command -v git >/dev/null 2>&1 || missing+=(git)
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

LLAMA_OCI_BUILD_TOOLS=1 npm ci --no-audit --no-fund
