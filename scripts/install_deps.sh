#!/usr/bin/env bash
# Installs every Debian package gum_train needs to build, run and test. Idempotent and
# non-interactive; run as root (or with sudo) on Debian 12. Nothing is downloaded outside
# the package manager. The CUDA toolkit comes from the machine image, not from here.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config git
  libcxxopts-dev nlohmann-json3-dev libspdlog-dev
  libsentencepiece-dev sentencepiece
  libpcre2-dev libutf8proc-dev
  catch2
  libopenmpi-dev openmpi-bin
  libopenblas-dev liblapacke-dev
  zlib1g-dev
  clang-14 libclang-rt-14-dev libomp-14-dev llvm-14
  python3 python3-torch python3-numpy python3-matplotlib python3-venv
  fortunes fortunes-min dict-gcide
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install_deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
