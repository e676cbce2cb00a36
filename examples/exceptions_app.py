"""Exceptions fixture: every kind of exception the shim records, with a known fate each.

A note added in a handler and re-raised; `raise ... from ...`, an implicit context and `from None`;
an ExceptionGroup split by `except*`; exceptions thrown into a generator and a coroutine; one
unwinding through 50 frames; a with-block whose __exit__ swallows one; one swallowed by hasattr();
one escaping a thread; one raised in __del__ (unraisable); one reaching asyncio's handler; classes
whose __str__ raises or sleeps (never called by the shim); 10,000 KeyErrors with distinct messages
from one line (a few records, the rest tallied). With --escape, it ends with an exception escaping
the program (exit status 1). No clock or randomness decides anything; runs in about a second.

    python examples/exceptions_app.py
    python -m telemetry_shim examples/exceptions_app.py --escape
"""

import asyncio
import contextlib
import sys
import threading
import time


class SettingsError(Exception):
    pass


def parse_port(text):
    return int(text)


def load_settings(text):
    try:
        return parse_port(text)
    except ValueError as error:
        error.add_note("while reading settings.toml, key 'port'")
        raise


def note_and_reraise():
    try:
        load_settings("eighty")
    except ValueError:
        return "note added, re-raised, handled"


def chains():
    try:
        try:
            {}["database"]
        except KeyError as missing:
            raise SettingsError("database not configured") from missing
    except SettingsError:
        pass
    try:
        try:
            1 / 0
        except ZeroDivisionError:
            [][0]  # implicit context: the ZeroDivisionError
    except IndexError:
        pass
    try:
        try:
            int("x")
        except ValueError:
            raise LookupError("hidden cause") from None
    except LookupError:
        pass
    return "cause, context, from None"


def groups():
    def validate():
        raise ExceptionGroup("2 fields invalid", [ValueError("name"), TypeError("age"),
                                                  ExceptionGroup("address", [KeyError("zip")])])

    def check():
        try:
            validate()
        except* ValueError:
            pass

    try:
        check()
    except* TypeError:
        pass
    except* KeyError:
        pass
    return "group split by except*"


def thrown_in():
    def worker():
        try:
            yield 1
        except KeyError:
            yield 2

    generator = worker()
    next(generator)
    generator.throw(KeyError("stop"))
    generator.close()

    class Suspend:
        def __await__(self):
            yield

    async def waiting():
        try:
            await Suspend()
        except TimeoutError:
            return "coroutine recovered"

    coroutine = waiting()
    coroutine.send(None)
    try:
        coroutine.throw(TimeoutError("slow upstream"))
    except StopIteration as done:
        return done.value
    return "coroutine did not finish"


def dive(depth):
    if depth == 1:
        raise RecursionError("bottom of 50 frames")
    return dive(depth - 1)


def deep():
    try:
        dive(50)
    except RecursionError:
        return "unwound 50 frames"


class Quiet:
    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        return kind is ConnectionError


def swallowed():
    with Quiet():
        raise ConnectionError("swallowed by __exit__")
    with contextlib.suppress(FileNotFoundError):
        open("/nonexistent/telemetry-example")

    class Lazy:
        @property
        def value(self):
            raise AttributeError("not loaded")

    return "with-blocks and hasattr: %s" % hasattr(Lazy(), "value")


def thread_escape():
    def crash():
        raise BrokenPipeError("uploader lost its connection")

    worker = threading.Thread(target=crash, name="uploader")
    worker.start()
    worker.join()
    return "thread escape"


class Ledger:
    def __del__(self):
        raise BufferError("ledger not flushed")


def unraisable():
    ledger = Ledger()
    del ledger
    return "unraisable in __del__"


def asyncio_unhandled():
    def callback():
        raise ArithmeticError("in a loop callback")

    async def main():
        asyncio.get_running_loop().call_soon(callback)
        await asyncio.sleep(0.01)

    asyncio.run(main())
    return "asyncio handler"


class RaisingStr(Exception):
    def __str__(self):
        raise RuntimeError("__str__ must not be called")


class SleepingStr(Exception):
    def __str__(self):
        time.sleep(10)
        return "late"


def hostile():
    for cls in (RaisingStr, SleepingStr):
        try:
            raise cls("payload")
        except cls:
            pass
    return "hostile __str__ never called"


def many():
    for i in range(10000):
        try:
            raise KeyError("session-%d" % i)
        except KeyError:
            pass
    return "10000 KeyErrors"


def main(argv):
    for step in (note_and_reraise, chains, groups, thrown_in, deep, swallowed, thread_escape, unraisable,
                 asyncio_unhandled, hostile, many):
        print(step())
    if "--escape" in argv:
        raise SettingsError("escaping the program on purpose")


if __name__ == "__main__":
    main(sys.argv[1:])
