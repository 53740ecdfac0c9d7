"""Task functions for tests/py/test_python_host.py (the Python task host, runq_host.py).

Importing this module appends one line to $HOSTTASKS_IMPORT_LOG (when set), so the tests
can see that a preload module is imported once per host, not once per job.
"""

import os
import signal
import sys
import time

import rq
from rq import Queue, get_current_job

_log = os.environ.get('HOSTTASKS_IMPORT_LOG')
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


def nothing():
    return None


def current_job_meta(other_queue):
    """get_current_job(), a meta write + save_meta(), and an enqueue from inside a job."""
    job = get_current_job()
    job.meta['progress'] = 42
    job.meta['seen_id'] = job.id
    job.save_meta()
    queue = Queue(other_queue, connection=job.connection, serializer=job.serializer)
    child = queue.enqueue(add, 20, 22)
    status = job.get_status(refresh=False)
    return {'id': job.id, 'status': getattr(status, 'value', status),
            'started_at': job.started_at.strftime('%Y-%m-%dT%H:%M:%S.%fZ') if job.started_at else None,
            'worker_name': job.worker_name, 'enqueued': child.id,
            'env_job_id': os.environ.get('RUNQ_JOB_ID'), 'rq_job_id': os.environ.get('RQ_JOB_ID'),
            'before': os.environ.get('HOSTTASKS_BEFORE')}


def before_job(job):
    """Configured as the host's before_job hook in the tests."""
    os.environ['HOSTTASKS_BEFORE'] = job.id


def boom():
    raise ValueError('boom from a job')


def abort():
    os.abort()


def exit3():
    os._exit(3)


def sleep(seconds):
    time.sleep(seconds)
    return seconds


def stubborn(pidfile):
    """Ignore SIGTERM, fork a grandchild that ignores it too; both write their pids."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pid = os.fork()
    if pid == 0:
        try:
            _write_pid(pidfile + '.grandchild', os.getpid())
            while True:
                time.sleep(60)
        finally:
            os._exit(0)
    _write_pid(pidfile, os.getpid())
    while True:
        time.sleep(60)


def forever(pidfile):
    _write_pid(pidfile, os.getpid())
    while True:
        time.sleep(60)


def chatty():
    print('hello stdout')
    print('hello stderr', file=sys.stderr)
    print('x' * 20000)  # one 20000-byte line: cut into 8 KiB pieces
    sys.stdout.write('no newline at the end')
    return 'chatted'


def flood(lines, width):
    for i in range(lines):
        print(('%05d' % i) + 'y' * (width - 5))
    return lines


def big(n):
    return b'z' * n


def unpicklable():
    return lambda: None


def retry():
    return rq.Retry(max=3, interval=[10, 30])


def mark_success(job, connection, result):
    connection.set('marker:success:' + job.id, repr(result))


def raise_in_success(job, connection, result):
    raise RuntimeError('success callback failed')


def mark_failure(job, connection, exc_type, exc_value, tb):
    connection.set('marker:failure:' + job.id, '%s: %s' % (exc_type.__name__, exc_value))


def mark_stopped(job, connection):
    connection.set('marker:stopped:' + job.id, 'stopped')
