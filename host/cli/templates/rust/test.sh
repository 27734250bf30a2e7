#!/bin/sh
# Builds the plugin and replays conversation.txt through it, one message or
# /tool call per line; exits 1 when a turn fails. $AGENTBOX names the
# agentbox command if it is not on PATH.
set -eu
cd "$(dirname "$0")"
"${AGENTBOX:-agentbox}" run . --var name=Ada --script conversation.txt
