"""wepppy's NoDb lock()/unlock() (wepppy/nodb/base.py), re-implemented for runq's
interop tests exactly as docs/reference wepppy-redis.md sections 2.5-2.7 describe them:
SET NX EX with the compact JSON payload, fail fast with NoDbAlreadyLockedError naming
the holder, unlock by GET-compare-DEL, and the legacy `locked:<relpath>` hash flag.

Command line (Redis on 127.0.0.1:$RUNQ_TEST_REDIS_PORT, DB 0), one JSON line per report:

  wepppy_lock.py try-lock RUNID RELPATH [TTL]  one lock() attempt; unlock()s at once if it
                                               got the lock
  wepppy_lock.py hold RUNID RELPATH [TTL]      lock(), report, wait for a line on stdin,
                                               unlock(), report
"""

import json
import os
import socket
import sys
import time
import uuid
from collections import OrderedDict

import redis

LOCK_KEY_PREFIX = 'nodb-lock'
REDIS_LOCK_DB = 0


def _default_ttl():
    try:
        return max(1, int(os.environ.get('WEPPPY_LOCK_TTL_SECONDS', 6 * 3600)))
    except (TypeError, ValueError):
        return 6 * 3600


LOCK_DEFAULT_TTL = _default_ttl()


class NoDbAlreadyLockedError(Exception):
    pass


def _owner():
    return f'{socket.gethostname()}:{os.getpid()}'


def _serialize_lock_payload(token, ttl):
    now = int(time.time())
    payload = {
        'token': token,
        'owner': _owner(),
        'acquired_at': now,
        'expires_at': now + ttl,
        'ttl': ttl,
    }
    return json.dumps(payload, separators=(',', ':'))


def _parse_lock_payload(raw):
    if raw is None:
        return {}
    try:
        data = json.loads(raw)
    except (TypeError, ValueError):
        return {'token': raw}
    if isinstance(data, dict):
        return data
    return {'token': raw}


def _extract_token(raw):
    if raw is None:
        return None
    return _parse_lock_payload(raw).get('token', raw)


class NoDbController:
    """The lock half of NoDbBase for one controller file of a run."""

    def __init__(self, conn, runid, relpath):
        self.redis = conn
        self.runid = runid
        self._rel_nodb = relpath.replace('\\', '/')
        self._token = None

    @property
    def _lock_key(self):
        return f'{LOCK_KEY_PREFIX}:{self.runid}:{self._rel_nodb}'

    @property
    def _flag_field(self):
        return f'locked:{self._rel_nodb}'

    def lock(self, ttl=None):
        ttl_seconds = LOCK_DEFAULT_TTL if ttl is None else max(1, int(ttl))
        token = uuid.uuid4().hex
        payload = _serialize_lock_payload(token, ttl_seconds)
        acquired = self.redis.set(self._lock_key, payload, nx=True, ex=ttl_seconds)
        if not acquired:
            info = _parse_lock_payload(self.redis.get(self._lock_key))
            message = 'lock() called on an already locked nodb'
            if info.get('owner'):
                message += f" (owner={info['owner']})"
            elif info.get('token'):
                message += f" (token={info['token']})"
            raise NoDbAlreadyLockedError(message)
        self.redis.hset(self.runid, self._flag_field, 'true')
        self._token = token

    def unlock(self, flag=None):
        stored_payload = self.redis.get(self._lock_key)
        stored_token = _extract_token(stored_payload)
        local_token = self._token
        force = flag in ('-f', '--force')
        if stored_payload is None:
            self.redis.hset(self.runid, self._flag_field, 'false')
            self._token = None
            return
        if not force:
            if local_token is None:
                raise RuntimeError(
                    'unlock() called without owning the lock; use flag "-f" to force release')
            if stored_token is not None and stored_token != local_token:
                raise RuntimeError(
                    'unlock() called with non-matching token; use flag "-f" to force release')
        self.redis.delete(self._lock_key)
        self.redis.hset(self.runid, self._flag_field, 'false')
        self._token = None

    def islocked(self):
        if self.redis.get(self._lock_key) is not None:
            return True
        flag = self.redis.hget(self.runid, self._flag_field)
        if flag is None:
            return False
        if flag != 'false':
            self.redis.hset(self.runid, self._flag_field, 'false')
        return False


def _connect():
    return redis.Redis(host='127.0.0.1', port=int(os.environ['RUNQ_TEST_REDIS_PORT']),
                       db=REDIS_LOCK_DB, decode_responses=True)


def _report(value):
    print(json.dumps(value, sort_keys=True))
    sys.stdout.flush()


def _observe(conn, ctl):
    """What a Python reader sees of the lock: the payload's fields in stored order."""
    raw = conn.get(ctl._lock_key)
    fields = json.loads(raw, object_pairs_hook=OrderedDict) if raw is not None else None
    return {
        'raw': raw,
        'keys': list(fields) if isinstance(fields, dict) else None,
        'payload': fields,
        'pttl': conn.pttl(ctl._lock_key),
        'flag': conn.hget(ctl.runid, ctl._flag_field),
        'now': int(time.time()),
    }


def main(argv):
    command, runid, relpath = argv[1], argv[2], argv[3]
    ttl = int(argv[4]) if len(argv) > 4 else None
    conn = _connect()
    ctl = NoDbController(conn, runid, relpath)
    if command == 'try-lock':
        seen = _observe(conn, ctl)
        try:
            ctl.lock(ttl)
        except NoDbAlreadyLockedError as e:
            _report({'acquired': False, 'error': f'{type(e).__name__}: {e}',
                     'owner': _owner(), 'seen': seen})
            return 0
        ctl.unlock()
        _report({'acquired': True, 'error': None, 'owner': _owner(), 'seen': seen,
                 'flag_after_unlock': conn.hget(runid, ctl._flag_field)})
        return 0
    if command == 'hold':
        ctl.lock(ttl)
        _report({'owner': _owner(), 'token': ctl._token, 'seen': _observe(conn, ctl)})
        sys.stdin.readline()
        unlock_started_at = int(time.time())
        try:
            ctl.unlock()
            error = None
        except RuntimeError as e:
            error = f'{type(e).__name__}: {e}'
        _report({'unlocked': error is None, 'error': error, 'unlock_started_at': unlock_started_at,
                 'key_exists': conn.exists(ctl._lock_key) == 1,
                 'flag': conn.hget(runid, ctl._flag_field)})
        return 0
    print(f'unknown command {command}', file=sys.stderr)
    return 2


if __name__ == '__main__':
    sys.exit(main(sys.argv))
