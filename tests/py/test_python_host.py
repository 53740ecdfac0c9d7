"""Drives worker/src/tasks/python/runq_host.py over stdin/stdout exactly as runq-worker
does (protocol: worker/src/tasks/python/PROTOCOL.md), against a private redis-server, with
jobs enqueued by the real rq of the running interpreter.

    /work/main/.venv/rq3/bin/python /work/main/tests/py/test_python_host.py     # rq 3.0.0
    /work/main/.venv/rq116/bin/python /work/main/tests/py/test_python_host.py   # rq 1.16 subset

The host is started with the same interpreter that runs this file. Every wait is bounded;
nothing asserts on timing.
"""

import atexit
import base64
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
HOST_SCRIPT = os.path.join(ROOT, 'worker', 'src', 'tasks', 'python', 'runq_host.py')

import redis  # noqa: E402
import rq  # noqa: E402
from rq import Callback, Queue  # noqa: E402
from rq.job import Job  # noqa: E402
from rq.serializers import JSONSerializer  # noqa: E402

try:
    import msgpack
except ImportError:  # pragma: no cover
    msgpack = None

RQ_MAJOR = int(rq.VERSION.split('.')[0])
WAIT = 20.0  # upper bound for any single wait; never a timing assertion
DB = 3

REDIS = None  # the private RedisServer
TMP = None


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _die_with_parent():
    """preexec_fn: the private redis-server gets SIGKILL if this test process dies."""
    try:
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class RedisServer:
    def __init__(self, workdir):
        self.port = free_port()
        while self.port == 6379:
            self.port = free_port()
        self.proc = subprocess.Popen(
            ['redis-server', '--port', str(self.port), '--bind', '127.0.0.1', '--save', '',
             '--appendonly', 'no', '--dir', workdir, '--daemonize', 'no'],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        self.url = 'redis://127.0.0.1:%d/%d' % (self.port, DB)
        conn = redis.Redis(host='127.0.0.1', port=self.port, db=DB)
        deadline = time.monotonic() + WAIT
        while True:
            try:
                conn.ping()
                break
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError('redis-server did not start')
                time.sleep(0.02)
        conn.close()

    def conn(self):
        return redis.Redis(host='127.0.0.1', port=self.port, db=DB)

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def setUpModule():
    global REDIS, TMP
    TMP = tempfile.mkdtemp(prefix='runq-host-test-')
    atexit.register(tearDownModule)  # also when the run is cut short
    REDIS = RedisServer(TMP)


def tearDownModule():
    global REDIS, TMP
    if REDIS is not None:
        REDIS.stop()
        REDIS = None
    if TMP is not None:
        shutil.rmtree(TMP, ignore_errors=True)
        TMP = None


def b64(data):
    return base64.b64encode(data).decode('ascii')


def unb64(text):
    return base64.b64decode(text)


def frame_bytes(obj):
    body = json.dumps(obj, ensure_ascii=False).encode('utf-8')
    return len(body).to_bytes(4, 'big') + body


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def children_of(pid):
    """Pids whose parent is pid (from /proc)."""
    found = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % entry) as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat.rsplit(')', 1)[1].split()[1]) == pid:
            found.append(int(entry))
    return found


def wait_for(pred, what, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError('timed out waiting for %s' % what)
        time.sleep(0.01)


def read_pid(path):
    wait_for(lambda: os.path.exists(path), path)
    with open(path) as f:
        return int(f.read())


class MsgpackSerializer:
    """What the host uses for `msgpack` jobs: packb / unpackb(raw=False)."""

    @staticmethod
    def dumps(obj):
        return msgpack.packb(obj)

    @staticmethod
    def loads(data):
        return msgpack.unpackb(data, raw=False)


def madv_collapse_expected():
    """MADV_COLLAPSE exists (Linux 6.1+) and transparent huge pages are not off."""
    try:
        major, minor = (int(x) for x in os.uname().release.split('.')[:2])
        with open('/sys/kernel/mm/transparent_hugepage/enabled') as f:
            enabled = f.read()
    except (OSError, ValueError):
        return False
    return (major, minor) >= (6, 1) and '[never]' not in enabled


class HostProc:
    """One runq_host.py process, spoken to as runq-worker speaks to it."""

    def __init__(self, env=None):
        full_env = dict(os.environ)
        full_env.pop('HOSTTASKS_IMPORT_LOG', None)
        full_env.update(env or {})
        self.proc = subprocess.Popen([sys.executable, HOST_SCRIPT], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=full_env, cwd=TMP)
        self.cond = threading.Condition()
        self.frames = []
        self.eof = False
        self.stderr_lines = []
        self.threads = [threading.Thread(target=self._read_frames, daemon=True),
                        threading.Thread(target=self._read_stderr, daemon=True)]
        for t in self.threads:
            t.start()

    def _read_frames(self):
        out = self.proc.stdout
        try:
            while True:
                head = out.read(4)
                if len(head) < 4:
                    break
                n = int.from_bytes(head, 'big')
                body = out.read(n)
                if len(body) < n:
                    break
                frame = json.loads(body.decode('utf-8'))
                with self.cond:
                    self.frames.append(frame)
                    self.cond.notify_all()
        finally:
            with self.cond:
                self.eof = True
                self.cond.notify_all()

    def _read_stderr(self):
        for line in self.proc.stderr:
            self.stderr_lines.append(line.decode('utf-8', 'replace').rstrip('\n'))

    def send(self, obj):
        self.send_raw(frame_bytes(obj))

    def send_raw(self, data):
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def init(self, **overrides):
        frame = {'op': 'init', 'protocol': 1, 'sys_path': [HERE], 'preload': ['hosttasks'],
                 'before_job': 'hosttasks.before_job', 'redis_url': REDIS.url,
                 'redis_ca_file': None, 'kill_grace': 0.3, 'max_output_bytes': 1048576}
        frame.update(overrides)
        self.send(frame)
        return self.wait(lambda f: f['op'] in ('ready', 'fatal'), 'ready/fatal')

    def wait(self, pred, what, timeout=WAIT):
        """The first frame (in arrival order) matching pred; bounded."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for f in self.frames:
                    if pred(f):
                        return f
                remaining = deadline - time.monotonic()
                if self.eof or remaining <= 0:
                    raise AssertionError('no %s frame (eof=%s); frames: %s; host stderr: %s' % (
                        what, self.eof, self.frames[-5:], self.stderr_lines[-20:]))
                self.cond.wait(min(remaining, 0.5))

    def done(self, job_id, timeout=WAIT):
        return self.wait(lambda f: f['op'] == 'done' and f.get('job_id') == job_id,
                         'done for %s' % job_id, timeout)

    def for_job(self, job_id):
        with self.cond:
            return [f for f in self.frames if f.get('job_id') == job_id]

    def exit_code(self, timeout=WAIT):
        return self.proc.wait(timeout)

    def close(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for t in self.threads:
            t.join(WAIT)
        self.proc.stdout.close()
        self.proc.stderr.close()


_worker_seq = [0]


def run_frame(job, serializer='pickle', timeout=30, op='run', **extra):
    """The run (or callback) frame runq-worker would send after claiming `job`."""
    raw = REDIS.conn().hgetall(job.key)
    frame = {'op': op, 'job_id': job.id, 'serializer': serializer,
             'hash': {k.decode('utf-8'): b64(v) for k, v in raw.items()}, 'timeout': timeout}
    if op == 'run':
        _worker_seq[0] += 1
        frame.update({
            'func': job.func_name, 'status': 'started',
            'started_at': datetime.now(timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.%fZ'),
            'worker_name': 'runq.test.%d' % _worker_seq[0],
            'env': {'RUNQ_JOB_ID': job.id, 'RUNQ_RUNID': 'run-1', 'RUNQ_LOCK_TOKENS': '{}'}})
    frame.update(extra)
    return frame


class HostTestCase(unittest.TestCase):
    """Most tests share one host (started once): it is what one worker process would use."""

    host = None

    @classmethod
    def setUpClass(cls):
        cls.import_log = os.path.join(TMP, 'imports-%s.log' % cls.__name__)
        cls.host = HostProc(env={'HOSTTASKS_IMPORT_LOG': cls.import_log})
        cls.ready = cls.host.init()
        if cls.ready['op'] != 'ready':
            raise RuntimeError('host did not start: %r' % cls.ready)
        cls.conn = REDIS.conn()
        cls.queue = Queue('hosttest', connection=cls.conn)

    @classmethod
    def tearDownClass(cls):
        if cls.host is not None:
            cls.host.close()

    def run_job(self, job, **kw):
        self.host.send(run_frame(job, **kw))
        started = self.host.wait(lambda f: f['op'] == 'started' and f.get('job_id') == job.id,
                                 'started for %s' % job.id)
        self.assertIsInstance(started['pid'], int)
        return self.host.done(job.id)


class SharedHostTests(HostTestCase):
    def test_ready(self):
        r = self.ready
        self.assertEqual(r['protocol'], 1)
        self.assertEqual(r['pid'], self.host.proc.pid)
        self.assertEqual(r['rq'], rq.VERSION)
        self.assertEqual(r['python'], '%d.%d.%d' % sys.version_info[:3])

    def test_preload_imported_once(self):
        for i in range(5):
            done = self.run_job(self.queue.enqueue('hosttasks.add', i, 1))
            self.assertEqual(done['outcome'], 'ok')
        with open(self.import_log) as f:
            lines = f.read().split()
        self.assertEqual(lines, [str(self.host.proc.pid)])

    def test_pickle_job(self):
        job = self.queue.enqueue('hosttasks.add', 2, 3)
        done = self.run_job(job)
        self.assertEqual(done['outcome'], 'ok', done)
        self.assertEqual(pickle.loads(unb64(done['return_value'])), 5)

    def test_json_job(self):
        q = Queue('hosttest-json', connection=self.conn, serializer=JSONSerializer)
        job = q.enqueue('hosttasks.add', 'ab', 'cd')
        done = self.run_job(job, serializer='json')
        self.assertEqual(done['outcome'], 'ok', done)
        self.assertEqual(unb64(done['return_value']), b'"abcd"')

    @unittest.skipIf(msgpack is None, 'msgpack is not installed')
    def test_msgpack_job(self):
        q = Queue('hosttest-msgpack', connection=self.conn, serializer=MsgpackSerializer)
        job = q.enqueue('hosttasks.add', [1], [2])
        done = self.run_job(job, serializer='msgpack')
        self.assertEqual(done['outcome'], 'ok', done)
        self.assertEqual(msgpack.unpackb(unb64(done['return_value'])), [1, 2])

    def test_none_return_value_is_null(self):
        done = self.run_job(self.queue.enqueue('hosttasks.nothing'))
        self.assertEqual(done, {'op': 'done', 'job_id': done['job_id'], 'outcome': 'ok', 'return_value': None})

    def test_current_job_meta_and_enqueue(self):
        job = self.queue.enqueue('hosttasks.current_job_meta', 'hosttest-other')
        frame = run_frame(job)
        self.host.send(frame)
        done = self.host.done(job.id)
        self.assertEqual(done['outcome'], 'ok', done)
        rv = pickle.loads(unb64(done['return_value']))
        self.assertEqual(rv['id'], job.id)
        self.assertEqual(rv['status'], 'started')
        self.assertEqual(rv['started_at'], frame['started_at'])
        self.assertEqual(rv['worker_name'], frame['worker_name'])
        self.assertEqual(rv['env_job_id'], job.id)
        self.assertEqual(rv['rq_job_id'], job.id)
        self.assertEqual(rv['before'], job.id)  # before_job ran in the child, first
        stored = Job.fetch(job.id, connection=self.conn)
        self.assertEqual(stored.meta['progress'], 42)
        self.assertEqual(stored.meta['seen_id'], job.id)
        other = Queue('hosttest-other', connection=self.conn)
        self.assertIn(rv['enqueued'], other.job_ids)
        self.assertEqual(Job.fetch(rv['enqueued'], connection=self.conn).args, (20, 22))

    def test_run_frame_redis_url_moves_the_job_to_another_master(self):
        """After a Sentinel switch the worker sends the new master's URL in the frame: the
        job's connection (meta, enqueues) goes there, not to the init frame's server."""
        job = self.queue.enqueue('hosttasks.current_job_meta', 'hosttest-moved')
        moved_db = DB + 1
        moved = redis.Redis(host='127.0.0.1', port=REDIS.port, db=moved_db)
        moved.flushdb()
        # The "new master" holds the same job (a replica promoted with it).
        moved.hset(job.key, mapping=self.conn.hgetall(job.key))
        url = 'redis://127.0.0.1:%d/%d' % (REDIS.port, moved_db)
        done = self.run_job(job, redis_url=url)
        self.assertEqual(done['outcome'], 'ok', done)
        rv = pickle.loads(unb64(done['return_value']))
        self.assertIn(rv['enqueued'], Queue('hosttest-moved', connection=moved).job_ids)
        self.assertEqual(Queue('hosttest-moved', connection=self.conn).job_ids, [])
        self.assertEqual(Job.fetch(job.id, connection=moved).meta['progress'], 42)
        # The next frame without a redis_url uses the init frame's server again.
        job2 = self.queue.enqueue('hosttasks.current_job_meta', 'hosttest-moved')
        done = self.run_job(job2)
        rv = pickle.loads(unb64(done['return_value']))
        self.assertIn(rv['enqueued'], Queue('hosttest-moved', connection=self.conn).job_ids)

    def test_exception_is_failed_with_rq_traceback(self):
        done = self.run_job(self.queue.enqueue('hosttasks.boom'))
        self.assertEqual(done['outcome'], 'failed')
        exc = done['exc_string']
        self.assertTrue(exc.startswith('Traceback (most recent call last):\n'), exc)
        self.assertTrue(exc.endswith('ValueError: boom from a job\n'), exc)
        self.assertIn('in boom', exc)

    def test_crash_abort(self):
        done = self.run_job(self.queue.enqueue('hosttasks.abort'))
        self.assertEqual(done['outcome'], 'crashed', done)
        self.assertEqual(done['signal'], signal.SIGABRT)
        self.assertIsNone(done['exit_code'])
        self.assertRegex(done['exc_string'],
                         r'^Work-horse terminated unexpectedly; waitpid returned (6|134) \(signal 6\); $')

    def test_crash_exit3(self):
        done = self.run_job(self.queue.enqueue('hosttasks.exit3'))
        self.assertEqual(done['outcome'], 'crashed', done)
        self.assertEqual(done['exit_code'], 3)
        self.assertIsNone(done['signal'])
        self.assertEqual(done['exc_string'], 'Work-horse terminated unexpectedly; waitpid returned 768; ')

    def test_timeout(self):
        done = self.run_job(self.queue.enqueue('hosttasks.sleep', 30), timeout=1)
        self.assertEqual(done['outcome'], 'failed', done)
        self.assertIn('JobTimeoutException: Task exceeded maximum timeout value (1 seconds)',
                      done['exc_string'])

    def test_kill_sigterm_proof_child_and_grandchild(self):
        pidfile = os.path.join(TMP, 'stubborn.pid')
        job = self.queue.enqueue('hosttasks.stubborn', pidfile)
        self.host.send(run_frame(job))
        pid = read_pid(pidfile)
        gpid = read_pid(pidfile + '.grandchild')
        self.assertTrue(pid_alive(pid) and pid_alive(gpid))
        self.host.send({'op': 'kill', 'job_id': job.id})
        done = self.host.done(job.id)
        self.assertEqual(done['outcome'], 'killed', done)
        self.assertEqual(done['signal'], signal.SIGKILL)
        self.assertFalse(pid_alive(pid), 'job leader still exists after done')
        self.assertFalse(pid_alive(gpid), 'grandchild still exists after done')
        # a second kill for the finished job is ignored
        self.host.send({'op': 'kill', 'job_id': job.id})
        self.host.send({'op': 'ping', 'seq': 991})
        self.host.wait(lambda f: f['op'] == 'pong' and f['seq'] == 991, 'pong')
        self.assertEqual([f for f in self.host.for_job(job.id) if f['op'] == 'error'], [])

    def test_duplicate_run_leaves_running_job_alone(self):
        pidfile = os.path.join(TMP, 'dup.pid')
        job = self.queue.enqueue('hosttasks.forever', pidfile)
        frame = run_frame(job)
        self.host.send(frame)
        read_pid(pidfile)
        self.host.send(frame)
        err = self.host.wait(lambda f: f['op'] == 'error' and job.id in f['error'], 'duplicate error')
        self.assertIsNone(err['job_id'])
        self.host.send({'op': 'kill', 'job_id': job.id})
        self.assertEqual(self.host.done(job.id)['outcome'], 'killed')
        self.assertEqual([f['op'] for f in self.host.for_job(job.id)], ['started', 'done'])

    def test_kill_plain_job_dies_of_sigterm(self):
        pidfile = os.path.join(TMP, 'plain.pid')
        job = self.queue.enqueue('hosttasks.forever', pidfile)
        self.host.send(run_frame(job))
        pid = read_pid(pidfile)
        self.host.send({'op': 'kill', 'job_id': job.id})
        done = self.host.done(job.id)
        self.assertEqual(done['outcome'], 'killed', done)
        self.assertEqual(done['signal'], signal.SIGTERM)
        self.assertFalse(pid_alive(pid))

    def test_output_forwarding(self):
        job = self.queue.enqueue('hosttasks.chatty')
        done = self.run_job(job)
        self.assertEqual(done['outcome'], 'ok', done)
        frames = self.host.for_job(job.id)
        self.assertEqual(frames[-1]['op'], 'done')  # every output frame came before done
        out = [f['text'] for f in frames if f['op'] == 'output' and f['stream'] == 'stdout']
        err = [f['text'] for f in frames if f['op'] == 'output' and f['stream'] == 'stderr']
        self.assertEqual(out, ['hello stdout', 'x' * 8192, 'x' * 8192, 'x' * 3616, 'no newline at the end'])
        self.assertEqual(err, ['hello stderr'])

    def test_unpicklable_return_value(self):
        done = self.run_job(self.queue.enqueue('hosttasks.unpicklable'))
        self.assertEqual(done['outcome'], 'ok', done)
        self.assertEqual(pickle.loads(unb64(done['return_value'])), 'Unserializable return value')

    @unittest.skipIf(RQ_MAJOR < 3, 'rq < 3 stores a returned Retry as an ordinary result')
    def test_retry_return(self):
        done = self.run_job(self.queue.enqueue('hosttasks.retry'))
        rv = pickle.loads(unb64(done.pop('return_value')))  # stored as the RETRIED result
        self.assertEqual(done, {'op': 'done', 'job_id': done['job_id'], 'outcome': 'retry',
                                'max': 3, 'intervals': [10, 30], 'at_front': False})
        self.assertIsInstance(rv, rq.job.Retry)
        self.assertEqual((rv.max, rv.intervals), (3, [10, 30]))

    def test_success_callback(self):
        job = self.queue.enqueue('hosttasks.add', 2, 5, on_success=Callback('hosttasks.mark_success'))
        done = self.run_job(job)
        self.assertEqual(done['outcome'], 'ok', done)
        self.assertEqual(self.conn.get('marker:success:' + job.id), b'7')

    def test_success_callback_raising_fails_job(self):
        job = self.queue.enqueue('hosttasks.add', 1, 1, on_success=Callback('hosttasks.raise_in_success'),
                                 on_failure=Callback('hosttasks.mark_failure'))
        done = self.run_job(job)
        self.assertEqual(done['outcome'], 'failed', done)
        self.assertTrue(done['exc_string'].endswith('RuntimeError: success callback failed\n'), done)
        self.assertIn('raise_in_success', done['exc_string'])
        # as in rq's perform_job, the failure callback then sees the callback's exception
        self.assertEqual(self.conn.get('marker:failure:' + job.id), b'RuntimeError: success callback failed')

    def test_failure_callback(self):
        job = self.queue.enqueue('hosttasks.boom', on_failure=Callback('hosttasks.mark_failure'))
        done = self.run_job(job)
        self.assertEqual(done['outcome'], 'failed', done)
        self.assertIn('ValueError: boom from a job', done['exc_string'])
        self.assertEqual(self.conn.get('marker:failure:' + job.id), b'ValueError: boom from a job')

    def test_callback_op_stopped(self):
        job = self.queue.enqueue('hosttasks.sleep', 10, on_stopped=Callback('hosttasks.mark_stopped'))
        self.host.send(run_frame(job, op='callback', kind='stopped', timeout=60))
        self.host.wait(lambda f: f['op'] == 'started' and f.get('job_id') == job.id, 'started')
        done = self.host.done(job.id)
        self.assertEqual(done['outcome'], 'ok', done)
        self.assertEqual(self.conn.get('marker:stopped:' + job.id), b'stopped')

    def test_callback_op_success_and_failure(self):
        job = self.queue.enqueue('hosttasks.add', 1, 2, on_success=Callback('hosttasks.mark_success'),
                                 on_failure=Callback('hosttasks.mark_failure'))
        self.host.send(run_frame(job, op='callback', kind='success', timeout=60,
                                 return_value=b64(pickle.dumps(3))))
        self.assertEqual(self.host.done(job.id)['outcome'], 'ok')
        self.assertEqual(self.conn.get('marker:success:' + job.id), b'3')
        self.host.frames.clear()
        self.host.send(run_frame(job, op='callback', kind='failure', timeout=None,
                                 exc_string='Traceback ...\nKeyError: 1\n'))
        self.assertEqual(self.host.done(job.id)['outcome'], 'ok')
        self.assertEqual(self.conn.get('marker:failure:' + job.id), b'Exception: Traceback ...\nKeyError: 1\n')

    def test_callback_op_raising(self):
        job = self.queue.enqueue('hosttasks.add', 1, 2, on_success=Callback('hosttasks.raise_in_success'))
        self.host.send(run_frame(job, op='callback', kind='success', timeout=60, return_value=None))
        done = self.host.done(job.id)
        self.assertEqual(done['outcome'], 'failed', done)
        self.assertTrue(done['exc_string'].endswith('RuntimeError: success callback failed\n'))

    def test_big_return_value(self):
        done = self.run_job(self.queue.enqueue('hosttasks.big', 5 * 1024 * 1024))
        self.assertEqual(done['outcome'], 'ok')
        self.assertEqual(pickle.loads(unb64(done['return_value'])), b'z' * (5 * 1024 * 1024))

    def test_run_frame_bigger_than_a_pipe_buffer(self):
        big = os.urandom(1 << 20)  # incompressible: the hand-off to the child takes several writes
        job = self.queue.enqueue('hosttasks.add', big, b'b')
        self.assertGreater(len(self.conn.hget(job.key, 'data')), 1 << 20)
        done = self.run_job(job)
        self.assertEqual(done['outcome'], 'ok', {k: v for k, v in done.items() if k != 'return_value'})
        self.assertEqual(pickle.loads(unb64(done['return_value'])), big + b'b')

    def test_frame_in_pieces(self):
        data = frame_bytes({'op': 'ping', 'seq': 4242})
        for piece in (data[:2], data[2:5], data[5:-1], data[-1:]):
            self.host.send_raw(piece)
            time.sleep(0.02)  # lets the host see each piece on its own; not an assertion
        self.host.wait(lambda f: f['op'] == 'pong' and f['seq'] == 4242, 'pong for a split frame')

    def test_ping(self):
        self.host.send({'op': 'ping', 'seq': 7})
        pong = self.host.wait(lambda f: f['op'] == 'pong' and f['seq'] == 7, 'pong')
        self.assertGreater(pong['rss_bytes'], 1 << 20)
        self.assertIsInstance(pong['children'], int)

    def test_bad_frames_are_errors_not_fatal(self):
        self.host.send_raw(frame_bytes('not an object'))
        self.host.send_raw(len(b'{nope').to_bytes(4, 'big') + b'{nope')
        self.host.send({'op': 'frobnicate', 'job_id': 'bad-op-1'})
        self.host.send({'op': 'run', 'job_id': 'bad-run-1'})  # no hash
        self.host.send({'op': 'kill', 'job_id': 'never-seen'})  # ignored
        self.host.send({'op': 'ping', 'seq': 8})
        self.host.wait(lambda f: f['op'] == 'pong' and f['seq'] == 8, 'pong after bad frames')
        errors = [f for f in self.host.frames if f['op'] == 'error']
        self.assertGreaterEqual(len([e for e in errors if e['job_id'] is None]), 2)
        # only a run/callback that was not started is named by job_id; other errors say it
        self.assertTrue(any(e['job_id'] is None and 'frobnicate' in e['error'] and 'bad-op-1' in e['error']
                            for e in errors), errors)
        self.assertTrue(any(e['job_id'] == 'bad-run-1' for e in errors), errors)
        for e in errors:
            self.assertNotIn('\n', e['error'])
        self.assertEqual(self.host.for_job('never-seen'), [])
        self.assertEqual(self.host.for_job('bad-op-1'), [])
        # and jobs still run
        self.assertEqual(self.run_job(self.queue.enqueue('hosttasks.add', 1, 1))['outcome'], 'ok')

    def test_fifty_jobs_concurrency_4(self):
        jobs = [self.queue.enqueue('hosttasks.add', i, i) for i in range(50)]
        frames = [run_frame(j) for j in jobs]
        sent = set()
        finished = {}
        while len(finished) < len(frames):
            while len(sent) < len(frames) and len(sent) - len(finished) < 4:
                f = frames[len(sent)]
                self.host.send(f)
                sent.add(f['job_id'])
            d = self.host.wait(lambda f: (f['op'] == 'done' and f.get('job_id') in sent
                                          and f['job_id'] not in finished), 'a done')
            finished[d['job_id']] = d
        for i, j in enumerate(jobs):
            self.assertEqual(finished[j.id]['outcome'], 'ok', finished[j.id])
            self.assertEqual(pickle.loads(unb64(finished[j.id]['return_value'])), 2 * i)


class SeparateHostTests(unittest.TestCase):
    """Behaviours that end or reconfigure a host: one host each."""

    def setUp(self):
        self.conn = REDIS.conn()
        self.queue = Queue('hosttest-sep', connection=self.conn)
        self.host = None

    def tearDown(self):
        if self.host is not None:
            self.host.close()

    def test_fatal_on_bad_preload(self):
        self.host = HostProc()
        r = self.host.init(preload=['hosttasks', 'no_such_module_xyz'])
        self.assertEqual(r, {'op': 'fatal', 'error': "cannot import preload module 'no_such_module_xyz': "
                                                     "ModuleNotFoundError: No module named 'no_such_module_xyz'"})
        self.assertEqual(self.host.exit_code(), 3)

    def test_fatal_on_bad_before_job(self):
        self.host = HostProc()
        r = self.host.init(before_job='hosttasks.no_such_hook')
        self.assertEqual(r['op'], 'fatal')
        self.assertIn("before_job 'hosttasks.no_such_hook'", r['error'])
        self.assertNotIn('\n', r['error'])
        self.assertEqual(self.host.exit_code(), 3)

    def test_output_byte_cap(self):
        self.host = HostProc()
        self.assertEqual(self.host.init(max_output_bytes=1000)['op'], 'ready')
        job = self.queue.enqueue('hosttasks.flood', 100, 100)
        self.host.send(run_frame(job))
        done = self.host.done(job.id)
        self.assertEqual(done['outcome'], 'ok', done)
        out = [f for f in self.host.for_job(job.id) if f['op'] == 'output']
        forwarded = [f['text'] for f in out if f['stream'] == 'stdout']
        self.assertEqual(sum(len(t.encode()) for t in forwarded), 1000)
        self.assertEqual(forwarded[:10], [('%05d' % i) + 'y' * 95 for i in range(10)])
        self.assertEqual(out[-1]['stream'], 'stderr')
        self.assertIn('9000', out[-1]['text'])

    def test_eof_kills_running_children(self):
        self.host = HostProc()
        self.assertEqual(self.host.init()['op'], 'ready')
        pidfile = os.path.join(TMP, 'forever.pid')
        job = self.queue.enqueue('hosttasks.forever', pidfile)
        self.host.send(run_frame(job))
        pid = read_pid(pidfile)
        self.host.proc.stdin.close()
        self.assertEqual(self.host.exit_code(), 0)
        self.assertFalse(pid_alive(pid))

    def test_job_runs_in_a_child_forked_before_its_frame(self):
        self.host = HostProc()
        self.assertEqual(self.host.init()['op'], 'ready')
        spare = wait_for(lambda: children_of(self.host.proc.pid), 'a spare child')
        job = self.queue.enqueue('hosttasks.add', 1, 2)
        self.host.send(run_frame(job))
        started = self.host.wait(lambda f: f['op'] == 'started', 'started')
        self.assertIn(started['pid'], spare)
        self.assertEqual(self.host.done(job.id)['outcome'], 'ok')

    def test_gathers_its_memory_into_huge_pages_unless_told_not_to(self):
        self.host = HostProc()
        ready = self.host.init()
        self.assertEqual(ready['op'], 'ready')
        if madv_collapse_expected():
            self.assertGreater(ready['huge_page_bytes'], 2 << 20, ready)
        else:
            self.assertGreaterEqual(ready['huge_page_bytes'], 0, ready)
        job = self.queue.enqueue('hosttasks.add', 2, 3)
        self.host.send(run_frame(job))
        done = self.host.done(job.id)
        self.assertEqual(done['outcome'], 'ok', done)
        self.assertEqual(pickle.loads(unb64(done['return_value'])), 5)
        self.host.close()
        self.host = HostProc(env={'RUNQ_PYTHON_HUGE_PAGES': '0'})
        ready = self.host.init()
        self.assertEqual((ready['op'], ready['huge_page_bytes']), ('ready', 0), ready)

    def test_keeps_one_spare_beyond_the_free_slots(self):
        self.host = HostProc()
        self.assertEqual(self.host.init()['op'], 'ready')
        # One slot seen so far and no job: that slot's spare plus one.
        spares = wait_for(lambda: len(children_of(self.host.proc.pid)) == 2 and
                          children_of(self.host.proc.pid), 'two spare children')
        pidfile = os.path.join(TMP, 'spare-plus-one.pid')
        job = self.queue.enqueue('hosttasks.forever', pidfile)
        self.host.send(run_frame(job))
        running = read_pid(pidfile)
        self.assertIn(running, spares)
        # The slot is busy: one spare stays ready and no third child is forked.
        time.sleep(0.3)
        self.assertEqual(sorted(children_of(self.host.proc.pid)), sorted(spares))
        self.host.send({'op': 'kill', 'job_id': job.id})
        self.assertEqual(self.host.done(job.id)['outcome'], 'killed')

    def test_spare_that_dies_without_a_job_is_replaced(self):
        self.host = HostProc()
        self.assertEqual(self.host.init()['op'], 'ready')
        spare = wait_for(lambda: children_of(self.host.proc.pid), 'a spare child')[0]
        os.kill(spare, signal.SIGKILL)
        wait_for(lambda: [p for p in children_of(self.host.proc.pid) if p != spare], 'a new spare')
        job = self.queue.enqueue('hosttasks.add', 2, 2)
        self.host.send(run_frame(job))
        done = self.host.done(job.id)
        self.assertEqual(done['outcome'], 'ok', done)
        self.assertEqual([f['op'] for f in self.host.for_job(job.id)], ['started', 'done'])
        self.host.send({'op': 'ping', 'seq': 5})
        self.assertEqual(self.host.wait(lambda f: f['op'] == 'pong', 'pong')['children'], 0)
        self.assertEqual([f for f in self.host.frames if f['op'] == 'error'], [])

    def test_eof_kills_idle_spares(self):
        self.host = HostProc()
        self.assertEqual(self.host.init()['op'], 'ready')
        spares = wait_for(lambda: children_of(self.host.proc.pid), 'a spare child')
        self.host.proc.stdin.close()
        self.assertEqual(self.host.exit_code(), 0)
        wait_for(lambda: not any(pid_alive(p) for p in spares), 'the spares to be gone')

    def test_bad_length_ends_stream(self):
        self.host = HostProc()
        self.assertEqual(self.host.init()['op'], 'ready')
        self.host.send_raw((256 * 1024 * 1024 + 1).to_bytes(4, 'big'))
        self.assertEqual(self.host.exit_code(), 2)  # broken stream (a clean EOF exits 0)


if __name__ == '__main__':
    unittest.main(verbosity=2)
