"""A tiny module for the integration tests (the function of the RQ protocol captures)."""


def add(a, b):
    return a + b
