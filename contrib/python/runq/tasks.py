"""Python implementations of runq's built-in tasks, with the same results as the
native handlers in runq-worker (worker/src/tasks/builtin.rs)."""

import time


def noop():
    """Returns None."""
    return None


def echo(*args, **kwargs):
    """Returns {'args': [...], 'kwargs': {...}}."""
    return {'args': list(args), 'kwargs': kwargs}


def sleep(seconds):
    """Sleeps `seconds` and returns them."""
    time.sleep(seconds)
    return seconds


def fail(message='runq.tasks.fail called'):
    """Fails with RuntimeError(message)."""
    raise RuntimeError(message)
