"""A preload module that cannot be imported: tests/python_tasks.rs checks that
runq-worker refuses to start with one line naming it and this error."""

raise RuntimeError('pytasks_bad refuses to be imported')
