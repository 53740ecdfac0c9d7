"""What a stretch of work cost Redis, measured the way `runq bench` does
(enqueuer/src/redis_cost.rs): INFO commandstats calls (scripts' inner commands
included, INFO itself left out) and used_cpu_user + used_cpu_sys, before and after.

  python bench/redis_cost.py snap PORT FILE      # save a snapshot
  python bench/redis_cost.py diff PORT FILE N    # cost per job since the snapshot
"""
import json
import sys

import redis


def snapshot(port):
    r = redis.Redis(port=port)
    stats = r.info('commandstats')
    cpu = r.info('cpu')
    calls = {k[len('cmdstat_'):]: v['calls'] for k, v in stats.items()}
    return {'calls': calls, 'cpu': cpu['used_cpu_user'] + cpu['used_cpu_sys']}


def cost_line(before, after, jobs):
    jobs = max(jobs, 1)
    per = {}
    for name, n in after['calls'].items():
        d = n - before['calls'].get(name, 0)
        if d > 0 and name != 'info':
            per[name] = d / jobs
    top = sorted(per.items(), key=lambda kv: -kv[1])[:8]
    cpu_us = max(after['cpu'] - before['cpu'], 0) * 1e6 / jobs
    tops = ', '.join(f'{n} {c:.2f}' for n, c in top)
    return f'{sum(per.values()):.1f} commands/job, {cpu_us:.0f} µs Redis CPU/job ({tops})'


if __name__ == '__main__':
    cmd, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if cmd == 'snap':
        with open(path, 'w') as f:
            json.dump(snapshot(port), f)
    else:
        with open(path) as f:
            before = json.load(f)
        print(cost_line(before, snapshot(port), int(sys.argv[4])))
