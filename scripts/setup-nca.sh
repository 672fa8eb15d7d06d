#!/bin/sh
# Create .nca-venv with network-config-analyzer, the independent NetworkPolicy oracle of the tests.
#
# NCA lives in its own virtual environment and is only ever run as a subprocess: it pins its own
# dependencies (greenery, networkx, lxml, ...) and keeps global state, and microseg must not import
# it. Idempotent: an existing venv with the right version is left alone; a broken one is rebuilt.
#   usage: scripts/setup-nca.sh        (or: make nca)
set -eu

NCA_VERSION=2.1.0
ROOT=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
VENV="$ROOT/.nca-venv"
PYTHON=${PYTHON:-python3}

if [ -x "$VENV/bin/nca" ] && "$VENV/bin/nca" --version 2>/dev/null | grep -qx "NCA version $NCA_VERSION"; then
    echo "network-config-analyzer $NCA_VERSION already installed in $VENV"
    exit 0
fi

if [ -e "$VENV" ]; then
    echo "rebuilding $VENV (missing or wrong network-config-analyzer)"
    rm -rf -- "$VENV"
fi
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet "network-config-analyzer==$NCA_VERSION"
"$VENV/bin/nca" --version
