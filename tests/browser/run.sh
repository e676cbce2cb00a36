#!/usr/bin/env bash
# Runs the flame graph browser test. Given FLAMEGRAPH_HTML (a page from a real run), it tests that page;
# otherwise it first has the xunit tests write sample pages to .generated/ and tests those.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

"$here/setup.sh"

if [ -z "${FLAMEGRAPH_HTML:-}" ]; then
  dotnet test "$repo/tests/TelemetryAgent.Profiling.Tests" --nologo -v quiet \
    --filter "FullyQualifiedName~FlameGraphHtmlFileTests.Writes_sample_pages_for_the_browser_test"
fi

cd "$here"
tests=(flamegraph.test.mjs)
# The real speedscope viewer, on a profile.speedscope.json from a real run (given, or next to the page).
speedscope_json="${SPEEDSCOPE_JSON:-$(dirname "${FLAMEGRAPH_HTML:-/nonexistent}")/profile.speedscope.json}"
if [ -f "$speedscope_json" ]; then
  export SPEEDSCOPE_JSON="$speedscope_json"
  # profile.pb.gz of the same run, opened in speedscope as pprof.
  export PPROF_GZ="${PPROF_GZ:-$(dirname "$speedscope_json")/profile.pb.gz}"
  tests+=(speedscope.test.mjs)
fi
mkdir -p .generated
node --test --test-reporter=spec "${tests[@]}"
