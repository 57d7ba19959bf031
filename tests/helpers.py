"""Helpers shared by several test files: `from helpers import ...` (pytest puts this folder on
sys.path, as it has no __init__.py)."""

import numpy as np


def fd_gradient(fun, theta, eps=1e-6):
    """Central finite differences of the scalar fun at theta, one parameter at a time."""
    g = np.zeros_like(theta)
    for j in range(theta.size):
        tp, tm = theta.copy(), theta.copy()
        tp[j] += eps
        tm[j] -= eps
        g[j] = (fun(tp) - fun(tm)) / (2 * eps)
    return g


# Source text for the child processes that measure memory (they run with `python -c`):
# status_kib(field) is a field of /proc/self/status in KiB, e.g. VmRSS or VmHWM.
STATUS_KIB = r"""
def status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)
"""
