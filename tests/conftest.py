"""What every test file shares: how `make test` spreads them over the machine's cores.

`make test` runs `pytest -n auto --dist loadfile` (pytest-xdist): one worker per core, each test file whole in one
worker, so a file's module fixtures (a finished run, a trained pair) are built once. Two things make that pay:

- each worker's torch computes on one thread: workers already fill the cores, and more threads per worker only make
  them wait on each other;
- the files that take longest start first (`SLOWEST_FIRST`, seconds measured with `pytest --durations=0` on the
  2-core machine), so the workers finish together instead of one waiting on a long file picked up last.

A plain `pytest tests` (no `-n`) runs as before: in order, with torch's default threads."""
import os

SLOWEST_FIRST = ['test_bad_input.py',        # 170 s
                 'test_teach_process.py',    #  82 s
                 'test_kaggle_sim.py',       #  69 s
                 'test_resume_process.py',   #  54 s
                 'test_ddp.py',              #  44 s
                 'test_benchmark_cli.py',    #  31 s
                 'test_rehearse.py',         #  22 s
                 'test_rng_resume.py']       #  18 s; the rest take under 10 s each

if os.environ.get('PYTEST_XDIST_WORKER'):
    import torch
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    "Slowest files first; a file's own tests keep their order (the sort is stable)."
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
