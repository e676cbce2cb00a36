"""The escape hooks: sys.excepthook (ESCAPED_PROGRAM), threading.excepthook (ESCAPED_THREAD),
sys.unraisablehook (UNRAISABLE) and asyncio's BaseEventLoop.call_exception_handler
(ASYNCIO_UNHANDLED). They run on the program's thread whose exception escaped, conclude its flight
with that fate, and call what was installed before them with the same arguments, so that the
program prints and exits exactly as it would without the shim. install() and uninstall() run
where start() and stop() are called; asyncio's handler is wrapped once asyncio is imported (seen
by the sender's tick or by an exception callback).
"""

import sys
import threading

from .. import _wire

_dict_get = dict.get


class EscapeHooks:
    def __init__(self, flights):
        self.active = False  # installed and not uninstalled: an inactive hook only passes through
        self._flights = flights
        self._previous = {}
        self._originals = {}  # hook name -> the interpreter's own hook, whose original name now names ours
        self._asyncio_loop_class = None
        self._asyncio_original = None
        self._asyncio_wrapper = None
        self._hooks = self._make_hooks()

    def _make_hooks(self):
        hooks = self
        flights = self._flights

        def excepthook(exc_type, exc_value, exc_traceback):
            try:
                if hooks.active:
                    flights.escaped_program(exc_value)
            except BaseException:
                pass
            return hooks._previous["sys.excepthook"](exc_type, exc_value, exc_traceback)

        def threading_excepthook(args):
            try:
                if hooks.active:
                    flights.escaped(args.exc_value, _wire.FATE_ESCAPED_THREAD)
            except BaseException:
                pass
            return hooks._previous["threading.excepthook"](args)

        def unraisablehook(unraisable):
            try:
                if hooks.active:
                    flights.escaped(unraisable.exc_value, _wire.FATE_UNRAISABLE)
            except BaseException:
                pass
            return hooks._previous["sys.unraisablehook"](unraisable)

        return {"sys.excepthook": excepthook, "threading.excepthook": threading_excepthook,
                "sys.unraisablehook": unraisablehook}

    def install(self):
        """Chains our hooks in front of those installed now; each calls the previous one with
        the same arguments, so the program sees and prints exactly what it would without us.
        Where the hook installed now is the interpreter's own (sys.__excepthook__ and the like),
        that original name is given ours too: programs test `sys.excepthook is
        sys.__excepthook__` to learn whether anyone replaced the hook (code.InteractiveConsole
        then prints a shorter traceback), and the answer stays what it was."""
        self.active = True
        for name, hook in self._hooks.items():
            owner, attribute = _owner_and_attribute(name)
            current = getattr(owner, attribute)
            if current is hook:
                continue
            self._previous[name] = current
            # Named as the hook it wraps (functools.wraps's attributes), as the asyncio wrapper below: a test
            # of the module's __all__, or a program that reports which hook is set, sees the same names.
            for field in ("__module__", "__name__", "__qualname__", "__doc__"):
                try:
                    setattr(hook, field, getattr(current, field))
                except (AttributeError, TypeError):
                    pass
            hook.__wrapped__ = current
            setattr(owner, attribute, hook)
            original = "__%s__" % attribute
            if getattr(owner, original, None) is current:
                self._originals[name] = current
                setattr(owner, original, hook)

    def uninstall(self):
        """Restores each hook that is still ours, and each original name that still names ours;
        one the program replaced since stays as it is (ours, left in its chain, then only passes
        through)."""
        self.active = False
        for name, hook in self._hooks.items():
            owner, attribute = _owner_and_attribute(name)
            if getattr(owner, attribute, None) is hook and name in self._previous:
                setattr(owner, attribute, self._previous[name])
            original = "__%s__" % attribute
            if name in self._originals and getattr(owner, original, None) is hook:
                setattr(owner, original, self._originals.pop(name))
        loop_class = self._asyncio_loop_class
        if loop_class is not None:
            if loop_class.__dict__.get("call_exception_handler") is self._asyncio_wrapper:
                loop_class.call_exception_handler = self._asyncio_original
            self._asyncio_loop_class = None

    def hook_asyncio(self):
        """Wraps asyncio.BaseEventLoop.call_exception_handler once asyncio is imported (the shim
        never imports it itself). Returns whether it is wrapped."""
        if self._asyncio_loop_class is not None:
            return True
        if not self.active:
            return False
        base_events = sys.modules.get("asyncio.base_events")
        loop_class = getattr(base_events, "BaseEventLoop", None) if base_events is not None else None
        if loop_class is None:
            return False
        original = loop_class.__dict__.get("call_exception_handler")
        if original is None:
            return False
        hooks = self
        flights = self._flights

        def call_exception_handler(loop, context):
            try:
                if hooks.active and type(context) is dict:
                    flights.escaped(_dict_get(context, "exception"), _wire.FATE_ASYNCIO_UNHANDLED)
            except BaseException:
                pass
            return original(loop, context)

        for attribute in ("__name__", "__qualname__", "__doc__", "__module__"):
            setattr(call_exception_handler, attribute, getattr(original, attribute, None))
        call_exception_handler.__wrapped__ = original
        self._asyncio_original = original
        self._asyncio_wrapper = call_exception_handler
        self._asyncio_loop_class = loop_class
        loop_class.call_exception_handler = call_exception_handler
        return True


def _owner_and_attribute(name):
    return (sys, name[4:]) if name.startswith("sys.") else (threading, name[10:])
