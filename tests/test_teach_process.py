"""Teach once, train many, with real processes: `kaggle-distill teach` SIGKILLed at random moments and started again
writes the same bytes as an uninterrupted pass; two processes under torchrun split the pass and write the same bytes
as one; `kaggle-distill train` from the cache, killed and resumed, ends with the same weights as an uninterrupted run."""
import json, os, random, signal, subprocess, sys, time
from pathlib import Path

import pytest
import torch

from kaggle_distill.assets import corpus_documents
from kaggle_distill.checkpoint import find_latest

STEPS = 10


def overrides(run_dir: Path, data: Path) -> list[str]:
    "Tiny random models on the real Qwen (teacher) and SmolLM (student) tokenizers; 40 training blocks read, 5 shards of 8."
    return [f'run_dir={run_dir}', 'teacher.name=qwen3_moe', 'teacher.tokenizer=qwen', 'student.name=llama',
            'student.tokenizer=smollm', 'student.scratch={}', f'data.source={data}', 'data.max_length=48',
            'data.eval_fraction=0.2', 'data.eval_max_blocks=2', f'train.steps={STEPS}', 'train.batch_size=2',
            'train.grad_accum=2', 'train.log_every=1', 'train.eval_every=5', 'train.checkpoint_every=1',
            'train.keep_checkpoints=2', 'train.warmup=0.25', 'teach.k=8', 'teach.exact=2', 'teach.eval_k=4',
            'teach.eval_exact=4', 'train.device=cpu']


PRELUDE = 'import sys; import kaggle_distill.teacher_cache as tc; tc.SHARD_BLOCKS = 8; from kaggle_distill.cli import main; '


def start(cmd: str, run_dir: Path, data: Path, nproc: int = 1) -> subprocess.Popen:
    "`kaggle-distill CMD` (shards of 8 blocks) in one process, or under torchrun with `nproc`."
    code = PRELUDE + f'sys.exit(main([{cmd!r}, *{overrides(run_dir, data)!r}]))'
    env = {**os.environ, 'TQDM_DISABLE': '1', 'OMP_NUM_THREADS': '1'}
    if nproc == 1: return subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    script = run_dir.parent / f'{run_dir.name}_launch.py'
    script.write_text(code.replace('; ', '\n'))
    return subprocess.Popen([sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}', str(script)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)


def done(p: subprocess.Popen, rc: int = 0) -> str:
    out = p.communicate(timeout=600)[0].decode()
    assert p.returncode == rc, out
    return out


def cache_files(run_dir: Path) -> dict[str, bytes]:
    root = run_dir / 'teacher_cache'
    return {str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob('*')) if f.is_file()}


def shards(run_dir: Path) -> int:
    return len(list((run_dir / 'teacher_cache').glob('train-*/shard-*.json')))


@pytest.fixture(scope='module')
def data(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp('data') / 'text.jsonl'
    p.write_text(''.join(json.dumps({'text': d}) + '\n' for d in corpus_documents('shakespeare')[:24]))
    return p


@pytest.fixture(scope='module')
def taught(tmp_path_factory, data) -> Path:
    "An uninterrupted teach pass: the reference bytes."
    ref = tmp_path_factory.mktemp('teach') / 'ref'
    out = done(start('teach', ref, data))
    assert 'taught 40 training blocks' in out, out
    return ref


def test_teach_killed_and_resumed_writes_the_same_bytes(tmp_path, data, taught):
    run, rng = tmp_path / 'killed', random.Random(1)
    for _ in range(2):                                  # kill twice, each time after the pass made progress
        before = shards(run) if (run / 'teacher_cache').exists() else 0
        p = start('teach', run, data)
        deadline = time.monotonic() + 300
        while (shards(run) if (run / 'teacher_cache').exists() else 0) <= before and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert p.poll() is None, 'the pass finished before it could be killed'
        time.sleep(rng.uniform(0.0, 0.3))
        p.send_signal(signal.SIGKILL); p.communicate()
    assert 0 < shards(run) < 5
    done(start('teach', run, data))
    assert cache_files(run) == cache_files(taught)
    assert not list((run / 'teacher_cache').rglob('.*.tmp'))


def test_two_processes_split_the_pass(tmp_path, data, taught):
    run = tmp_path / 'ddp'
    done(start('teach', run, data, nproc=2))
    assert cache_files(run) == cache_files(taught)


def test_train_from_cache_killed_and_resumed_is_exact(tmp_path, data, taught):
    import shutil
    ref, run = tmp_path / 'ref', tmp_path / 'killed'
    for d in (ref, run):
        shutil.copytree(taught / 'teacher_cache', d / 'teacher_cache'); shutil.copy(taught / 'config.json', d / 'config.json')
    out = done(start('train', ref, data))
    assert 'training from the teacher cache' in out and 'the teacher is not loaded' in out, out
    p = start('train', run, data)
    deadline = time.monotonic() + 300
    ck = run / 'checkpoints'
    while not (ck.exists() and len(list(ck.glob('ckpt-*'))) >= 1 and max(int(c.name[5:]) for c in ck.glob('ckpt-*')) >= 3) \
            and p.poll() is None and time.monotonic() < deadline: time.sleep(0.05)
    assert p.poll() is None, 'the run finished before it could be killed'
    p.send_signal(signal.SIGKILL); p.communicate()
    out = done(start('train', run, data))
    assert 'resuming from' in out, out
    a, b = find_latest(ref / 'checkpoints'), find_latest(run / 'checkpoints')
    assert a.step == b.step == STEPS
    keys = [k for k in a.tensors if k.startswith('student')]
    assert keys and all(torch.equal(a.tensors[k], b.tensors[k]) for k in keys)
    s_ref, s_run = (json.loads((d / 'summary.json').read_text()) for d in (ref, run))
    assert s_ref['teacher_signal']['mode'] == s_run['teacher_signal']['mode'] == 'cache'
    assert s_run['student_after'] == s_ref['student_after']
