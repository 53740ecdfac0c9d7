"""bench/compare.sh, Python tasks (a): a light function, cheap to import."""


def inc(x):
    return x + 1
