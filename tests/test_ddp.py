"""Data-parallel training with real processes on CPU (gloo): `torchrun --nproc_per_node=2` trains the same student as
one process at the same global batch, even when one of its processes is SIGKILLed mid-run and the launch restarted;
a checkpoint written by two processes resumes in one and the other way round, to the same result; and the
collectives under the loop (agreement, broadcast, gradient averaging, the NaN skip) on two spawned gloo processes.

Tolerance: the two-process step averages each process's gradients (a sum in another order than one process's
accumulation), so final weights are compared with atol 1e-5 and logged losses with 1e-4; the data order, step
count, token count and loader position must be equal exactly."""
import json, math, os, shutil, signal, subprocess, sys, time
from pathlib import Path

import pytest
import torch

from kaggle_distill.assets import corpus_documents
from kaggle_distill.checkpoint import find_latest

STEPS = 5
WEIGHT_ATOL, LOSS_ATOL = 1e-5, 1e-4
TAG = 'KAGGLE_DISTILL_TEST_TAG'     # marks the processes of one launch, to find the one to kill


def overrides(run_dir: Path, data: Path) -> list[str]:
    "Tiny random models on two real tokenizers, 4 micro-batches of 2 per step (2 per process with two processes)."
    tiny = '{num_hidden_layers: 2, hidden_size: %d, intermediate_size: %d, num_attention_heads: 2, num_key_value_heads: 1}'
    return [f'run_dir={run_dir}', 'teacher.name=llama', 'teacher.tokenizer=gpt2', f'teacher.scratch={tiny % (64, 128)}',
            'student.name=llama', 'student.tokenizer=smollm', f'student.scratch={tiny % (32, 64)}', f'data.source={data}',
            'data.max_length=48', 'data.eval_fraction=0.2', 'data.eval_max_blocks=1', f'train.steps={STEPS}',
            'train.batch_size=2', 'train.grad_accum=4', 'train.log_every=1', 'train.eval_every=100',
            'train.checkpoint_every=1', 'train.keep_checkpoints=10', 'train.warmup=0.25', 'train.device=cpu']


def start(run_dir: Path, data: Path, nproc: int, extra=()) -> subprocess.Popen:
    "`kaggle-distill train` in one process, or under torchrun with `nproc` processes (gloo on CPU)."
    cli = ['-m', 'kaggle_distill.cli', 'train', *overrides(run_dir, data), *extra]
    launch = [] if nproc == 1 else ['-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}']
    env = {**os.environ, 'TQDM_DISABLE': '1', 'OMP_NUM_THREADS': '1', TAG: str(run_dir)}
    return subprocess.Popen([sys.executable, *launch, *cli], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)


def finish(p: subprocess.Popen) -> str:
    out = p.communicate(timeout=300)[0].decode()
    assert p.returncode == 0, out
    return out


def rank_pid(run_dir: Path, rank: int) -> int | None:
    "Pid of the trainer process with `rank` of the launch into `run_dir` (read from /proc), None if not started yet."
    want = {f'{TAG}={run_dir}'.encode(), f'RANK={rank}'.encode()}
    for p in Path('/proc').iterdir():
        if not p.name.isdigit() or int(p.name) == os.getpid(): continue
        try: env = set((p / 'environ').read_bytes().split(b'\0'))
        except OSError: continue
        if want <= env: return int(p.name)
    return None


def newest_step(run_dir: Path) -> int:
    ck = run_dir / 'checkpoints'
    return max((int(p.name.split('-')[1]) for p in ck.glob('ckpt-*')), default=-1) if ck.exists() else -1


def wait_for_progress(p: subprocess.Popen, run_dir: Path, after: int):
    "Wait until a checkpoint newer than step `after` appears (the run must still be going)."
    deadline = time.monotonic() + 240
    while newest_step(run_dir) <= after and p.poll() is None and time.monotonic() < deadline: time.sleep(0.05)
    assert p.poll() is None, 'the run ended before it could be killed: make it longer\n' + p.communicate()[0].decode()
    assert newest_step(run_dir) > after


def records(run_dir: Path, kind: str = 'train') -> list[dict]:
    return [r for r in map(json.loads, (run_dir / 'metrics.jsonl').read_text().splitlines()) if r['kind'] == kind]


def assert_same_run(a: Path, b: Path):
    "Final student, optimizer and loader of two runs agree (within the tolerance), and so do their logged curves."
    ca, cb = find_latest(a / 'checkpoints'), find_latest(b / 'checkpoints')
    assert ca.step == cb.step == STEPS
    assert ca.state()['loader'] == cb.state()['loader']
    keys = [k for k in ca.tensors if k.startswith(('student', 'optimizer')) and ca.tensors[k].is_floating_point()]
    assert any(k.startswith('student') for k in keys) and set(keys) <= set(cb.tensors)
    for k in keys: torch.testing.assert_close(cb.tensors[k], ca.tensors[k], atol=WEIGHT_ATOL, rtol=0, msg=k)
    ra, rb = records(a), records(b)
    assert [r['step'] for r in ra] == [r['step'] for r in rb] == list(range(1, STEPS + 1))   # each step logged once
    assert [r['tokens'] for r in ra] == [r['tokens'] for r in rb]
    for x, y in zip(ra, rb):
        assert x['lr'] == y['lr']
        for name, c in x['loss'].items():
            if name == 'total': assert abs(c - y['loss'][name]) <= LOSS_ATOL
            elif c['raw'] is not None: assert abs(c['raw'] - y['loss'][name]['raw']) <= LOSS_ATOL, (x['step'], name)


def seeded(root: Path, src: Path, step: int) -> Path:
    "A folder holding only checkpoint `step` of run `src`, to resume from (`train.resume_from`)."
    dst = root / f'seed-{src.name}-{step}'
    shutil.copytree(src / 'checkpoints' / f'ckpt-{step:08d}', dst / f'ckpt-{step:08d}')
    return dst


@pytest.fixture(scope='module')
def data(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp('data') / 'text.jsonl'
    p.write_text(''.join(json.dumps({'text': d}) + '\n' for d in corpus_documents('shakespeare')[:24]))
    return p


@pytest.fixture(scope='module')
def runs(tmp_path_factory, data) -> dict:
    """Launched two or three at a time to keep the wall time down:
    1. `one`: one process, uninterrupted (the reference); `two`: two processes, rank 1 SIGKILLed once a checkpoint
       exists; `odd`: two processes with a global batch that does not split (refused).
    2. `two` restarted with two processes to the end; `two_to_one`: one process resuming `two`'s first checkpoint;
       `one_to_two`: two processes resuming `one`'s checkpoint 2."""
    root = tmp_path_factory.mktemp('ddp')
    d = {k: root / k for k in ('one', 'two', 'odd', 'two_to_one', 'one_to_two')}
    one, two, odd = start(d['one'], data, 1), start(d['two'], data, 2), start(d['odd'], data, 2, ['train.grad_accum=3'])
    wait_for_progress(two, d['two'], after=1)
    pid = rank_pid(d['two'], 1)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    out = {'two_killed': two.communicate(timeout=120)[0].decode(), 'odd': odd.communicate(timeout=120)[0].decode(),
           'one': finish(one)}
    assert two.returncode != 0 and odd.returncode != 0, out
    killed_at = find_latest(d['two'] / 'checkpoints').step
    assert 2 <= killed_at < STEPS, killed_at
    p = {'two': start(d['two'], data, 2),
         'two_to_one': start(d['two_to_one'], data, 1, [f"train.resume_from=['{seeded(root, d['two'], 2)}']"]),
         'one_to_two': start(d['one_to_two'], data, 2, [f"train.resume_from=['{seeded(root, d['one'], 2)}']"])}
    out.update({k: finish(v) for k, v in p.items()})
    return {'dirs': d, 'out': out, 'killed_at': killed_at}


def test_two_processes_train_what_one_does(runs):
    one, two = runs['dirs']['one'], runs['dirs']['two']
    assert_same_run(one, two)
    out = runs['out']['two']
    resumed = [l for l in out.splitlines() if l.startswith(('resuming from', 'starting fresh'))]
    assert len(resumed) == 1 and f"(step {runs['killed_at']} of {STEPS})" in resumed[0], out   # only rank 0 speaks
    assert out.count('report: ') == 1, out
    assert runs['out']['two_killed'].count('starting fresh: no checkpoint of this run in') == 1
    s1, s2 = (json.loads((d / 'summary.json').read_text()) for d in (one, two))
    assert s1['status'] == s2['status'] == 'finished' and s1['tokens'] == s2['tokens']
    for k, v in s1['student_after'].items():                                  # perplexity: relative (it is exp(nll))
        assert math.isclose(v, s2['student_after'][k], rel_tol=LOSS_ATOL, abs_tol=LOSS_ATOL), k
    assert len(records(two, 'eval')) == len(records(one, 'eval'))                 # evaluated by rank 0 alone


@pytest.mark.parametrize('name', ['two_to_one', 'one_to_two'])
def test_resume_across_world_sizes(runs, name):
    out = runs['out'][name]
    assert f'(step 2 of {STEPS})' in out and out.count('resuming from') == 1, out
    run = runs['dirs'][name]
    assert json.loads((run / 'summary.json').read_text())['status'] == 'finished'
    ref = runs['dirs']['one']
    ca, cb = find_latest(ref / 'checkpoints'), find_latest(run / 'checkpoints')
    assert ca.step == cb.step == STEPS and ca.state()['loader'] == cb.state()['loader']
    for k in (k for k in ca.tensors if k.startswith('student')):
        torch.testing.assert_close(cb.tensors[k], ca.tensors[k], atol=WEIGHT_ATOL, rtol=0, msg=k)
    tail = [r for r in records(ref) if r['step'] > 2]
    for x, y in zip(tail, [r for r in records(run) if r['step'] > 2], strict=True):
        assert x['step'] == y['step'] and abs(x['loss']['total'] - y['loss']['total']) <= LOSS_ATOL


def test_grad_accum_must_split(runs):
    "A global batch that does not split over the processes is refused before any model loads, with the fix."
    out = runs['out']['odd']
    assert 'train.grad_accum=3 does not split over 2 processes' in out and 'Set train.grad_accum to a multiple of 2' in out, out
    assert not runs['dirs']['odd'].exists()


def _collectives_worker(rank: int, world: int, port: int, out: str):
    "One of two gloo processes exercising the trainer's collectives and its data-parallel step on a stub loss."
    import torch.distributed as dist
    from types import SimpleNamespace as NS
    from torch import nn
    import kaggle_distill.trainer as T
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=world)
    r = {'agree': [T.all_agree(rank == 1), T.all_agree(False)],
         'stop': [T.agree_stop('time budget' if rank == 1 else None),     # only rank 0's clock counts
                  T.agree_stop('SIGTERM' if rank == 1 else None),         # a signal anywhere stops all
                  T.agree_stop('time budget' if rank == 0 else None)],
         'main': T.from_main(f'rank {rank}'), 'gather': T.gather_all(rank)}
    ps = [nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(1))]
    ps[0].grad = torch.full((3,), float(rank + 1))
    if rank == 0: ps[1].grad = torch.full((2,), 4.0)          # no gradient on rank 1: zeros there; none anywhere: stays None
    T.sync_grads(ps)
    r['grads'] = [ps[0].grad.tolist(), ps[1].grad.tolist(), ps[2].grad]
    rec = {'lm': {'raw': float(rank), 'weight': 0.5, 'weighted': 2.0 * rank}, 'kd': {'raw': None, 'weight': 0.0, 'weighted': None},
           'total': 2.0 * rank}
    r['record'] = T.reduce_record(rec, 10 + rank)
    # the step: micro-batches of one row each, a NaN on rank 1 only at step 1
    torch.manual_seed(0)
    model = nn.Linear(2, 1)
    opt = torch.optim.AdamW([{'params': list(model.parameters()), 'lr': 0.1, 'lr_mult': 1.0}])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    scaler = torch.amp.GradScaler('cpu', enabled=False)
    def stub_loss(run, b, step):
        loss = model(b['x']).pow(2).mean() * (float('nan') if b['nan'] else 1.0)
        return NS(total=loss, record=lambda: {'lm': {'raw': loss.item(), 'weight': 1.0, 'weighted': loss.item()}, 'total': loss.item()})
    T.compute_loss = stub_loss
    run = NS(cfg=NS(train=NS(grad_clip=1.0)), student=model)           # clip_grads tells the student's parameters apart
    xs = torch.arange(8.0).reshape(4, 1, 2) / 8
    steps = []
    for step in range(2):
        mine = [{'x': xs[k], 's_mask': torch.ones(1, 3), 'nan': step == 1 and rank == 1} for k in range(rank, 4, world)]
        res = T.dist_optimizer_step(run, opt, sched, scaler, mine, step)
        steps.append({'skipped': res.skipped, 'tokens': res.tokens, 'total': res.loss.get('total'),
                      'weight': model.weight.detach().tolist()})
    r['steps'] = steps
    Path(out, f'{rank}.json').write_text(json.dumps(r))
    T.close_distributed()
    # Leave without the interpreter's teardown: under load, gloo's threads can still be unwinding when the C++ statics
    # are destroyed, which aborts the process (SIGABRT, "terminate called without an active exception") after its
    # results are already written. Everything this test checks has been written and flushed above.
    os._exit(0)


def test_collectives_and_step_agree(tmp_path):
    "Two gloo processes: agreement, broadcast, gradient averaging, record reduction, and a NaN on one rank skipping the step on both."
    import multiprocessing as mp, socket
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    ctx = mp.get_context('spawn')
    procs = [ctx.Process(target=_collectives_worker, args=(r, 2, port, str(tmp_path))) for r in range(2)]
    for p in procs: p.start()
    for p in procs: p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    r0, r1 = (json.loads((tmp_path / f'{r}.json').read_text()) for r in range(2))
    for r in (r0, r1):
        assert r['agree'] == [True, False] and r['stop'] == [None, 'SIGTERM', 'time budget']
        assert r['main'] == 'rank 0' and r['gather'] == [0, 1]
        assert r['grads'] == [[1.5] * 3, [2.0] * 2, None]
        assert r['record'] == [{'lm': {'raw': 0.5, 'weight': 0.5, 'weighted': 1.0}, 'kd': {'raw': None, 'weight': 0.0, 'weighted': None},
                                'total': 1.0}, 21]
    first, second = r0['steps']
    assert r1['steps'][0] == first and r1['steps'][1]['weight'] == second['weight']   # the same step on both processes
    assert r1['steps'][1]['skipped'] == second['skipped']
    assert first['skipped'] is None and first['tokens'] == 12
    assert second['skipped'] == "loss component 'lm'" and second['tokens'] == 0 and second['weight'] == first['weight']
    # the same step in one process: the mean over the 4 micro-batches of each one's loss
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    xs = torch.arange(8.0).reshape(4, 1, 2) / 8
    loss = sum(model(x).pow(2).mean() for x in xs) / 4
    loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step()
    torch.testing.assert_close(torch.tensor(first['weight']), model.weight.detach(), atol=1e-6, rtol=0)
    assert abs(first['total'] - loss.item()) < 1e-6
