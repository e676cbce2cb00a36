# Shared by the scripts in this folder: locating tools, printing steps. Source it; do not run it.
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

step() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 2; }

# Prints "major minor" of a Python interpreter, or nothing if it does not run.
python_version_of() { "$1" -I -c 'import sys; print(*sys.version_info[:2])' 2>/dev/null || true; }

is_312_or_later() {
    local v; v=$(python_version_of "$1"); [ -n "$v" ] || return 1
    set -- $v; [ "$1" -gt 3 ] || { [ "$1" -eq 3 ] && [ "$2" -ge 12 ]; }
}

pyenv_root() {
    if [ -n "${PYENV_ROOT:-}" ]; then echo "$PYENV_ROOT";
    elif command -v pyenv >/dev/null 2>&1; then pyenv root;
    else echo "$HOME/.pyenv"; fi
}

# Every Python >= 3.12 on this machine, one path per line: TELEMETRY_PYTHON, then PATH, then pyenv.
# The same order the agent uses (agent/src/TelemetryAgent/Cli/PythonLocator.cs).
all_pythons() {
    local seen="" candidate real
    {
        [ -n "${TELEMETRY_PYTHON:-}" ] && echo "$TELEMETRY_PYTHON"
        for name in python3.15 python3.14 python3.13 python3.12 python3 python; do command -v "$name" || true; done
        ls -d "$(pyenv_root)"/versions/3.1[2-9]*/bin/python3 2>/dev/null | sort -rV || true
    } | while read -r candidate; do
        [ -x "$candidate" ] || continue
        real=$(readlink -f "$candidate")
        case " $seen " in *" $real "*) continue ;; esac
        seen="$seen $real"
        is_312_or_later "$candidate" && echo "$candidate"
    done
}

# The first Python >= 3.12, or a clear error.
find_python() {
    local first; first=$(all_pythons | head -n 1)
    [ -n "$first" ] || die "no Python 3.12 or later found (sys.monitoring needs it): set TELEMETRY_PYTHON, put one on PATH, or install one with pyenv"
    echo "$first"
}

# Builds the shim for every Python >= 3.12 found, as installing it would: its C callbacks (one line each: built,
# or why not; without them the shim records with its Python callbacks) and its bytecode. Without the bytecode,
# where no process may write it (PYTHONDONTWRITEBYTECODE, a read-only tree), every process start compiles the
# shim again: importing it took 192 million instructions without its bytecode, 33 million with it (3.12).
# Extra arguments go to the C build step (--require, --werror).
build_shim() {
    local python
    for python in $(all_pythons); do
        "$python" -I "$REPO_ROOT/python-shim/build_backend/telemetry_shim_native.py" "$@" >&2
        "$python" -I -m compileall -q "$REPO_ROOT/python-shim/telemetry_shim" >&2
    done
}

build_agent() {
    command -v dotnet >/dev/null 2>&1 || die "the .NET 10 SDK (dotnet) is not on PATH"
    step "building the agent (dotnet build -c Release)"
    dotnet build "$REPO_ROOT/TelemetryAgent.sln" -c Release -v quiet -nologo -clp:NoSummary >&2
}

AGENT_DLL="$REPO_ROOT/agent/src/TelemetryAgent/bin/Release/net10.0/telemetry-agent.dll"
telemetry_agent() { dotnet "$AGENT_DLL" "$@"; }
