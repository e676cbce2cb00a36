"""Burst mode's schedule and the shim's own cost: when windows open and close, how long they last
under the overhead budget, and how many times the events may be switched.

Everything here runs on the sender thread. The cost is estimated, never timed on the hot path:
events recorded x the calibrated cost of one callback, plus the sender thread's CPU time (which
includes opening and closing windows).
"""

from _thread import get_ident
from time import perf_counter_ns, thread_time_ns

from ._settings import MIN_WINDOW_MS
from ._tables import identity

MIN_WINDOW_NS = int(MIN_WINDOW_MS * 1e6)
MAX_PERIOD_NS = 60 * 10**9
# Toggle rationing: CPython 3.13+ refuses every set_events change after about 16.7 million of
# them (2**24), for good. Two changes per window; after each million windows the period is
# multiplied by 4, so reaching 4 million windows (8 million changes) takes 2.7 years at a 1 s
# period, and the next million another 8.
WINDOWS_PER_RATION_STEP = 1_000_000
RATION_FACTOR = 4
CALIBRATION_CALLS = 500
# The callback called directly costs less than an event does in a real program (the interpreter's
# dispatch, re-instrumentation after each switch, caches): bench/run.py measured whole programs at
# about 1.5 times the calibration on 3.12 and 3.13.
CALIBRATION_MARGIN = 1.5
# With a budget the first window is short: its cost is unknown until it has run.
FIRST_WINDOW_NS = 2_000_000


def calibrate_event_cost(recorder):
    """Nanoseconds one call event costs: the recorder's real START callback (fast path, into a
    scratch buffer) called directly, minus what passing its ten arguments from Python costs, plus
    the call of a two-argument Python function (what the interpreter makes for each event).
    Runs once, on the sender thread, in about a millisecond of its CPU time."""
    code = calibrate_event_cost.__code__
    if recorder.native is not None:
        return _calibrate_native(code)
    callback = recorder.start_callback
    thread_keys = {get_ident(): 1 << 40}
    code_keys = {identity(code): 1 << 8}
    scratch = []
    args = (code, 0, None, thread_keys.get, code_keys.get, get_ident, perf_counter_ns, scratch, scratch.extend, 1 << 40)
    full = min(_cpu_ns_per_call(callback, args, scratch) for _ in range(3))
    passing = min(_cpu_ns_per_call(_ten_arguments, args, scratch) for _ in range(3))
    dispatch = min(_cpu_ns_per_call(_two_arguments, args[:2], scratch) for _ in range(3))
    return max(int((full - passing + dispatch) * CALIBRATION_MARGIN), 1)


def _calibrate_native(code):
    """The C callback's cost: the same measure, with the C callback's two arguments."""
    from ._native_path import calibration_callback

    callback, scratch = calibration_callback(code, get_ident())
    full = min(_cpu_ns_per_call(callback, (code, 0), scratch) for _ in range(3))
    return max(int(full * CALIBRATION_MARGIN), 1)


def _ten_arguments(code, offset, value, thread_key, code_key, ident, now, buf, extend, limit):
    return None


def _two_arguments(code, offset):
    return None


def _cpu_ns_per_call(function, args, scratch):
    del scratch[:]
    # CPU time of this thread: waiting for the GIL (the program runs meanwhile) is not cost.
    start = thread_time_ns()
    for _ in range(CALIBRATION_CALLS):
        function(*args)
    return (thread_time_ns() - start) / CALIBRATION_CALLS


class BurstWindows:
    def __init__(self, recorder, settings, now_ns):
        self.recorder = recorder
        self.base_period_ns = settings.period_ns
        self.budget = settings.budget
        stretch = settings.slowdown
        self.min_window_ns = int(MIN_WINDOW_NS * stretch)
        self.max_period_ns = int(MAX_PERIOD_NS * stretch)
        first_window_ns = int(FIRST_WINDOW_NS * stretch)
        self.window_ns = min(settings.window_ns, first_window_ns) if settings.budget > 0 else settings.window_ns
        self.period_ns = settings.period_ns
        self.next_open_ns = now_ns  # the first window opens at once: start-up is sampled too
        self.close_at_ns = None
        self.opened_at_ns = 0
        # How long a close takes after the sender wakes for it: it must take the GIL, which a
        # computing program hands over only after the switch interval (5 ms by default). The
        # sender wakes that much early, and no window can be shorter.
        self.close_latency_ns = 0
        self.windows = 0
        self.toggles = 0
        self.toggles_refused = 0
        self._events_at_open = 0
        self._cost_at_period_start = 0
        self._jitter_state = (now_ns | 1) & 0xFFFFFFFFFFFFFFFF

    @property
    def is_open(self):
        return self.close_at_ns is not None

    def seconds_until_due(self, now_ns):
        if self.recorder.windows_failed:
            return None
        due = self._close_due_ns() if self.close_at_ns is not None else self.next_open_ns
        return max(due - now_ns, 0) / 1e9

    def _close_due_ns(self):
        # Never at the opening itself: the sender still holds the GIL then, and the window
        # would close before the program ran a single line in it.
        return max(self.close_at_ns - self.close_latency_ns, self.opened_at_ns + self.min_window_ns)

    def service(self, now_ns, events_recorded, cost_so_far_ns, per_event_ns):
        """Opens or closes the window when due. `events_recorded` and `cost_so_far_ns` are the
        shim's running totals (for the budget). Returns True when a window just closed."""
        recorder = self.recorder
        if recorder.windows_failed or recorder.tool_id is None:
            return False
        if self.close_at_ns is not None:
            due_ns = self._close_due_ns()
            if now_ns < due_ns:
                return False
            self.toggles += 1
            end_ns = recorder.close_burst_window()
            self.close_at_ns = None
            if end_ns is None:
                # A first invocation that started inside the window closed it then: its length says nothing
                # of what a window costs.
                self.next_open_ns = self.opened_at_ns + self._jittered(self.period_ns)
                return True
            if recorder.windows_failed:
                self.toggles_refused += 1
            # The wait from the due time (when the sender's sleep ended) to the switch, smoothed.
            self.close_latency_ns = (self.close_latency_ns + max(end_ns - due_ns, 0)) // 2
            self._adapt(end_ns - self.opened_at_ns, events_recorded - self._events_at_open, cost_so_far_ns, per_event_ns)
            self.next_open_ns = self.opened_at_ns + self._jittered(self.period_ns)
            return True
        if now_ns < self.next_open_ns:
            return False
        started = perf_counter_ns()
        opened = recorder.open_burst_window(started)
        if opened is None:
            # One of the first invocations has the events on (its own window): tried again after it.
            self.next_open_ns = started + self.min_window_ns
            return False
        self.toggles += 1
        if not opened:
            self.toggles_refused += 1
            return False
        self.windows += 1
        self.opened_at_ns = started
        self.close_at_ns = started + self.window_ns
        self._events_at_open = events_recorded
        return False

    def _jittered(self, period_ns):
        """A period drawn uniformly from [0.5, 1.5) x `period_ns`: windows at a fixed rate would alias
        with a program that repeats itself at a related rate and see the same phase every time.
        (xorshift64: the random module costs milliseconds to import.)"""
        state = self._jitter_state
        state ^= (state << 13) & 0xFFFFFFFFFFFFFFFF
        state ^= state >> 7
        state ^= (state << 17) & 0xFFFFFFFFFFFFFFFF
        self._jitter_state = state
        return period_ns // 2 + (state % 1024) * period_ns // 1024

    def close_for_stop(self):
        """The shim is stopping (its events are already off): the open window gets its WINDOW_END. The
        stop's own set_events change closed it, and counts as its closing toggle (two per window)."""
        if self.close_at_ns is not None:
            self.close_at_ns = None
            self.toggles += 1
            self.recorder.close_burst_window(switch_events=False)

    def _adapt(self, window_ns, window_events, cost_so_far_ns, per_event_ns):
        """Chooses the next window length (and period) from what the last period cost."""
        period_cost = cost_so_far_ns - self._cost_at_period_start
        self._cost_at_period_start = cost_so_far_ns
        period_floor = self.base_period_ns * RATION_FACTOR ** (self.windows // WINDOWS_PER_RATION_STEP)
        if self.budget <= 0:
            self.period_ns = max(self.base_period_ns, period_floor)
            return
        event_cost = window_events * per_event_ns
        fixed_cost = max(period_cost - event_cost, 0)  # toggles, re-instrumentation, the sender
        cost_per_window_ns = event_cost / window_ns if window_ns > 0 else 0.0
        allowed = self.budget * self.period_ns - fixed_cost
        if cost_per_window_ns <= 0:
            target = self.period_ns / 4
        else:
            target = allowed / cost_per_window_ns
        # At most twice the last window: a window that caught little (the program waited) says
        # little about what the next one costs when the program computes again.
        target = min(target, self.period_ns / 4, 2 * max(window_ns, self.window_ns))
        window = int(0.5 * self.window_ns + 0.5 * max(target, 0))
        shortest = max(self.min_window_ns, self.close_latency_ns)
        if target < shortest:
            self.period_ns = min(self.period_ns * 2, self.max_period_ns)
        elif target > 4 * shortest and self.period_ns > self.base_period_ns:
            self.period_ns = max(self.period_ns // 2, self.base_period_ns)
        self.period_ns = max(self.period_ns, period_floor)
        self.window_ns = max(shortest, min(window, self.period_ns // 4))

