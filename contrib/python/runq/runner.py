"""Runs one RQ job handed over by runq-worker's exec handler, then exits.

Configure a task as

    [tasks."mypackage.mymodule.my_function"]
    handler = "exec"
    command = ["/path/to/venv/bin/python", "-m", "runq.runner"]
    mode = "raw"

with PYTHONPATH (in runq-worker's environment) covering this directory and the modules
the job's function lives in. The protocol (see docs/exec-tasks.md):

raw mode (RUNQ_EXEC_MODE=raw, or RUNQ_SERIALIZER set)
    stdin holds the job's payload exactly as RQ stored it: ``(func_name, instance, args,
    kwargs)`` serialized with RUNQ_SERIALIZER (pickle, the default; json; msgpack), zlib
    compressed or not. The function is imported as RQ does, called with the real
    arguments, and its return value is written to RUNQ_RESULT_FILE with the same
    serializer, so a Python client reads ``job.return_value()`` as if a Python worker had
    run the job. A None return writes no file (RQ stores no return value for None).

json mode (otherwise)
    stdin holds ``{"job_id", "func", "args", "kwargs"}``; the JSON return value is
    written to RUNQ_RESULT_FILE.

On an exception the traceback goes to stderr and the exit status is 1; runq-worker fails
the job with the traceback's last line on the first line of the failure text. A job the
runner cannot start (bad input, a function that cannot be imported) exits 2 with a one-line
``runq.runner: RunnerError: ...`` on stderr. ``sys.exit(n)`` in the function exits with n.

Standard library only (msgpack is imported only for msgpack jobs).
"""

import asyncio
import importlib
import inspect
import json
import os
import pickle
import sys
import traceback
import zlib

# What RQ stores when a return value cannot be serialized (rq.results).
UNSERIALIZABLE_RETURN_VALUE = 'Unserializable return value'


class RunnerError(Exception):
    """A job the runner cannot run (bad input, unknown serializer, missing function)."""


def _msgpack():
    try:
        import msgpack
    except ImportError:
        raise RunnerError('the job uses msgpack but the msgpack package is not installed')
    return msgpack


def loads(serializer, data):
    """Deserializes like RQ's serializers."""
    if serializer == 'pickle':
        return pickle.loads(data)
    if serializer == 'json':
        return json.loads(data.decode('utf-8'))
    if serializer == 'msgpack':
        return _msgpack().unpackb(data)
    raise RunnerError('unknown RUNQ_SERIALIZER %r (pickle, json or msgpack)' % serializer)


def dumps(serializer, value):
    """Serializes like RQ's serializers (pickle with the highest protocol)."""
    if serializer == 'pickle':
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    if serializer == 'json':
        return json.dumps(value).encode('utf-8')
    if serializer == 'msgpack':
        return _msgpack().packb(value)
    raise RunnerError('unknown RUNQ_SERIALIZER %r (pickle, json or msgpack)' % serializer)


def inflate(data):
    """The payload without its zlib compression, if it has one (RQ's reading rule)."""
    if len(data) >= 2 and data[0] == 0x78 and (data[0] * 256 + data[1]) % 31 == 0:
        try:
            return zlib.decompress(data)
        except zlib.error:
            pass
    return data


def import_attribute(name):
    """``module.attr`` (nested attributes allowed: ``module.Class.method``), as
    rq.utils.import_attribute; a name without a module is a builtin."""
    bits = name.split('.')
    module = None
    attrs = []
    while bits:
        module_name = '.'.join(bits)
        try:
            module = importlib.import_module(module_name)
            break
        except ModuleNotFoundError as e:
            # Only "this module does not exist": an import error inside it propagates.
            if e.name is None or not (
                module_name == e.name or module_name.startswith(e.name + '.')
            ):
                raise
            attrs.insert(0, bits.pop())
    if module is None:
        import builtins

        if len(attrs) == 1 and hasattr(builtins, attrs[0]):
            return getattr(builtins, attrs[0])
        raise RunnerError('cannot import %r: no module of that name' % name)
    obj = module
    for i, attr in enumerate(attrs):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise RunnerError(
                'cannot import %r: %r has no attribute %r'
                % (name, '.'.join(bits + attrs[:i]), attr)
            )
    return obj


def call(func_name, instance, args, kwargs):
    """Calls the job's function as RQ's Job.perform does (coroutines are run)."""
    if instance is not None:
        func = getattr(instance, func_name)
    else:
        func = import_attribute(func_name)
    result = func(*args, **kwargs)
    if inspect.isawaitable(result):
        result = asyncio.run(_await(result))
    return result


async def _await(awaitable):
    return await awaitable


def run_raw(stdin, serializer, result_file):
    payload = loads(serializer, inflate(stdin))
    try:
        func_name, instance, args, kwargs = payload
    except (TypeError, ValueError):
        raise RunnerError('the payload is not (func_name, instance, args, kwargs)')
    result = call(func_name, instance, tuple(args or ()), dict(kwargs or {}))
    if result is None:
        return
    try:
        data = dumps(serializer, result)
    except Exception:
        data = dumps(serializer, UNSERIALIZABLE_RETURN_VALUE)
    write_result(result_file, data)


def run_json(stdin, result_file):
    try:
        envelope = json.loads(stdin.decode('utf-8'))
        func_name = envelope['func']
    except (ValueError, KeyError, TypeError):
        raise RunnerError('stdin is not the JSON envelope {"func", "args", "kwargs"}')
    result = call(func_name, None, envelope.get('args') or [], envelope.get('kwargs') or {})
    write_result(result_file, json.dumps(result).encode('utf-8'))


def write_result(result_file, data):
    if not result_file:
        raise RunnerError('RUNQ_RESULT_FILE is not set')
    with open(result_file, 'wb') as f:
        f.write(data)


def main():
    stdin = sys.stdin.buffer.read()
    serializer = os.environ.get('RUNQ_SERIALIZER')
    mode = os.environ.get('RUNQ_EXEC_MODE') or ('raw' if serializer else 'json')
    result_file = os.environ.get('RUNQ_RESULT_FILE')
    try:
        if mode == 'raw':
            run_raw(stdin, serializer or 'pickle', result_file)
        elif mode == 'json':
            run_json(stdin, result_file)
        else:
            raise RunnerError('unknown RUNQ_EXEC_MODE %r (json or raw)' % mode)
    except RunnerError as e:
        print('runq.runner: RunnerError: %s' % e, file=sys.stderr)
        return 2
    except (Exception, KeyboardInterrupt):
        traceback.print_exc()
        sys.stderr.flush()
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
