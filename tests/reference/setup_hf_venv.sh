#!/usr/bin/env bash
# Creates (once) a Python venv with Hugging Face transformers for the round-trip tests:
#   tests/reference/setup_hf_venv.sh VENV_DIR
# The venv sees the system site-packages (Debian's python3-torch 1.13 and numpy, importable only
# from /usr/bin/python3) and adds transformers 4.46.3 (the newest release that runs on torch 1.13
# here) and safetensors from PyPI.
# Exit codes: 0 ready (prints the venv's python), 3 PyPI unreachable or install failed (the caller
# reports the test as skipped), 1 anything else.
set -euo pipefail

VENV_DIR=${1:?usage: setup_hf_venv.sh VENV_DIR}
SYSTEM_PYTHON=${GUM_SYSTEM_PYTHON:-/usr/bin/python3}
TRANSFORMERS_VERSION=4.46.3

ready() {
  [ -x "$VENV_DIR/bin/python" ] &&
    "$VENV_DIR/bin/python" -c "import torch, safetensors, transformers, sys; sys.exit(transformers.__version__ != '$TRANSFORMERS_VERSION')" \
      >/dev/null 2>&1
}

mkdir -p "$(dirname "$VENV_DIR")"
# Test runners start several tests at once: one creates the venv, the others wait for it.
exec 9>"$VENV_DIR.lock"
flock 9

if ready; then
  echo "$VENV_DIR/bin/python"
  exit 0
fi

rm -rf "$VENV_DIR"
"$SYSTEM_PYTHON" -m venv --system-site-packages "$VENV_DIR" >&2
if ! "$VENV_DIR/bin/python" -m pip install --quiet --disable-pip-version-check --timeout 30 \
    "transformers==$TRANSFORMERS_VERSION" safetensors >&2; then
  echo "setup_hf_venv: could not install transformers==$TRANSFORMERS_VERSION from PyPI (offline?)" >&2
  rm -rf "$VENV_DIR"
  exit 3
fi
if ! ready; then
  echo "setup_hf_venv: transformers installed but does not import with the system torch" >&2
  "$VENV_DIR/bin/python" -c "import transformers" >&2 || true
  exit 1
fi
echo "$VENV_DIR/bin/python"
