"""Task functions for tests/python_tasks.rs: Python RQ functions run by runq-worker's
Python task host (`[python]` in the worker's config).

Importing this module appends one line (the importing pid) to $PYTASKS_IMPORT_LOG when
that is set, so a test can see that a preload module is imported once per host, not once
per job.
"""

import datetime
import decimal
import json
import os
import signal
import sys
import time

from rq import Queue, get_current_job

_log = os.environ.get('PYTASKS_IMPORT_LOG')
if _log:
    with open(_log, 'a') as f:
        f.write('%d\n' % os.getpid())


def _write_pid(path, pid):
    tmp = '%s.%d.tmp' % (path, pid)
    with open(tmp, 'w') as f:
        f.write(str(pid))
    os.rename(tmp, path)


def add(a, b):
    return a + b


def inspect_job(when, amount, tags, other_queue):
    """get_current_job(), job.args, a meta write + save_meta(), job.save(), an enqueue
    from inside the job; returns objects only Python can represent."""
    job = get_current_job()
    assert isinstance(when, datetime.date) and isinstance(amount, decimal.Decimal), (when, amount)
    job.meta['progress'] = 42
    job.meta['seen_id'] = job.id
    job.save_meta()
    job.meta['saved_by_save'] = True
    job.description = 'described inside the job'
    job.save()
    queue = Queue(other_queue, connection=job.connection, serializer=job.serializer)
    child = queue.enqueue('pytasks.add', 20, 22, job_id=job.id + '-child')
    status = job.get_status(refresh=False)
    return {
        'id': job.id,
        'args': job.args,
        'func_name': job.func_name,
        'status': getattr(status, 'value', status),
        'origin': job.origin,
        'worker_name': job.worker_name,
        'child': child.id,
        'env_job_id': os.environ.get('RUNQ_JOB_ID'),
        'rq_job_id': os.environ.get('RQ_JOB_ID'),
        'tags': set(tags) | {'seen'},
        'when': datetime.datetime.combine(when, datetime.time(12, 30), tzinfo=datetime.timezone.utc),
        'amount': amount * 2,
    }


def record(name):
    """Appends `name` to the Redis list `order` (DB of the job) and returns it."""
    job = get_current_job()
    job.connection.rpush('order', name)
    return name


def record_and_fail(name):
    record(name)
    raise ValueError('%s failed on purpose' % name)


def count():
    """Each run appends its job id to the list `ran` and counts itself per job id."""
    job = get_current_job()
    pipe = job.connection.pipeline()
    pipe.rpush('ran', job.id)
    pipe.hincrby('runs', job.id, 1)
    pipe.execute()
    return job.id


def stubborn(pidfile, ignore_alarm=False):
    """Ignore SIGTERM (and SIGALRM when asked), fork a grandchild that ignores SIGTERM
    too; both write their pids (pidfile, pidfile.grandchild) and sleep for ever."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pid = os.fork()
    if pid == 0:
        try:
            _write_pid(pidfile + '.grandchild', os.getpid())
            while True:
                time.sleep(60)
        finally:
            os._exit(0)
    if ignore_alarm:
        signal.signal(signal.SIGALRM, signal.SIG_IGN)
    _write_pid(pidfile, os.getpid())
    while True:
        time.sleep(60)


def segfault():
    import ctypes
    ctypes.string_at(0)


def abort():
    os.abort()


def chatty(marker):
    print('out line %s' % marker)
    print('err line %s' % marker, file=sys.stderr)
    sys.stdout.write('last line without newline %s' % marker)
    return marker


def with_lock(runid):
    """Returns what the child sees of its run state: its env and the lock key's value."""
    job = get_current_job()
    tokens = json.loads(os.environ['RUNQ_LOCK_TOKENS'])
    db0 = type(job.connection)(db=0, **{
        k: v for k, v in job.connection.connection_pool.connection_kwargs.items()
        if k in ('host', 'port', 'password', 'username')})
    held = db0.get('nodb-lock:%s:climate.nodb' % runid)
    return {
        'runid_env': os.environ.get('RUNQ_RUNID'),
        'tokens': tokens,
        'held': json.loads(held) if held is not None else None,
    }


def structured(a, b):
    """For JSON and msgpack queues."""
    return {'sum': a + b, 'list': [a, b], 'text': 'ü€'}


def sleep(seconds):
    time.sleep(seconds)
    return seconds


def mark_success(job, connection, result):
    connection.set('marker:success:' + job.id, repr(result))


def mark_failure(job, connection, exc_type, exc_value, tb):
    connection.set('marker:failure:' + job.id, '%s: %s' % (exc_type.__name__, exc_value))


def mark_stopped(job, connection):
    connection.set('marker:stopped:' + job.id, 'stopped')


def enqueue_follow_up(name):
    """Enqueues record(name) depending on the running job itself, then records `parent`."""
    job = get_current_job()
    queue = Queue(job.origin, connection=job.connection, serializer=job.serializer)
    follow = queue.enqueue('pytasks.record', name, depends_on=job, job_id=job.id + '-follow')
    status = follow.get_status(refresh=True)
    time.sleep(0.3)
    record('parent')
    return getattr(status, 'value', status)


def returns_retry(succeed_after):
    """Returns rq.Retry(max=2) until it has been retried `succeed_after` times (never when
    None); each run appends the job id to the list `runs:<queue>`."""
    import rq
    job = get_current_job()
    job.connection.rpush('runs:' + job.origin, job.id)
    n = job.number_of_retries or 0
    if succeed_after is not None and n >= succeed_after:
        return 'done after %d' % n
    return rq.Retry(max=2)
