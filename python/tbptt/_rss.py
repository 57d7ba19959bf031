"""How far a block of work raised this process's resident memory, at its peak (Linux's VmHWM,
reset through /proc/self/clear_refs): the sweep's `peak_rss_bytes`. None where the system does
not allow it."""

from __future__ import annotations


class PeakRSS:
    """How far `train` calls raised the resident memory of this process, at their peak (Linux).

    Around every call: reset the peak (VmHWM) to the current RSS, then read it after the call.
    Growth that stays after a call (the engine's window, allocated at the first call) is carried
    into the next; memory used between calls (evaluation) is not counted. None elsewhere."""

    def __init__(self):
        self.ok = _reset_peak()
        self.held = self.peak = 0
        self.before_call = None

    def before(self):
        if self.ok:
            _reset_peak()
            self.before_call = _status_bytes("VmRSS")

    def after(self):
        if self.ok and self.before_call is not None:
            high, now = _status_bytes("VmHWM"), _status_bytes("VmRSS")
            if high is None or now is None:
                self.ok = False
                return
            self.peak = max(self.peak, self.held + high - self.before_call)
            self.held += now - self.before_call

    def peak_growth(self):
        return max(0, self.peak) if self.ok else None


def _status_bytes(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_peak():
    """Reset VmHWM (the peak RSS) to the current RSS; False where the system does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _status_bytes("VmHWM") is not None and _status_bytes("VmRSS") is not None
