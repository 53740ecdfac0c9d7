"""Python stand-ins for runq's built-in tasks.

runq-worker runs `runq.tasks.*` natively. This package lets a Python `rq worker`
(with PYTHONPATH=contrib/python) run the same jobs, so jobs made by `runq enqueue`
can be executed by either worker with the same results.
"""
