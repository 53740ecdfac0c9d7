"""runq Python task host (protocol v1, see PROTOCOL.md next to this file).

One host runs per runq-worker process. It owns:

- the protocol stream: length-prefixed JSON frames read from stdin and written to the
  original stdout (fd 1 and fd 0 are re-pointed at stderr and /dev/null so nothing else
  can touch the stream);
- the Python side of start-up: sys.path, importing `rq`, `redis` and the configured
  preload modules exactly once, resolving `before_job`, then freezing the GC heap;
- one forked child per `run` / `callback` frame: process group, signal set-up and output
  pipes done before the job arrives (spare children are forked while the host is idle),
  then the job frame over a private pipe, a lazily connecting Redis client, an rq Job
  restored from the claimed hash, and the job run the way rq's work horse runs it
  (Worker.perform_job in rq 3.0), reporting ONE result frame over another pipe;
- supervision of those children from a single-threaded epoll loop: output
  forwarding (line cut, per-job byte cap), kill requests (SIGTERM, SIGKILL after a
  grace), reaping (leader exit -> SIGKILL the group -> reap -> wait for the group to be
  empty -> `done`), orphan reaping (the host is a child subreaper), and health pings.

It is embedded in the runq-worker binary and run as a script, so it is self-contained:
the standard library plus rq and redis from the user's environment (msgpack only for
msgpack jobs).
"""

import base64
import gc
import heapq
import importlib
import inspect
import json
import os
import random  # noqa: F401 -- its at-fork hook reseeds `random` in every child, as rq does
import select
import signal
import sys
import time
import traceback

PROTOCOL_VERSION = 1
MAX_FRAME = 256 * 1024 * 1024
MAX_RETURN_VALUE = 64 * 1024 * 1024
MAX_EXC_STRING = 32 * 1024 * 1024
LINE_CUT = 8 * 1024
READ_CHUNK = 256 * 1024
GROUP_WAIT_CAP = 10.0  # seconds a job's group may linger after its leader is reaped

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

EXIT_FATAL = 3


class StreamBroken(Exception):
    """The protocol stream to or from the worker is unusable: the host must stop.
    exit_code 0 for a clean EOF on stdin, 2 for anything else."""

    def __init__(self, message, exit_code=2):
        super().__init__(message)
        self.exit_code = exit_code


class FrameError(Exception):
    """A frame from the worker that the host cannot act on (answered with `error`).
    names_job=False: the error must not name the frame's job_id (a duplicate `run` of a
    job that is running: naming it would make the worker give up on the running one)."""

    def __init__(self, message, names_job=True):
        super().__init__(message)
        self.names_job = names_job


def one_line(text):
    """Collapse text to one line (for `fatal` and `error` frames)."""
    return ' '.join(str(text).split())


def exc_last_line(exc):
    """`Type: message` of an exception, as the last line of its traceback shows it."""
    lines = traceback.format_exception_only(type(exc), exc)
    return one_line(lines[-1] if lines else repr(exc))


# ----------------------------------------------------------------------------------------
# Framing


def encode_frame(obj):
    """Any frame, through the json module (the rare frames)."""
    return frame_of(json.dumps(obj, ensure_ascii=False, separators=(',', ':')))


def frame_of(text):
    """Frame a JSON text (or UTF-8 bytes). Lone surrogates (from undecodable file names in
    tracebacks, say) become U+FFFD so the frame is always valid UTF-8."""
    body = text.encode('utf-8', 'replace') if isinstance(text, str) else text
    if len(body) > MAX_FRAME:
        raise ValueError('frame of %d bytes is above the %d byte limit' % (len(body), MAX_FRAME))
    return len(body).to_bytes(4, 'big') + body


# The per-job frames (started, output, done, the child's result) are formatted by hand
# around the json module's C string encoder: json.dumps builds a new encoder per call, and
# in a process that forks all the time every page an encoder touches is a copy-on-write
# fault.
json_str = json.encoder.encode_basestring  # ensure_ascii=False flavour: '"text"'


def json_opt_str(value):
    return 'null' if value is None else json_str(value)


def json_opt_int(value):
    return 'null' if value is None else str(int(value))


def write_all(fd, data):
    """Blocking write of all of data (EINTR is retried by Python itself)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class FrameReader:
    """Incremental decoder: feed() bytes as they arrive, take complete frames with next()."""

    __slots__ = ('buf', 'pos')

    def __init__(self):
        self.buf = bytearray()
        self.pos = 0

    def feed(self, data):
        if self.pos and self.pos == len(self.buf):
            self.buf.clear()
            self.pos = 0
        elif self.pos > 65536:
            del self.buf[:self.pos]
            self.pos = 0
        self.buf += data

    def next_body(self):
        """The next complete frame body (bytes), or None. Raises StreamBroken on a bad length."""
        avail = len(self.buf) - self.pos
        if avail < 4:
            return None
        n = int.from_bytes(self.buf[self.pos:self.pos + 4], 'big')
        if n > MAX_FRAME:
            raise StreamBroken('frame length %d is above the %d byte limit' % (n, MAX_FRAME))
        if avail < 4 + n:
            return None
        start = self.pos + 4
        body = bytes(self.buf[start:start + n])
        self.pos = start + n
        return body

    def pending(self):
        return len(self.buf) - self.pos


def decode_body(body):
    try:
        # Frames are UTF-8 (PROTOCOL.md): decoding here skips json.loads' encoding sniffing.
        obj = json.loads(body.decode('utf-8'))
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise FrameError('frame is not valid JSON: %s' % e)
    if not isinstance(obj, dict):
        raise FrameError('frame is not a JSON object')
    return obj


# ----------------------------------------------------------------------------------------
# Start-up: init frame, imports, preloads


class Config:
    """What the init frame configured, plus the rq pieces resolved once in the host."""

    def __init__(self, frame):
        self.sys_path = list(frame.get('sys_path') or [])
        self.preload = list(frame.get('preload') or [])
        self.before_job_name = frame.get('before_job') or None
        self.redis_url = frame.get('redis_url')
        self.redis_ca_file = frame.get('redis_ca_file') or None
        grace = frame.get('kill_grace')
        self.kill_grace = float(grace) if grace is not None else 2.0
        mob = frame.get('max_output_bytes')
        self.max_output_bytes = int(mob) if mob is not None else 1024 * 1024
        self.before_job = None
        self.rq = None  # RqApi
        self.client = None  # redis.Redis, never used in the host itself
        self.huge_page_bytes = 0  # of the host's memory, after collapse_huge_pages


class RqApi:
    """The rq / redis entry points the children use, resolved once with version fallbacks
    (rq 3.0.0 is the target; rq 1.16 works through the older spellings)."""

    def __init__(self):
        import redis
        import rq
        import rq.exceptions
        import rq.job
        import rq.serializers
        import rq.timeouts
        import rq.utils

        self.redis = redis
        self.version = getattr(rq, '__version__', None) or getattr(rq, 'VERSION', '?')
        self.Job = rq.job.Job
        self.JobStatus = rq.job.JobStatus
        self.Retry = rq.job.Retry
        try:
            major = int(str(self.version).split('.')[0])
        except ValueError:
            major = 0
        # rq 1.x stores a returned Retry as an ordinary result; rq 3 re-enqueues the job.
        self.retry_returns = major >= 3
        self.serializers = {
            'pickle': rq.serializers.DefaultSerializer,
            'json': rq.serializers.JSONSerializer,
        }
        self.DeathPenalty = rq.timeouts.UnixSignalDeathPenalty
        self.JobTimeoutException = rq.timeouts.JobTimeoutException
        self.AbandonedJobError = getattr(rq.exceptions, 'AbandonedJobError', Exception)
        self.utcparse = rq.utils.utcparse
        # rq 1.x stamps naive UTC datetimes (utcnow), rq 3 aware ones (now).
        self.now = getattr(rq.utils, 'utcnow', None) or rq.utils.now
        self.unserializable = 'Unserializable return value'
        try:
            from rq.defaults import UNSERIALIZABLE_RETURN_VALUE_PAYLOAD
            self.unserializable = UNSERIALIZABLE_RETURN_VALUE_PAYLOAD
        except ImportError:
            pass
        self.format_exc_info = None
        for modname in ('rq.job_lifecycle', 'rq.utils'):
            try:
                mod = importlib.import_module(modname)
            except ImportError:
                continue
            if hasattr(mod, 'format_exc_info'):
                self.format_exc_info = mod.format_exc_info
                break
        if self.format_exc_info is None:
            self.format_exc_info = lambda exc_info: ''.join(traceback.format_exception(*exc_info))
        try:
            import rq.callbacks as cbmod
            self.cb_success = getattr(cbmod, 'execute_success_callback', None)
            self.cb_failure = getattr(cbmod, 'execute_failure_callback', None)
        except ImportError:
            self.cb_success = self.cb_failure = None
        try:
            from rq.connections import push_connection
            self.push_connection = push_connection  # rq 1.x: Queue() without connection
        except ImportError:
            self.push_connection = None
        self._msgpack = None

    def job_serializer_arg(self, serializer):
        """What Job() is given for serializer S: None for rq's default (pickle), which
        Job() resolves to that same DefaultSerializer without the Protocol isinstance
        check rq 3 makes for an explicit one (a cost paid in every child)."""
        return None if serializer is self.serializers['pickle'] else serializer

    def serializer(self, name):
        s = self.serializers.get(name or 'pickle')
        if s is not None:
            return s
        if name == 'msgpack':
            return self.msgpack_serializer()
        raise ValueError('unknown serializer %r' % (name,))

    def msgpack_serializer(self):
        if self._msgpack is None:
            import msgpack

            class MsgpackSerializer:
                dumps = staticmethod(msgpack.packb)

                @staticmethod
                def loads(data):
                    return msgpack.unpackb(data, raw=False)

            self._msgpack = MsgpackSerializer
        return self._msgpack

    def execute_success_callback(self, job, result):
        if self.cb_success is not None:
            self.cb_success(job, self.DeathPenalty, result)
        else:
            job.execute_success_callback(self.DeathPenalty, result)

    def execute_failure_callback(self, job, *exc_info):
        if self.cb_failure is not None:
            self.cb_failure(job, self.DeathPenalty, *exc_info)
        else:
            job.execute_failure_callback(self.DeathPenalty, *exc_info)


def resolve_callable(dotted):
    """Resolve 'pkg.mod.attr' (or 'pkg.mod.Class.attr'), reporting the real import error."""
    mod_name, _, attr = dotted.rpartition('.')
    if not mod_name:
        raise ValueError('%r is not a dotted path' % dotted)
    try:
        obj = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as first:
        try:
            from rq.utils import import_attribute
            obj = import_attribute(dotted)
        except Exception:
            raise first
    if not callable(obj):
        raise TypeError('%r is not callable' % dotted)
    return obj


def load_libc():
    """The C library through ctypes (raises where ctypes or libc is unavailable)."""
    import ctypes
    return ctypes.CDLL(None, use_errno=True)


def load_libc_prctl():
    """prctl(2) through ctypes, or None when unavailable."""
    try:
        import ctypes
        prctl = load_libc().prctl
        prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        prctl.restype = ctypes.c_int
        return prctl
    except Exception:
        return None


MADV_COLLAPSE = 25  # Linux 6.1+; EINVAL on older kernels, which then keep small pages
HUGE_PAGE = 2 << 20


def collapse_huge_pages():
    """Gather the host's anonymous memory (the heap and the preloads' objects) into 2 MB
    transparent huge pages with madvise(MADV_COLLAPSE), once, before the first fork.
    A fork then copies, and a child's exit drops, one entry per huge page (or, once the
    host's own writes have split an entry, one batch per 512 pages) instead of 512
    page-table entries each: a fork per job is mostly that kernel work. Copy-on-write
    still copies 4 KB pages (since Linux 5.8 the kernel splits a shared huge page on write
    rather than copying it; MADV_COLLAPSE exists only on 6.1+). Off with
    RUNQ_PYTHON_HUGE_PAGES=0. Returns the bytes now in huge pages (AnonHugePages)."""
    if os.environ.get('RUNQ_PYTHON_HUGE_PAGES', '1') == '0' or not sys.platform.startswith('linux'):
        return 0
    try:
        import ctypes
        madvise = load_libc().madvise
        madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        madvise.restype = ctypes.c_int
        with open('/proc/self/maps') as f:
            maps = f.read().splitlines()
    except Exception:
        return 0
    for line in maps:
        fields = line.split()
        # Private writable anonymous mappings (no path; the brk heap): not stacks, not files.
        if len(fields) < 5 or fields[1] != 'rw-p' or (len(fields) > 5 and fields[5] != '[heap]'):
            continue
        start, end = (int(x, 16) for x in fields[0].split('-'))
        lo = (start + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1)
        hi = end & ~(HUGE_PAGE - 1)
        if hi - lo >= HUGE_PAGE:
            madvise(lo, hi - lo, MADV_COLLAPSE)  # a failure (old kernel, no free huge page) keeps small pages
    return anon_huge_bytes()


def anon_huge_bytes():
    try:
        with open('/proc/self/smaps_rollup') as f:
            for line in f:
                if line.startswith('AnonHugePages:'):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def preload(frame):
    """Apply an init frame. Returns (Config, None) or (None, 'one-line error')."""
    if frame.get('op') != 'init':
        return None, 'expected an init frame, got op %r' % (frame.get('op'),)
    if frame.get('protocol') != PROTOCOL_VERSION:
        return None, 'unsupported protocol %r (this host speaks %d)' % (frame.get('protocol'), PROTOCOL_VERSION)
    try:
        cfg = Config(frame)
    except Exception as e:
        return None, 'bad init frame: %s' % exc_last_line(e)
    sys.path[0:0] = [p for p in cfg.sys_path if isinstance(p, str)]
    for name in ('redis', 'rq'):
        try:
            importlib.import_module(name)
        except BaseException as e:
            return None, 'cannot import %s: %s' % (name, exc_last_line(e))
    try:
        cfg.rq = RqApi()
    except BaseException as e:
        return None, 'cannot use rq: %s' % exc_last_line(e)
    if not isinstance(cfg.redis_url, str) or not cfg.redis_url:
        return None, 'init frame has no redis_url'
    try:
        # Built once here and inherited by every child through fork: redis-py connects
        # on the first command, and its pool notices the new pid and starts empty, so
        # each child still gets its own connection -- without paying for the client's
        # construction (and the page copies it causes) once per job.
        cfg.client = redis_client(cfg)
    except Exception as e:
        return None, 'invalid redis_url: %s' % exc_last_line(e)
    for name in cfg.preload:
        try:
            importlib.import_module(name)
        except BaseException as e:
            return None, 'cannot import preload module %r: %s' % (name, exc_last_line(e))
    if cfg.before_job_name:
        try:
            cfg.before_job = resolve_callable(cfg.before_job_name)
        except BaseException as e:
            return None, 'cannot resolve before_job %r: %s' % (cfg.before_job_name, exc_last_line(e))
    warm_up(cfg)
    gc.collect()
    if hasattr(gc, 'freeze'):
        gc.freeze()
    cfg.huge_page_bytes = collapse_huge_pages()
    return cfg, None


WARM_UP_ROUNDS = 10  # CPython 3.11 specializes a function's bytecode from its 8th call


def warm_up(cfg):
    """Run the per-job code paths in the host, WARM_UP_ROUNDS times, so lazy imports and
    caches (strptime's module and regexes, redis-py's URL parsing, rq's Job attributes) are
    filled, and that bytecode specialized, before the first fork: in a child the same work
    (and the page copies it causes) would be redone for every job and lost at its exit.
    Touches no Redis (redis-py connects on its first command) and runs no user code."""
    try:
        timeout = warm_up_timeout()
        for _ in range(WARM_UP_ROUNDS):
            warm_up_round(cfg, timeout)
    except Exception as e:
        print('runq host: warm-up skipped: %s' % exc_last_line(e), file=sys.stderr, flush=True)


def warm_up_timeout():
    """The timeout warm_up's jobs run under. Their death penalty arms SIGALRM in the host
    and resets it to the default after, so: only while nothing in the host uses SIGALRM
    (no handler, no pending alarm from a preload module); else none."""
    if signal.getsignal(signal.SIGALRM) != signal.SIG_DFL:
        return None
    pending = signal.alarm(0)
    if pending:
        signal.alarm(pending)
        return None
    return 3600


def warm_up_noop():
    """The function of warm_up's jobs (returns a value, so its serialization runs too)."""
    return 0


def warm_up_round(cfg, timeout):
    """One job per serializer through the child's path (restore_job, perform_job, the
    result frame), a failure text, and what a child's first Redis command needs."""
    import pickle
    import zlib
    api = cfg.rq
    stamp = '2000-01-01T00:00:00.000000Z'
    for name in ('pickle', 'json'):
        serializer = api.serializer(name)
        data = serializer.dumps(['%s.warm_up_noop' % __name__, None, [], {}])
        fields = {'data': zlib.compress(data), 'created_at': stamp, 'enqueued_at': stamp,
                  'status': 'queued', 'origin': 'q', 'timeout': '180', 'meta': serializer.dumps({})}
        frame = {'job_id': 'runq-host-warm-up', 'status': 'started', 'started_at': stamp,
                 'worker_name': 'runq-host-warm-up',
                 'hash': {k: base64.b64encode(v if isinstance(v, bytes) else v.encode()).decode()
                          for k, v in fields.items()}}
        job = restore_job(cfg, frame, cfg.client, serializer)
        job.to_dict()
        result = perform_job(api, job, serializer, timeout)
        if result['outcome'] != 'ok':
            raise RuntimeError('the warm-up job failed: %s' % one_line(result.get('exc_string')))
        encode_result(result)
    try:
        raise ValueError('warm-up')
    except ValueError:
        encode_result(failed_result(api, sys.exc_info()))
    pickle.dumps(None)
    # A child's first Redis command builds a Connection (see redis_client) and
    # resolves the host name (getaddrinfo imports the idna codec): once here.
    pool = cfg.client.connection_pool
    pool.connection_class(**pool.connection_kwargs)
    'localhost'.encode('idna')


def redis_client(cfg, url=None):
    kwargs = {}
    if cfg.redis_ca_file:
        kwargs['ssl_ca_certs'] = cfg.redis_ca_file
    driver_info = default_driver_info(cfg.rq.redis)
    if driver_info is not None:
        kwargs['driver_info'] = driver_info
    return cfg.rq.redis.Redis.from_url(url or cfg.redis_url, **kwargs)


def default_driver_info(redis):
    """redis-py 8 builds a DriverInfo per Connection, and a default one looks the package
    version up through importlib.metadata (a METADATA parse, ~3-10 ms) -- in every child,
    on its first command. The same default DriverInfo built once here sends the same
    CLIENT SETINFO. None where the Connection takes no driver_info (older redis-py
    computes its version once, at import)."""
    try:
        from redis.driver_info import DriverInfo
        conn_mod = redis.connection
        cls = getattr(conn_mod, 'AbstractConnection', None) or conn_mod.Connection
        if 'driver_info' not in inspect.signature(cls.__init__).parameters:
            return None
        return DriverInfo()
    except Exception:
        return None


# ----------------------------------------------------------------------------------------
# Child side: process set-up, the job run, the callback run


def setup_child(host, w_out, w_err):
    """First thing in a forked child, before it has a job: the host's fds, own group,
    death signal, signals, output pipes."""
    for fd in host.fds_for_child_to_close():
        try:
            os.close(fd)
        except OSError:
            pass
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    if host.prctl is not None:
        host.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != host.pid:  # the host died before the death signal was armed
        os._exit(1)
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    # SIGPIPE stays ignored, as Python (and so rq's work horse) sets it.
    os.dup2(w_out, 1)
    os.dup2(w_err, 2)
    os.close(w_out)
    os.close(w_err)
    try:
        sys.stdout.reconfigure(line_buffering=True)
    except Exception:
        pass


def read_body(fd):
    """One frame's body from fd (blocking), or None when fd reached EOF before a whole
    frame: for a child's job pipe, the host closed it without handing a job (it is
    shutting down, or the spare is retired)."""
    reader = FrameReader()
    while True:
        body = reader.next_body()
        if body is not None:
            return body
        data = os.read(fd, READ_CHUNK)
        if not data:
            return None
        reader.feed(data)


def setup_job_env(frame):
    """os.environ as rq's fork_work_horse sets it, then the frame's `env` (which wins).
    (`random` needs no reseeding here: its own at-fork hook reseeded it in this child.)"""
    worker_name = frame.get('worker_name')
    if worker_name:  # (callback frames carry none)
        os.environ['RQ_WORKER_ID'] = str(worker_name)
    os.environ['RQ_JOB_ID'] = str(frame['job_id'])
    env = frame.get('env')
    if env:
        for k, v in env.items():
            os.environ[str(k)] = '' if v is None else str(v)


def child_connection(cfg, frame):
    """The child's Redis client (the host's unused one, now this process's own; it
    connects on its first command), or one for the frame's `redis_url` when the worker
    says the master moved (Sentinel) since the init frame."""
    moved = frame.get('redis_url')
    if isinstance(moved, str) and moved and moved != cfg.redis_url:
        conn = redis_client(cfg, moved)
    else:
        conn = cfg.client
    if conn is None:
        conn = redis_client(cfg)
    if cfg.rq.push_connection is not None:
        cfg.rq.push_connection(conn)  # rq 1.x: Queue() / Job.fetch() without connection=
    return conn


def restore_job(cfg, frame, conn, serializer):
    """rq Job from the frame's hash, with the claim's status/started_at/worker_name."""
    api = cfg.rq
    raw = {}
    for k, v in (frame.get('hash') or {}).items():
        raw[k.encode('utf-8')] = base64.b64decode(v) if v is not None else b''
    job = api.Job(frame['job_id'], connection=conn, serializer=api.job_serializer_arg(serializer))
    job.restore(raw)
    status = frame.get('status')
    if status:
        job._status = api.JobStatus(status)
    started_at = frame.get('started_at')
    if started_at:
        job.started_at = api.utcparse(started_at)
    if frame.get('worker_name'):
        job.worker_name = frame['worker_name']
    return job


class ReturnValueTooLarge(Exception):
    pass


def serialize_return_value(api, serializer, rv):
    """base64 of S.dumps(rv) (None for None), as rq.results stores it."""
    if rv is None:
        return None
    try:
        payload = serializer.dumps(rv)
    except BaseException:
        payload = serializer.dumps(api.unserializable)
    if len(payload) > MAX_RETURN_VALUE:
        raise ReturnValueTooLarge(
            'serialized return value is %d bytes, above the %d byte limit' % (len(payload), MAX_RETURN_VALUE))
    return base64.b64encode(payload).decode('ascii')


def cap_exc_string(text):
    if len(text) <= MAX_EXC_STRING:
        return text
    head = MAX_EXC_STRING // 32
    tail = MAX_EXC_STRING - head - 100
    return '%s\n[runq: %d characters cut]\n%s' % (text[:head], len(text) - head - tail, text[-tail:])


def failed_result(api, exc_info):
    fmt = api.format_exc_info if api is not None else (lambda ei: ''.join(traceback.format_exception(*ei)))
    return {'outcome': 'failed', 'exc_string': cap_exc_string(fmt(exc_info))}


def timeout_seconds(value):
    if value is None:
        return None
    try:
        t = float(value)
    except (TypeError, ValueError):
        return None
    if t <= 0:
        return None
    return int(-(-t // 1))  # ceil: SIGALRM takes whole seconds


def run_job(cfg, frame):
    """Run one job as rq 3.0's Worker.perform_job / _finalize_success / _finalize_failure do;
    returns the result dict for the result frame."""
    api = cfg.rq
    serializer = api.serializer(frame.get('serializer'))
    job = restore_job(cfg, frame, child_connection(cfg, frame), serializer)
    return perform_job(api, job, serializer, timeout_seconds(frame.get('timeout')), cfg.before_job)


def perform_job(api, job, serializer, timeout, before_job=None):
    """before_job, then the job under its death penalty, then the success or failure path;
    the result dict."""
    try:
        if before_job is not None:
            before_job(job)
        if timeout:
            with api.DeathPenalty(timeout, api.JobTimeoutException, job_id=job.id):
                rv = job.perform()
        else:
            rv = job.perform()
        return finalize_success(api, job, serializer, rv)
    except:  # noqa: E722 -- rq catches everything here, SystemExit included
        return finalize_failure(api, job, sys.exc_info())


def finalize_success(api, job, serializer, rv):
    job.ended_at = api.now()
    job._result = rv
    if api.retry_returns and isinstance(rv, api.Retry):
        return {'outcome': 'retry', 'max': rv.max, 'intervals': list(rv.intervals),
                'return_value': serialize_return_value(api, serializer, rv),
                'at_front': bool(getattr(rv, 'enqueue_at_front', False))}
    job._status = api.JobStatus.FINISHED
    api.execute_success_callback(job, rv)
    # rq serializes the result after the success callback (Result.create in
    # handle_job_success); a result too large for runq fails the job from here, so the
    # failure callback runs after the success callback in that one case.
    return {'outcome': 'ok', 'return_value': serialize_return_value(api, serializer, rv)}


def finalize_failure(api, job, exc_info):
    job._status = api.JobStatus.FAILED
    job.ended_at = api.now()
    try:
        api.execute_failure_callback(job, *exc_info)
    except:  # noqa: E722 -- a failing callback replaces the job's exception
        exc_info = sys.exc_info()
    return failed_result(api, exc_info)


def run_callback(cfg, frame):
    """Run a job's success/failure/stopped callback outside a job run (`callback` op)."""
    api = cfg.rq
    kind = frame.get('kind')
    serializer = api.serializer(frame.get('serializer'))
    conn = child_connection(cfg, frame)
    job = restore_job(cfg, frame, conn, serializer)
    try:
        callback = getattr(job, '%s_callback' % kind)
        if callback is None:
            return {'outcome': 'ok', 'return_value': None}
        if inspect.iscoroutinefunction(callback):
            raise TypeError('Coroutine %s callbacks are not supported' % kind)
        timeout = timeout_seconds(frame.get('timeout'))
        if timeout is None:
            timeout = timeout_seconds(getattr(job, '%s_callback_timeout' % kind, None))
        if kind == 'success':
            rv = frame.get('return_value')
            args = (serializer.loads(base64.b64decode(rv)) if rv is not None else None,)
        elif kind == 'failure' and frame.get('abandoned'):
            # rq's StartedJobRegistry.cleanup for a job whose worker died.
            abandoned = api.AbandonedJobError
            args = (abandoned, abandoned(), None)
        elif kind == 'failure':
            exc = Exception(frame.get('exc_string') or '')
            args = (Exception, exc, None)
        else:
            args = ()
        if timeout:
            with api.DeathPenalty(timeout, api.JobTimeoutException, job_id=job.id):
                callback(job, job.connection, *args)
        else:
            callback(job, job.connection, *args)
        return {'outcome': 'ok', 'return_value': None}
    except:  # noqa: E722
        return failed_result(api, sys.exc_info())


def encode_result(result):
    """The child's result frame. `outcome` comes first: the host splices the body into
    its `done` frame without parsing it."""
    outcome = result['outcome']
    if outcome == 'ok':
        text = '{"outcome":"ok","return_value":%s}' % json_opt_str(result['return_value'])
    elif outcome == 'failed':
        text = '{"outcome":"failed","exc_string":%s}' % json_str(result['exc_string'])
    else:
        text = json.dumps(result, ensure_ascii=False, separators=(',', ':'))
    return frame_of(text)


def child_main(host, r_job, w_res, w_out, w_err):
    """Body of a forked child: set itself up, wait for its one job (or callback) on the
    job pipe, run it, write the result frame to the result pipe. Never returns: every
    path ends in os._exit."""
    code = 1
    try:
        data = child_result_frame(host, r_job, w_out, w_err)
        if data is not None:
            flush_std_streams()
            write_all(w_res, data)
        code = 0
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def child_result_frame(host, r_job, w_out, w_err):
    """Set up, take the job from the job pipe and run it: its encoded result frame, or
    None when the host closed the pipe without handing a job."""
    api = host.cfg.rq
    setup_failure = None
    try:
        setup_child(host, w_out, w_err)
    except:  # noqa: E722 -- reported as the job's failure once the job is here
        setup_failure = failed_result(api, sys.exc_info())
    body = read_body(r_job)
    os.close(r_job)
    if body is None:
        return None
    result = setup_failure or run_frame(host.cfg, body)
    try:
        return encode_result(result)
    except Exception:
        return encode_result(failed_result(api, sys.exc_info()))


def run_frame(cfg, body):
    """Run the `run` or `callback` frame (its body as the worker sent it): the result."""
    try:
        frame = json.loads(body.decode('utf-8'))
        setup_job_env(frame)
        if frame['op'] == 'run':
            return run_job(cfg, frame)
        return run_callback(cfg, frame)
    except:  # noqa: E722 -- set-up or restore failed: report it as the job's failure
        return failed_result(cfg.rq, sys.exc_info())


def flush_std_streams():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


# ----------------------------------------------------------------------------------------
# Host side: timers, output forwarding, children


class Timers:
    """Deadlines on the monotonic clock; cancel() by flag."""

    def __init__(self):
        self.heap = []
        self.seq = 0

    def add(self, delay, fn):
        self.seq += 1
        entry = [time.monotonic() + delay, self.seq, fn, True]
        heapq.heappush(self.heap, entry)
        return entry

    @staticmethod
    def cancel(entry):
        if entry is not None:
            entry[3] = False

    def timeout(self):
        while self.heap and not self.heap[0][3]:
            heapq.heappop(self.heap)
        if not self.heap:
            return None
        return max(0.0, self.heap[0][0] - time.monotonic())

    def run_due(self):
        now = time.monotonic()
        while self.heap and self.heap[0][0] <= now:
            entry = heapq.heappop(self.heap)
            if entry[3]:
                entry[3] = False
                entry[2]()


def utf8_cut(data, limit):
    """Largest n <= limit such that data[:n] does not end inside a UTF-8 sequence."""
    if len(data) <= limit:
        return len(data)
    n = limit
    while n > 0 and limit - n < 3 and (data[n] & 0xC0) == 0x80:
        n -= 1
    return n if n > 0 else limit


class OutputStream:
    __slots__ = ('name', 'fd', 'buf')

    def __init__(self, name, fd):
        self.name = name
        self.fd = fd
        self.buf = bytearray()


class Child:
    """One forked child, from its fork to its `done` frame: a spare (set up, waiting on its
    job pipe) until the host hands it a job, then that job's (or callback's) child. The
    host holds the write end of the job pipe (until the frame is written) and the read
    ends of the result, stdout and stderr pipes."""

    __slots__ = ('pid', 'job_id', 'op', 'job_fd', 'outbox', 'result_fd', 'result', 'streams',
                 'out_budget', 'out_dropped', 'kill_requested', 'kill_timer', 'leader_exited',
                 'status', 'group_timer', 'group_deadline', 'group_delay', 'finished',
                 'result_body')

    def __init__(self, pid, job_fd, result_fd, out_fd, err_fd, budget):
        self.pid = pid
        self.job_id = None  # None while a spare
        self.op = None
        self.job_fd = job_fd
        self.outbox = None  # memoryview of the job frame not yet written to job_fd
        self.result_fd = result_fd
        self.result = FrameReader()
        self.streams = [OutputStream('stdout', out_fd), OutputStream('stderr', err_fd)]
        self.out_budget = budget
        self.out_dropped = 0
        self.kill_requested = False
        self.kill_timer = None
        self.leader_exited = False
        self.status = None
        self.group_timer = None
        self.group_deadline = None
        self.group_delay = 0.001
        self.finished = False
        self.result_body = None

    def fds(self):
        fds = [s.fd for s in self.streams if s.fd is not None]
        for fd in (self.job_fd, self.result_fd):
            if fd is not None:
                fds.append(fd)
        return fds

    def complete_result(self):
        """The body of the child's result frame once it has arrived whole and well-formed
        (it starts with its outcome, see encode_result), else None."""
        if self.result_body is None:
            try:
                body = self.result.next_body()
            except StreamBroken:
                body = b''
            if body is not None:
                self.result_body = body if body.startswith(RESULT_PREFIXES) else b''
        return self.result_body or None


RESULT_PREFIXES = (b'{"outcome":"ok",', b'{"outcome":"failed",', b'{"outcome":"retry",')
MAX_SPARES = 4  # spare children kept ready at most
SPARE_RETRY = 1.0  # seconds without spares after a fork failed


class Host:
    """The event loop (epoll): frames from the worker, SIGCHLD, children's pipes, timers.
    When it has nothing else to do it forks spare children: one per slot the worker has
    free (as many as jobs ran at once, less those running now), plus one. The fork and
    the child's set-up are then done while the worker fetches the next job; the extra
    spare lets a job start at once even when its frame arrives while the host is still
    forking the spare for the job before (a fork blocks this loop for about a
    millisecond), and lets that fork run while every slot is busy. (Two extra were
    measured no faster than one.)"""

    def __init__(self, proto_in, proto_out, cfg, prctl):
        self.proto_in = proto_in
        self.proto_out = proto_out
        self.cfg = cfg
        self.prctl = prctl
        self.pid = os.getpid()
        self.reader = FrameReader()
        self.children = {}  # job_id -> Child, until its done
        self.spares = []  # Child, forked and without a job, oldest first
        self.peak = 1  # most jobs (and callbacks) seen running at once: the worker's slots
        self.spare_pause_until = 0.0  # monotonic; after a failed fork of a spare
        self.by_pid = {}  # leader pid -> Child (spares included), until reaped
        self.timers = Timers()
        self.ep = select.epoll()
        self.handlers = {}  # fd -> (method(fd, events, child), Child or None)
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        os.set_blocking(self.proto_in, False)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        self.watch(self.proto_in, self.on_stdin, None)
        self.watch(self.wake_r, self.on_wakeup, None)
        self.ops = {
            'run': self.op_run,
            'callback': self.op_callback,
            'kill': self.op_kill,
            'ping': self.op_ping,
        }

    def watch(self, fd, handler, child, events=select.EPOLLIN):
        self.ep.register(fd, events)
        self.handlers[fd] = (handler, child)

    def close_fd(self, fd):
        if self.handlers.pop(fd, None) is not None:
            try:
                self.ep.unregister(fd)
            except OSError:
                pass
        try:
            os.close(fd)
        except OSError:
            pass

    # -- protocol output ---------------------------------------------------------------

    def send(self, obj):
        self.send_frame(encode_frame(obj))

    def send_frame(self, data):
        try:
            write_all(self.proto_out, data)
        except OSError as e:
            raise StreamBroken('cannot write to the worker: %s' % e)

    def send_error(self, job_id, message):
        self.send({'op': 'error', 'job_id': job_id, 'error': one_line(message)})

    # -- the loop ------------------------------------------------------------------------

    def run(self):
        exit_code = 2
        try:
            while True:
                want_spare = self.wants_spare()
                events = self.ep.poll(0 if want_spare else self.timers.timeout())
                if want_spare and not events:
                    self.guarded(self.add_spare)
                for fd, mask in events:
                    entry = self.handlers.get(fd)
                    if entry is None:
                        continue  # stale event for an fd closed earlier in this batch
                    handler, child = entry
                    if child is not None and child.finished:
                        continue
                    self.guarded(handler, fd, mask, child)
                self.guarded(self.timers.run_due)
        except StreamBroken as e:
            exit_code = e.exit_code
            if exit_code:
                print('runq host: stopping: %s' % e, file=sys.stderr, flush=True)
        self.shutdown(exit_code)

    def guarded(self, fn, *args):
        """Run a loop step; an unexpected exception is reported, never fatal."""
        try:
            fn(*args)
        except StreamBroken:
            raise
        except Exception as e:
            traceback.print_exc()
            try:
                self.send_error(None, 'host error: %s' % exc_last_line(e))
            except StreamBroken:
                raise
            except Exception:
                pass

    def on_stdin(self, fd, _events, _child):
        try:
            data = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as e:
            raise StreamBroken('cannot read from the worker: %s' % e)
        if not data:
            if self.reader.pending():
                raise StreamBroken('EOF inside a frame')
            raise StreamBroken('EOF on stdin', exit_code=0)
        self.reader.feed(data)
        while True:
            body = self.reader.next_body()
            if body is None:
                break
            self.dispatch(body)

    def dispatch(self, body):
        """Act on one frame. An `error` reply names the frame's job_id only for a `run` or
        `callback` that was not started (so the worker can fail that job); any other
        error names no job (its text may)."""
        job_id = frame = None
        try:
            frame = decode_body(body)
            op = frame.get('op')
            if op in ('run', 'callback') and isinstance(frame.get('job_id'), str):
                job_id = frame['job_id']
            handler = self.ops.get(op)
            if handler is None:
                raise FrameError('unknown op %r%s' % (op, self.about(frame)))
            handler(frame, body)
        except StreamBroken:
            raise
        except FrameError as e:
            self.send_error(job_id if e.names_job else None, str(e))
        except Exception as e:
            traceback.print_exc()
            self.send_error(job_id, '%s%s' % (exc_last_line(e), '' if job_id else self.about(frame)))

    @staticmethod
    def about(frame):
        try:
            job_id = frame.get('job_id')
        except Exception:
            return ''
        return ' (job %s)' % job_id if isinstance(job_id, str) else ''

    # -- ops -----------------------------------------------------------------------------

    def op_ping(self, frame, _body):
        self.send({'op': 'pong', 'seq': frame.get('seq'), 'rss_bytes': rss_bytes(),
                   'children': len(self.children)})

    def op_run(self, frame, body):
        self.validate_job_frame(frame)
        self.start_job(frame, body)

    def op_callback(self, frame, body):
        self.validate_job_frame(frame)
        if frame.get('kind') not in ('success', 'failure', 'stopped'):
            raise FrameError('unknown callback kind %r' % (frame.get('kind'),))
        self.start_job(frame, body)

    def validate_job_frame(self, frame):
        job_id = frame.get('job_id')
        if not isinstance(job_id, str) or not job_id:
            raise FrameError('%s frame without a job_id' % frame.get('op'))
        if job_id in self.children:
            raise FrameError('job %s is already running: this %s frame is ignored'
                             % (job_id, frame.get('op')), names_job=False)
        if not isinstance(frame.get('hash'), dict):
            raise FrameError('%s frame without a hash' % frame.get('op'))
        name = frame.get('serializer') or 'pickle'
        if name not in ('pickle', 'json', 'msgpack'):
            raise FrameError('unknown serializer %r' % (name,))
        if name == 'msgpack':
            try:
                self.cfg.rq.msgpack_serializer()  # imported once, in the host, before fork
            except Exception:
                pass  # the child imports it again and fails the job with the traceback
        env = frame.get('env')
        if env is not None and not isinstance(env, dict):
            raise FrameError('env is not an object')

    def op_kill(self, frame, _body):
        child = self.children.get(frame.get('job_id'))
        if child is None or child.leader_exited or child.kill_requested:
            return
        self.read_result(child)
        if child.complete_result() is None:
            child.kill_requested = True
        signal_group(child.pid, signal.SIGTERM)
        child.kill_timer = self.timers.add(self.cfg.kill_grace, lambda: self.kill_deadline(child))

    def kill_deadline(self, child):
        child.kill_timer = None
        if not child.finished:
            signal_group(child.pid, signal.SIGKILL)

    # -- children: fork, spares, hand-off ------------------------------------------------

    def wants_spare(self):
        wanted = min(MAX_SPARES, self.peak - len(self.children) + 1)
        return (len(self.spares) < wanted
                and (not self.spare_pause_until or time.monotonic() >= self.spare_pause_until))

    def add_spare(self):
        """Fork one more spare; after a failure, none for SPARE_RETRY seconds (jobs still
        get a child forked for them, or the fork error)."""
        try:
            self.spares.append(self.fork_child())
            self.spare_pause_until = 0.0
        except Exception as e:
            self.spare_pause_until = time.monotonic() + SPARE_RETRY
            print('runq host: cannot fork a spare child: %s' % exc_last_line(e),
                  file=sys.stderr, flush=True)

    def take_spare(self):
        """A spare that is still alive, else a child forked now. Raises OSError when the
        fork fails."""
        while self.spares:
            child = self.spares.pop(0)
            if child.result_fd is not None and not exited(child.pid):
                return child
            # dead without a job: on_leader_exit (SIGCHLD) forgets it
        return self.fork_child()

    def fork_child(self):
        """Fork a child that sets itself up and then waits on its job pipe for a job
        (child_main). Returns its Child, tracked by pid. Raises OSError."""
        pipes = open_pipes(4)
        (r_job, w_job), (r_res, w_res), (r_out, w_out), (r_err, w_err) = pipes
        flush_std_streams()  # what the host printed, so no child inherits it buffered
        try:
            pid = os.fork()
        except BaseException:
            close_pipes(pipes)
            raise
        if pid == 0:
            try:
                for fd in (w_job, r_res, r_out, r_err):
                    os.close(fd)
                child_main(self, r_job, w_res, w_out, w_err)
            finally:
                os._exit(1)
        try:
            os.setpgid(pid, pid)  # also in the parent, so a kill right away hits the group
        except OSError:
            pass
        for fd in (r_job, w_res, w_out, w_err):
            os.close(fd)
        return self.track(Child(pid, w_job, r_res, r_out, r_err, self.cfg.max_output_bytes))

    def track(self, child):
        """A child just forked: its pipes made non-blocking, its result pipe watched."""
        self.by_pid[child.pid] = child
        try:
            for fd in child.fds():
                os.set_blocking(fd, False)
            self.watch(child.result_fd, self.on_result, child)
        except BaseException:
            self.discard(child)
            raise
        return child

    def discard(self, child):
        """Take back a child that never started a job: SIGKILL its group, reap it."""
        self.by_pid.pop(child.pid, None)
        signal_group(child.pid, signal.SIGKILL)
        try:
            os.waitpid(child.pid, 0)
        except ChildProcessError:
            pass
        for fd in child.fds():
            self.close_fd(fd)

    def start_job(self, frame, body):
        """Hand the job to a spare (or a child forked now), watch its output, say `started`."""
        job_id = frame['job_id']
        child = self.take_spare()
        try:
            child.job_id = job_id
            child.op = frame['op']
            for stream in child.streams:
                self.watch(stream.fd, self.on_output, child)
            self.hand_off(child, len(body).to_bytes(4, 'big') + body)
        except BaseException:
            # Not tracked as a job, so not started: take the child back before the error.
            self.discard(child)
            raise
        self.children[job_id] = child
        self.peak = max(self.peak, len(self.children))
        self.send_frame(frame_of('{"op":"started","job_id":%s,"pid":%d}'
                                 % (json_str(job_id), child.pid)))

    def hand_off(self, child, data):
        """Write the job frame to the child's job pipe without blocking, then close it;
        what does not fit now is written as the pipe drains (on_job_pipe)."""
        view = write_some(child.job_fd, memoryview(data))
        if view:
            child.outbox = view
            self.watch(child.job_fd, self.on_job_pipe, child, select.EPOLLOUT)
        else:
            self.close_job_pipe(child)

    def on_job_pipe(self, fd, _events, child):
        child.outbox = write_some(fd, child.outbox)
        if not child.outbox:
            self.close_job_pipe(child)

    def close_job_pipe(self, child):
        self.close_fd(child.job_fd)
        child.job_fd = child.outbox = None

    def fds_for_child_to_close(self):
        """Everything of the host's a child must not hold (called in the child)."""
        fds = [self.proto_in, self.proto_out, self.wake_r, self.wake_w, self.ep.fileno()]
        for child in self.by_pid.values():  # spares and running jobs
            fds.extend(child.fds())
        for child in self.children.values():
            if child.leader_exited:  # reaped, its group not yet empty
                fds.extend(child.fds())
        return fds

    # -- children's pipes ----------------------------------------------------------------

    def on_result(self, fd, _events, child):
        self.read_result(child)

    def read_result(self, child, max_reads=16):
        """Read what the result pipe holds now (never blocks; at most max_reads chunks, so
        one child streaming a big result cannot starve the others)."""
        fd = child.result_fd
        for _ in range(max_reads):
            if fd is None:
                return
            try:
                data = os.read(fd, READ_CHUNK)
            except BlockingIOError:
                return
            except OSError:
                data = b''
            if not data:
                self.close_fd(fd)
                child.result_fd = fd = None
                return
            child.result.feed(data)

    def on_output(self, fd, _events, child):
        for stream in child.streams:
            if stream.fd == fd:
                self.read_output(child, stream)
                return

    def read_output(self, child, stream, max_reads=16):
        """Read what the pipe holds now (never blocks; at most max_reads chunks, so a job
        writing without pause cannot starve the loop); forward complete lines."""
        for _ in range(max_reads):
            if stream.fd is None:
                return
            try:
                data = os.read(stream.fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                data = b''
            if not data:
                self.close_fd(stream.fd)
                stream.fd = None
                return
            if child.out_budget <= 0 and not stream.buf:
                child.out_dropped += len(data) - data.count(b'\n')
                continue
            stream.buf += data
            self.forward_lines(child, stream, final=False)

    def forward_lines(self, child, stream, final):
        buf = stream.buf
        start = 0
        while True:
            nl = buf.find(b'\n', start)
            if nl < 0:
                if len(buf) - start > LINE_CUT:
                    end = start + utf8_cut(buf[start:start + LINE_CUT + 1], LINE_CUT)
                    self.forward_line(child, stream, buf[start:end])
                    start = end
                    continue
                if final and start < len(buf):
                    self.forward_line(child, stream, buf[start:])
                    start = len(buf)
                break
            while nl - start > LINE_CUT:
                end = start + utf8_cut(buf[start:start + LINE_CUT + 1], LINE_CUT)
                self.forward_line(child, stream, buf[start:end])
                start = end
            line = buf[start:nl]
            if line.endswith(b'\r'):
                line = line[:-1]
            self.forward_line(child, stream, line)
            start = nl + 1
        del buf[:start]

    def forward_line(self, child, stream, line):
        if child.out_budget <= 0:
            child.out_dropped += len(line)
            return
        if len(line) > child.out_budget:
            keep = utf8_cut(line, child.out_budget)
            child.out_dropped += len(line) - keep
            line = line[:keep]
        child.out_budget -= len(line)
        self.send_frame(frame_of('{"op":"output","job_id":%s,"stream":"%s","text":%s}' % (
            json_str(child.job_id), stream.name, json_str(bytes(line).decode('utf-8', 'replace')))))

    # -- reaping -------------------------------------------------------------------------

    def on_wakeup(self, fd, _events, _child):
        try:
            while os.read(fd, 4096):
                pass
        except BlockingIOError:
            pass
        self.reap_children()

    def reap_children(self):
        """Every exited child, one waitid at a time (without reaping): a leader is handled
        by on_leader_exit; anything else is a process of a job orphaned to the host (a
        child subreaper) and is reaped here."""
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None:
                return
            child = self.by_pid.get(info.si_pid)
            if child is not None:
                self.on_leader_exit(child)
                continue
            try:
                os.waitpid(info.si_pid, 0)
            except ChildProcessError:
                pass

    def on_leader_exit(self, child):
        """Leader is a zombie (or gone): SIGKILL the group, reap the leader, then finish
        once no process of the group is left."""
        del self.by_pid[child.pid]
        child.leader_exited = True
        signal_group(child.pid, signal.SIGKILL)
        try:
            _, child.status = os.waitpid(child.pid, 0)
        except ChildProcessError:
            child.status = None
        if child.job_id is None:
            self.retire_spare(child)
        elif group_alive(child.pid):
            child.group_deadline = time.monotonic() + GROUP_WAIT_CAP
            child.group_timer = self.timers.add(child.group_delay, lambda: self.poll_group(child))
        else:
            self.finish(child)

    def retire_spare(self, child):
        """A spare died before it had a job (the OOM killer, a stray signal): forget it."""
        if child in self.spares:
            self.spares.remove(child)
        for fd in child.fds():
            self.close_fd(fd)
        child.finished = True

    def poll_group(self, child):
        child.group_timer = None
        if child.finished:
            return
        signal_group(child.pid, signal.SIGKILL)
        if not group_alive(child.pid):
            self.finish(child)
        elif time.monotonic() >= child.group_deadline:
            print('runq host: job %s: process group %d still has processes %.0fs after its '
                  'leader exited; reporting done anyway' % (child.job_id, child.pid, GROUP_WAIT_CAP),
                  file=sys.stderr, flush=True)
            self.finish(child)
        else:
            child.group_delay = min(child.group_delay * 2, 0.05)
            child.group_timer = self.timers.add(child.group_delay, lambda: self.poll_group(child))

    def finish(self, child):
        """Drain the pipes, forward the rest of the output, send `done`, forget the child."""
        try:
            # Everything the job's processes wrote is in the pipes now (they are dead), so
            # this drains them; the bound is for a process that left the group and still
            # holds a pipe open.
            self.read_result(child, max_reads=1024)
            for stream in child.streams:
                self.read_output(child, stream, max_reads=64)
                self.forward_lines(child, stream, final=True)
            if child.out_dropped:
                self.send({'op': 'output', 'job_id': child.job_id, 'stream': 'stderr',
                           'text': '[runq: output cut at %d bytes; %d more bytes dropped]'
                                   % (self.cfg.max_output_bytes, child.out_dropped)})
        except StreamBroken:
            raise
        except Exception:
            traceback.print_exc()  # and still answer: a job must never miss its done
        for fd in child.fds():
            self.close_fd(fd)
        child.job_fd = child.outbox = child.result_fd = None
        for stream in child.streams:
            stream.fd = None
        child.finished = True
        Timers.cancel(child.kill_timer)
        Timers.cancel(child.group_timer)
        del self.children[child.job_id]
        try:
            done = self.done_frame(child)
        except ValueError as e:  # a result too large to frame: should not happen (caps)
            done = frame_of('{"op":"done","job_id":%s,"outcome":"failed","exc_string":%s}'
                            % (json_str(child.job_id), json_str('runq host: %s' % e)))
        self.send_frame(done)

    def done_frame(self, child):
        status = child.status
        exit_code = sig = None
        if status is not None:
            if os.WIFSIGNALED(status):
                sig = os.WTERMSIG(status)
            elif os.WIFEXITED(status):
                exit_code = os.WEXITSTATUS(status)
        head = '{"op":"done","job_id":%s,' % json_str(child.job_id)
        body = child.complete_result()
        if body is not None and not child.kill_requested:
            return frame_of(head.encode('utf-8', 'replace') + body[1:])
        if child.kill_requested:
            return frame_of('%s"outcome":"killed","signal":%s,"exit_code":%s}'
                            % (head, json_opt_int(sig), json_opt_int(exit_code)))
        signal_msg = ' (signal %d)' % sig if sig is not None else ''
        exc_string = 'Work-horse terminated unexpectedly; waitpid returned %s%s; ' % (status, signal_msg)
        return frame_of('%s"outcome":"crashed","exit_code":%s,"signal":%s,"exc_string":%s}'
                        % (head, json_opt_int(exit_code), json_opt_int(sig), json_str(exc_string)))

    # -- shutdown ------------------------------------------------------------------------

    def shutdown(self, exit_code):
        """EOF (or a broken stream): SIGKILL the group of every job and spare, reap them,
        exit."""
        everyone = list(self.children.values()) + self.spares
        for child in everyone:
            signal_group(child.pid, signal.SIGKILL)
        for child in everyone:
            if child.pid in self.by_pid:
                try:
                    os.waitpid(child.pid, 0)
                except ChildProcessError:
                    pass
        deadline = time.monotonic() + 2.0
        for child in everyone:
            while group_alive(child.pid) and time.monotonic() < deadline:
                signal_group(child.pid, signal.SIGKILL)
                time.sleep(0.002)
        os._exit(exit_code)


def open_pipes(n):
    """n new pipes, (read fd, write fd) each; none left open if one cannot be made."""
    pipes = []
    try:
        for _ in range(n):
            pipes.append(os.pipe())
    except BaseException:
        close_pipes(pipes)
        raise
    return pipes


def close_pipes(pipes):
    for pair in pipes:
        for fd in pair:
            os.close(fd)


def write_some(fd, view):
    """Write a memoryview to a non-blocking fd until it would block; returns what is left
    (empty once all is written, or when the reader is gone)."""
    try:
        while view:
            view = view[os.write(fd, view):]
    except BlockingIOError:
        pass
    except OSError:
        return view[:0]  # the child is gone: its exit is handled as a crash
    return view


def exited(pid):
    """Has this child of ours exited (or is it not ours to wait for)? Does not reap."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def signal_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def group_alive(pgid):
    """Reap the group's processes orphaned to the host, then: is anything left in it?"""
    while True:
        try:
            pid, _ = os.waitpid(-pgid, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_PAGE_SIZE = os.sysconf('SC_PAGE_SIZE') if hasattr(os, 'sysconf') else 4096


def rss_bytes():
    try:
        with open('/proc/self/statm', 'rb') as f:
            return int(f.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return 0


# ----------------------------------------------------------------------------------------
# main


def read_init_frame(fd):
    body = read_body(fd)
    if body is None:
        raise StreamBroken('EOF before the init frame', exit_code=0)
    return body


def main():
    # The protocol stream gets private fds; fd 1 -> stderr and fd 0 -> /dev/null, so prints
    # and stdin reads of the host or of preloaded modules never touch it.
    proto_out = os.dup(1)
    proto_in = os.dup(0)
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.close(devnull)
    # The worker owns the host's lifetime (EOF on stdin stops it; SIGKILL always works):
    # a Ctrl-C or a SIGTERM sent to the whole process group must not take running jobs
    # down behind the worker's back (it may be finishing them in a warm shutdown).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if hasattr(signal, 'pthread_sigmask'):
        signal.pthread_sigmask(signal.SIG_SETMASK, [])

    def fatal(message):
        flush_std_streams()
        try:
            write_all(proto_out, encode_frame({'op': 'fatal', 'error': one_line(message)}))
        except OSError:
            pass
        os._exit(EXIT_FATAL)

    try:
        body = read_init_frame(proto_in)
        frame = decode_body(body)
    except StreamBroken as e:
        os._exit(e.exit_code)
    except Exception as e:
        fatal('bad init frame: %s' % exc_last_line(e))
    try:
        cfg, error = preload(frame)
    except BaseException as e:
        traceback.print_exc()
        cfg, error = None, 'host error during init: %s' % exc_last_line(e)
    if error is not None:
        fatal(error)
    sys.stdout.flush()  # what preloaded modules printed, before any fork can copy it
    prctl = load_libc_prctl()
    if prctl is not None:
        prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    host = Host(proto_in, proto_out, cfg, prctl)
    try:
        host.send({'op': 'ready', 'protocol': PROTOCOL_VERSION, 'pid': os.getpid(),
                   'python': '%d.%d.%d' % tuple(sys.version_info[:3]), 'rq': str(cfg.rq.version),
                   'huge_page_bytes': cfg.huge_page_bytes})
    except StreamBroken:
        os._exit(0)
    host.run()


if __name__ == '__main__':
    main()
