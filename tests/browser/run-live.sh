#!/usr/bin/env bash
# Runs the live web UI's browser test against a real `telemetry-agent serve --http` with real shimmed programs.
# AGENT_DLL defaults to the Release build; TELEMETRY_PYTHON to the first Python >= 3.12 found.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../../scripts/common.sh"

"$here/setup.sh"
export AGENT_DLL="${AGENT_DLL:-$REPO_ROOT/agent/src/TelemetryAgent/bin/Release/net10.0/telemetry-agent.dll}"
[ -f "$AGENT_DLL" ] || die "no agent at $AGENT_DLL: build it first (dotnet build -c Release)"
export TELEMETRY_PYTHON="${TELEMETRY_PYTHON:-$(find_python)}"
cd "$here"
mkdir -p .generated
node --test --test-reporter=spec live.test.mjs
