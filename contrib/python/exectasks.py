"""Task functions for exec tasks run through runq.runner, used by the integration tests
(tests/exec.rs) and as examples: non-JSON arguments and return values (dates, decimals,
a custom class), a failing task, the child's environment, and children that ignore
SIGTERM or leave grandchildren behind (to show runq kills the whole process group)."""

import datetime
import decimal
import os
import signal
import subprocess
import time


class Money:
    """A custom class: pickled in the arguments and in the return value."""

    def __init__(self, amount, currency):
        self.amount = decimal.Decimal(amount)
        self.currency = currency

    def __eq__(self, other):
        return (
            isinstance(other, Money)
            and (self.amount, self.currency) == (other.amount, other.currency)
        )

    def __repr__(self):
        return 'Money(%r, %r)' % (str(self.amount), self.currency)

    def doubled(self):
        return Money(self.amount * 2, self.currency)


def next_payment(day, rate, money=None):
    """(day + 1 day, rate * 2, money doubled, the argument types)."""
    return (
        day + datetime.timedelta(days=1),
        rate * 2,
        money.doubled() if money is not None else None,
        [type(a).__name__ for a in (day, rate, money)],
    )


def add(a, b):
    return a + b


def nothing():
    """Returns None."""
    return None


def boom(message):
    """Prints a line to stdout, then raises ValueError(message)."""
    print('about to fail')
    raise ValueError(message)


def whoami(*args, **kwargs):
    """The runq variables the child sees, and its arguments."""
    return {
        'env': {k: v for k, v in os.environ.items() if k.startswith('RUNQ_')},
        'args': list(args),
        'kwargs': kwargs,
    }


def _write_pids(pidfile, pids):
    tmp = pidfile + '.tmp'
    with open(tmp, 'w') as f:
        f.write(' '.join(str(p) for p in pids))
    os.replace(tmp, pidfile)


def stubborn(pidfile):
    """Ignores SIGTERM, starts a grandchild (`sleep 1000`, which inherits that), writes
    both pids to `pidfile` and sleeps forever: only SIGKILL ends either."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    grandchild = subprocess.Popen(['sleep', '1000'])
    _write_pids(pidfile, [os.getpid(), grandchild.pid])
    while True:
        time.sleep(1)


def polite(pidfile):
    """Starts a grandchild (`sleep 1000`), writes both pids to `pidfile`, and sleeps; on
    SIGTERM writes `<pidfile>.term` and exits."""

    def on_term(signum, frame):
        with open(pidfile + '.term', 'w') as f:
            f.write('SIGTERM')
        os._exit(143)

    signal.signal(signal.SIGTERM, on_term)
    grandchild = subprocess.Popen(['sleep', '1000'])
    _write_pids(pidfile, [os.getpid(), grandchild.pid])
    while True:
        time.sleep(1)


def whoami_after(runid, seconds):
    """Sleeps `seconds`, then reports like `whoami` (a run-state task holding locks)."""
    import time
    time.sleep(float(seconds))
    return whoami(runid, seconds)


def stubborn_run(runid, pidfile):
    """`stubborn` as a run-state task: the runid first, as WEPPcloud tasks take it."""
    return stubborn(pidfile)
