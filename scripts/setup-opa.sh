#!/bin/sh
# Create .opa-venv with a real Open Policy Agent engine, the Rego evaluator of the OPA back end's tests.
#
# opa-golib-python-bindings embeds OPA itself (github.com/open-policy-agent/opa/v1/rego, compiled as a Go
# c-shared library, libopabridge.so) behind a stdlib-only ctypes wrapper. Its metadata asks for Python
# >= 3.14, but the wrapper uses nothing newer than 3.10 (checked: it imports and evaluates on 3.11), so it
# is installed with --ignore-requires-python into its own venv and only ever run as a subprocess: microseg
# never imports it. The script then evaluates a one-line policy to prove the engine loads.
# Idempotent: an existing venv with the right version that evaluates is left alone; a broken one is rebuilt.
#   usage: scripts/setup-opa.sh        (or: make opa, once the Makefile has the target)
set -eu

BINDINGS_VERSION=0.4.4
ROOT=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
VENV="$ROOT/.opa-venv"
PYTHON=${PYTHON:-python3}

check() {
    "$VENV/bin/python" - "$BINDINGS_VERSION" <<'EOF'
import sys
from importlib.metadata import version

from opa_bindings import OpaEngine

assert version("opa-golib-python-bindings") == sys.argv[1], version("opa-golib-python-bindings")
with OpaEngine() as engine:
    engine.add_policy("probe.rego", "package probe\n\nallow if input.x == 1\n")
    assert engine.eval_document("probe.allow", {"x": 1}) is True
print("opa-golib-python-bindings", sys.argv[1], "evaluates Rego")
EOF
}

if [ -x "$VENV/bin/python" ] && check 2>/dev/null; then
    exit 0
fi

if [ -e "$VENV" ]; then
    echo "rebuilding $VENV (missing, wrong or broken opa-golib-python-bindings)"
    rm -rf -- "$VENV"
fi
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --no-deps --ignore-requires-python \
    "opa-golib-python-bindings==$BINDINGS_VERSION"
check
