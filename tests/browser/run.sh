#!/usr/bin/env bash
# Runs the flame graph browser test. Given FLAMEGRAPH_HTML (a page from a real run), it tests that page;
# otherwise it first has the xunit tests write sample pages to .generated/ and tests those.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

"$here/setup.sh"

if [ -z "${FLAMEGRAPH_HTML:-}" ]; then
  dotnet test "$repo/tests/TelemetryAgent.Profiling.Tests" --nologo -v quiet \
    --filter "FullyQualifiedName~FlameGraphHtmlWriterTests.Writes_sample_pages_for_the_browser_test"
fi

cd "$here"
node --test --test-reporter=spec flamegraph.test.mjs
