#!/usr/bin/env bash
# One command that installs and builds everything on a fresh Debian 12 + Node 20 machine: the Debian packages the
# build, the checks and the tests need (cmake, g++, git, ccache, clang-format; docker-registry, openssl, skopeo, strace,
# util-linux's script/setpriv), then `npm ci`, which compiles the TypeScript and the native addon (llama.cpp,
# fetched through npm), here together with llama.cpp's own tools that the tests compare against; then the main job,
# offline: `npm run demo` pulls a generated model by reference from a local registry and runs it in-process.
# Safe to re-run: what is there already is skipped. LLAMA_OCI_SETUP_DEMO=0 skips the demo.
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
command -v ccache >/dev/null 2>&1 || missing+=(ccache)
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
command -v clang-format >/dev/null 2>&1 || missing+=(clang-format)
command -v strace >/dev/null 2>&1 || missing+=(strace)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

LLAMA_OCI_BUILD_TOOLS=1 npm ci --no-audit --no-fund

if [ "${LLAMA_OCI_SETUP_DEMO:-1}" != "0" ]; then
  npm run demo --silent
fi
