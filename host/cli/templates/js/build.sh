#!/bin/sh
# Builds {{name}}.wasm from agent.js with componentize-js: the one
# $COMPONENTIZE_JS names, else the one package.json pins, installed into
# node_modules on the first build.
set -eu
cd "$(dirname "$0")"
if [ -z "${COMPONENTIZE_JS:-}" ]; then
    [ -x node_modules/.bin/componentize-js ] || npm install --silent --no-audit --no-fund
    COMPONENTIZE_JS=node_modules/.bin/componentize-js
fi
"$COMPONENTIZE_JS" agent.js -w wit -n plugin -o {{name}}.wasm
echo "built {{name}}.wasm"
