#!/bin/sh
# Builds {{name}}.wasm from app.py with componentize-py: the one
# $COMPONENTIZE_PY names, else the one in .venv, installed there at the
# version requirements.txt pins on the first build.
set -eu
cd "$(dirname "$0")"
if [ -z "${COMPONENTIZE_PY:-}" ]; then
    if [ ! -x .venv/bin/componentize-py ]; then
        python3 -m venv .venv
        .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
    fi
    COMPONENTIZE_PY=.venv/bin/componentize-py
fi
"$COMPONENTIZE_PY" -d wit -w plugin componentize app -o {{name}}.wasm
echo "built {{name}}.wasm"
