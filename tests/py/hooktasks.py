"""Task functions and job callbacks for tests/rq3_hooks.rs.

Every callback records what it was called with into Redis (through the connection rq
hands it) as JSON under `hook:<kind>:<job id>`, so the same jobs can be compared between
Python rq's own Worker and runq-worker.
"""

import json
import time


def add(a, b):
    return a + b


def boom(message):
    raise ValueError(message)


def sleep(seconds):
    time.sleep(seconds)
    return seconds


def _record(kind, job, connection, **extra):
    status = connection.hget(job.key, 'status')
    info = {
        'kind': kind,
        'job_id': job.id,
        'job_class': type(job).__module__ + '.' + type(job).__name__,
        'func_name': job.func_name,
        'connection': type(connection).__module__ + '.' + type(connection).__name__,
        'db': connection.connection_pool.connection_kwargs.get('db'),
        'ping': connection.ping(),
        # What Redis says while the callback runs (rq: before the outcome is saved).
        'status_in_redis': status.decode() if status is not None else None,
    }
    info.update(extra)
    connection.set('hook:%s:%s' % (kind, job.id), json.dumps(info, sort_keys=True))


def success(job, connection, result):
    _record('success', job, connection, result=repr(result))


def failure(job, connection, exc_type, exc_value, traceback):
    _record(
        'failure',
        job,
        connection,
        exc_type=exc_type.__name__ if exc_type is not None else None,
        exc_value=str(exc_value),
        exc_matches=isinstance(exc_value, exc_type) if exc_type is not None else None,
        traceback=type(traceback).__name__,
    )


def stopped(job, connection):
    _record('stopped', job, connection)


def raising_success(job, connection, result):
    _record('success', job, connection, result=repr(result))
    raise RuntimeError('success callback broke')


def raising_failure(job, connection, exc_type, exc_value, traceback):
    _record('failure', job, connection, exc_type=exc_type.__name__, exc_value=str(exc_value))
    raise RuntimeError('failure callback broke')


def raising_stopped(job, connection):
    _record('stopped', job, connection)
    raise RuntimeError('stopped callback broke')


def slow(job, connection, *args):
    """Any kind of callback that outlives its timeout: `hook:slow-start:<id>` at once,
    `hook:slow-end:<id>` only if it is allowed to sleep 8 s."""
    connection.set('hook:slow-start:%s' % job.id, str(len(args)))
    time.sleep(8)
    connection.set('hook:slow-end:%s' % job.id, str(len(args)))
