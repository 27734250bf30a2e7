#!/bin/sh
# Builds {{name}}.wasm from agent.ts: tsc compiles it into out/ beside the
# helper, then componentize-js builds the component. Each tool is the one
# $TSC or $COMPONENTIZE_JS names, else the one package.json pins,
# installed into node_modules on the first build.
set -eu
cd "$(dirname "$0")"
if [ -z "${TSC:-}" ] || [ -z "${COMPONENTIZE_JS:-}" ]; then
    [ -x node_modules/.bin/componentize-js ] || npm install --silent --no-audit --no-fund
fi
"${TSC:-node_modules/.bin/tsc}" -p tsconfig.json
cp agentbox.js out/
"${COMPONENTIZE_JS:-node_modules/.bin/componentize-js}" out/agent.js -w wit -n plugin -o {{name}}.wasm
echo "built {{name}}.wasm"
