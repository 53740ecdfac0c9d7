"""Writes the seed corpus for runq-fuzz: real RQ payloads and results from Python.

Run with the rq 3.0 venv: `.venv/rq3/bin/python fuzz/corpus/make_corpus.py`. Each file
is one `data` field (zlib-compressed, as RQ stores it) or one serialized return value;
the fuzz targets decode them as they are and mutate them.
"""
import datetime
import decimal
import json
import os
import pickle
import zlib

from rq.serializers import JSONSerializer

HERE = os.path.dirname(os.path.abspath(__file__))

CALLS = {
    "add": ("mymod.add", None, (2, 3), {}),
    "runid": ("wepppy.rq.project_rq.build_climate_rq", None, ("rlx-busy-anaconda",), {}),
    "kwargs": ("wepppy.rq.wepp_rq.run_wepp_rq", None, ("runid-1",),
               {"skip": False, "wepp_bin": "wepp_dcc52a6", "seconds": 1.5, "n": None}),
    "numbers": ("runq.tasks.echo", None, (list(range(3000)), [i / 7 for i in range(500)]), {}),
    "nested": ("runq.tasks.echo", None,
               ({"a": {"b": {"c": [1, [2, [3, [4, {"d": "é€"}]]]]}}, "neg": -2**62},),
               {"ids": ("x", "y"), "set": {1, 2, 3}, "fs": frozenset({"q"})}),
    "shared": ("runq.tasks.echo", None, ([["s"] * 3] * 4,), {"same": "abc" * 10}),
    "bigint": ("runq.tasks.echo", None, (2**70,), {}),
    "bytes": ("runq.tasks.echo", None, (b"\x00\xffraw", bytearray(b"ba")), {}),
    "class": ("runq.tasks.echo", None, (datetime.date(2020, 1, 1), decimal.Decimal("1.5")), {}),
    "instance": ("__call__", {"x": 1}, (), {}),
    "unicode": ("mymod.f", None, ("\u2603" * 50, "\U0001f600"), {"ключ": "значение"}),
}

RESULTS = {
    "none": None,
    "dict": {"slept": 3, "runid": "r-1"},
    "list": [1, 2.5, "x", None, True],
    "deepish": [[[[[[[[["x"]]]]]]]]],
}


def write(name, data):
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(data)


for name, call in CALLS.items():
    for proto in range(6):
        write(f"pickle-p{proto}-{name}.bin", zlib.compress(pickle.dumps(call, protocol=proto)))
    try:
        write(f"json-{name}.bin", zlib.compress(JSONSerializer.dumps(call)))
    except TypeError:
        pass  # not JSON-serializable (sets, bytes, classes)

for name, value in RESULTS.items():
    write(f"result-pickle-{name}.bin", pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
    write(f"result-json-{name}.bin", JSONSerializer.dumps(value))
