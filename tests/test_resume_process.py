"""Kill-and-resume with real processes: a training run SIGKILLed at random moments and restarted each time
ends with bit-identical student weights and the same logged losses as an uninterrupted run."""
import json, os, random, signal, subprocess, sys, time
from pathlib import Path

import pytest
import torch

from kaggle_distill.assets import corpus_documents
from kaggle_distill.checkpoint import find_latest

STEPS = 12


def overrides(run_dir: Path, data: Path) -> list[str]:
    return [f'run_dir={run_dir}', 'teacher.name=qwen3_moe', 'teacher.tokenizer=qwen', 'student.name=llama',
            'student.tokenizer=smollm', 'student.scratch={}', f'data.source={data}', 'data.max_length=48',
            'data.eval_fraction=0.2', 'data.eval_max_blocks=2', f'train.steps={STEPS}', 'train.batch_size=2',
            'train.grad_accum=2', 'train.log_every=1', 'train.eval_every=6', 'train.checkpoint_every=1',
            'train.keep_checkpoints=2', 'train.warmup=0.25']


def start(run_dir: Path, data: Path) -> subprocess.Popen:
    code = ('import sys; from kaggle_distill.cli import main; '
            f'sys.exit(main(["train", *{overrides(run_dir, data)!r}]))')
    env = {**os.environ, 'TQDM_DISABLE': '1', 'OMP_NUM_THREADS': '1'}
    return subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)


def newest_step(run_dir: Path) -> int:
    "Step of the newest checkpoint folder (valid or not), -1 when there is none."
    ck = run_dir / 'checkpoints'
    steps = [int(p.name.split('-')[1]) for p in ck.glob('ckpt-*')] if ck.exists() else []
    return max(steps, default=-1)


def train_losses(run_dir: Path) -> list:
    recs = [json.loads(l) for l in (run_dir / 'metrics.jsonl').read_text().splitlines()]
    return [(r['step'], r['loss']) for r in recs if r['kind'] == 'train']


@pytest.fixture(scope='module')
def data(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp('data') / 'text.jsonl'
    p.write_text(''.join(json.dumps({'text': d}) + '\n' for d in corpus_documents('shakespeare')[:24]))
    return p


def test_sigkill_and_resume_is_exact(tmp_path, data):
    ref = tmp_path / 'ref'
    p = start(ref, data)
    out = p.communicate(timeout=300)[0].decode()
    assert p.returncode == 0, out
    assert f"starting fresh: no checkpoint of this run in {ref / 'checkpoints'}" in out, out

    # Kill at random moments, each after the run has made progress since the last start (a new checkpoint
    # appeared): mid-step, mid-evaluation or mid-checkpoint-write. Then let the last start finish.
    rng, run, kills = random.Random(0), tmp_path / 'killed', 3
    for _ in range(kills):
        before = newest_step(run)
        p = start(run, data)
        deadline = time.monotonic() + 300
        while newest_step(run) <= before and p.poll() is None and time.monotonic() < deadline: time.sleep(0.05)
        assert p.poll() is None, 'the run finished before it could be killed: make it longer'
        time.sleep(rng.uniform(0.0, 0.4))
        p.send_signal(signal.SIGKILL); p.communicate()
    assert 0 < newest_step(run) < STEPS
    last = newest_step(run)
    p = start(run, data)
    out = p.communicate(timeout=300)[0].decode()
    assert p.returncode == 0, out
    resumed = [l for l in out.splitlines() if l.startswith(('resuming from', 'starting fresh'))]
    assert len(resumed) == 1 and resumed[0].startswith(f'resuming from {run / "checkpoints"}/ckpt-') and f'of {STEPS})' in resumed[0], out
    assert int(resumed[0].split('ckpt-')[1][:8]) <= last       # the newest valid one (the newest folder may be a killed save)

    a, b = find_latest(ref / 'checkpoints'), find_latest(run / 'checkpoints')
    assert a.step == b.step == STEPS
    keys = [k for k in a.tensors if k.startswith('student')]
    assert keys and all(torch.equal(a.tensors[k], b.tensors[k]) for k in keys)
    assert train_losses(run) == train_losses(ref)
    s_ref, s_run = (json.loads((d / 'summary.json').read_text()) for d in (ref, run))
    assert s_run['student_after'] == s_ref['student_after']
    assert s_run['status'] == s_ref['status'] == 'finished'
