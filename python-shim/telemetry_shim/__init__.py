"""Records Python calls and exceptions with sys.monitoring (PEP 669) and streams them to telemetry-agent.

Public API::

    import telemetry_shim
    telemetry_shim.start()            # True when recording; never raises
    telemetry_shim.stop()             # flush, say goodbye, tear down; never raises
    telemetry_shim.is_active()
    telemetry_shim.mark_ready()       # the program is ready: the start-up phase ends here
    telemetry_shim.default_socket_path()

Stdlib only; Python 3.12+. On older interpreters start() warns once and returns False.
"""

from ._package import PACKAGE_DIR as SHIM_PACKAGE_DIR, VERSION as __version__

__all__ = [
    "__version__",
    "SHIM_PACKAGE_DIR",
    "start",
    "stop",
    "is_active",
    "mark_ready",
    "default_socket_path",
]


def default_socket_path():
    """$TELEMETRY_AGENT_SOCKET, else $XDG_RUNTIME_DIR/telemetry-agent.sock, else /tmp/telemetry-agent-<uid>.sock."""
    from ._settings import default_socket_path

    return default_socket_path()


def start(socket_path=None, *, service_name=None, calls=True, exceptions=True, mode=None):
    """Start recording calls and exceptions and streaming them to the agent at socket_path.

    `mode` is "full" (every call), "burst" (calls in short windows, scaled by the agent) or
    "exceptions" (no calls); default: $TELEMETRY_SHIM_MODE, else "full". `calls=False` is the
    exceptions mode; `exceptions` records every exception with its fate (each works alone).
    Idempotent and never raises. Returns True when the shim is
    recording, False (after one warning on stderr) when it cannot run: Python older than 3.12,
    no free sys.monitoring tool id, or nothing to record. Connecting happens on the shim's own
    thread, so this never waits for the agent.
    """
    try:
        from . import _control
    except BaseException:  # Python < 3.12 syntax or a broken install: never break the host
        _warn_once_fallback()
        return False
    return _control.start(socket_path, service_name, calls=calls, exceptions=exceptions, mode=mode)


def stop(timeout=2.0):
    """Stop recording, flush (waiting at most `timeout` seconds), send GOODBYE, tear down."""
    try:
        from . import _control
    except BaseException:
        return None
    _control.stop(timeout)
    return None


def is_active():
    """True while the shim holds a tool id and records calls."""
    try:
        from . import _control
    except BaseException:
        return False
    return _control.is_active()


def mark_ready():
    """The program is ready to serve: ends the start-up phase now (the first call wins, whatever
    TELEMETRY_SHIM_READY_ON says). Returns True when this call ended it; never raises."""
    try:
        from . import _control
    except BaseException:
        return False
    return _control.mark_ready()


_fallback_warned = False


def _warn_once_fallback():
    global _fallback_warned
    if _fallback_warned:
        return
    _fallback_warned = True
    try:
        import sys

        sys.stderr.write("telemetry_shim: disabled, Python 3.12+ with sys.monitoring is required\n")
    except BaseException:
        pass
