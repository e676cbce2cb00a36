#!/bin/sh
# Builds the Lambda layer (a zip for `aws lambda publish-layer-version`) from the repository:
#   deploy/lambda/build-layer.sh [out-dir]     (default: deploy/lambda/out; needs the .NET SDK, zip, and a
#                                               CPython 3.12 or 3.13 with its headers per shim extension:
#                                               python3.12 and python3.13 on PATH, or PYTHONS="path ...")
# Layers unpack under /opt: extensions/telemetry-agent (the extension, started by Lambda at Init),
# telemetry-agent/ (the agent published self-contained for linux-x64 with ReadyToRun code, the shim beside it,
# exec-wrapper, and extension-launcher, built from extension-launcher.c with cc). The function sets AWS_LAMBDA_EXEC_WRAPPER=/opt/telemetry-agent/exec-wrapper and an OTLP endpoint
# (OTEL_EXPORTER_OTLP_ENDPOINT).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-"$here/out"}
layer="$out/layer"
rm -rf "$layer"
mkdir -p "$layer/extensions"

# The shim's C callbacks for each CPython found here; a function on another Python records with the shim's
# Python callbacks. Lambda's Python runtimes are glibc-based (Amazon Linux): build on a matching glibc.
pythons=${PYTHONS:-"python3.12 python3.13"}
for python in $pythons; do
    if command -v "$python" >/dev/null 2>&1; then
        "$python" -I "$root/python-shim/build_backend/telemetry_shim_native.py" --require --werror
    fi
done
# The shim ships with the agent (its project copies python-shim/telemetry_shim and the extensions built above).
dotnet publish "$root/agent/src/TelemetryAgent/TelemetryAgent.csproj" -c Release -r linux-x64 --self-contained \
    -p:PublishReadyToRun=true -o "$layer/telemetry-agent" --nologo
# Bytecode for each Python found, as installing the shim does: /opt is read-only on Lambda.
for python in $pythons; do
    if command -v "$python" >/dev/null 2>&1; then
        "$python" -I -m compileall -q "$layer/telemetry-agent/python-shim/telemetry_shim"
    fi
done
# The launcher registers before the .NET runtime starts (the extension's whole cost to Init); without a C compiler
# the agent registers itself, about 0.1 s later. Amazon Linux 2023 has glibc 2.34: the launcher needs no newer.
if command -v "${CC:-cc}" >/dev/null 2>&1; then
    "${CC:-cc}" -O2 -Wall -Wextra -Werror -o "$layer/telemetry-agent/extension-launcher" "$here/extension-launcher.c"
else
    echo "build-layer.sh: no C compiler (\$CC, cc): the layer has no launcher, and the agent registers itself" >&2
fi
cp "$here/layer/extensions/telemetry-agent" "$layer/extensions/telemetry-agent"
cp "$here/layer/telemetry-agent/exec-wrapper" "$layer/telemetry-agent/exec-wrapper"
chmod 755 "$layer/extensions/telemetry-agent" "$layer/telemetry-agent/exec-wrapper" "$layer/telemetry-agent/telemetry-agent"
rm -f "$out/telemetry-agent-layer.zip"
(cd "$layer" && zip -qry "$out/telemetry-agent-layer.zip" extensions telemetry-agent)
echo "$out/telemetry-agent-layer.zip"
