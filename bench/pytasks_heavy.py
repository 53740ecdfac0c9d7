"""bench/compare.sh, Python tasks (b): a module that takes 0.5 s to import (standing in
for a real application's import cost: numpy, pandas, wepppy...); the function is light."""

import time

time.sleep(0.5)


def inc(x):
    return x + 1
