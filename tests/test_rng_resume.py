"""Every random generator survives a resume (issue 10): a student with attention dropout, resumed from the middle of a
run in a process whose generators have moved on, ends with bit-identical weights and generator states (Python,
NumPy, torch) to the uninterrupted run; without restoring the generators it does not (so dropout really draws)."""
import json, random, shutil
from pathlib import Path

import numpy as np
import torch

import kaggle_distill.checkpoint as ckpt
from kaggle_distill.assets import corpus_documents
from kaggle_distill.checkpoint import find_latest
from kaggle_distill.config import load_config
from kaggle_distill.trainer import train


def cfg(run_dir: Path, data: Path):
    return load_config('cpu-demo', overrides=[
        f'run_dir={run_dir}', 'teacher.name=qwen3_moe', 'teacher.tokenizer=qwen', 'student.name=llama',
        'student.tokenizer=smollm', 'student.scratch={attention_dropout: 0.5}', f'data.source={data}', 'data.max_length=48',
        'data.eval_fraction=0.2', 'data.eval_max_blocks=1', 'train.steps=4', 'train.batch_size=2', 'train.grad_accum=1',
        'train.log_every=1', 'train.eval_every=100', 'train.checkpoint_every=2', 'train.keep_checkpoints=5', 'train.device=cpu'])


def resumed_from_step2(ref: Path, run: Path, data: Path):
    "Copy the reference's step-2 checkpoint into a fresh run folder, move every generator on, and train to the end."
    shutil.copytree(ref / 'checkpoints' / 'ckpt-00000002', run / 'checkpoints' / 'ckpt-00000002')
    random.random(); np.random.rand(); torch.rand(5)
    train(cfg(run, data), progress=False)
    return find_latest(run / 'checkpoints')


def test_dropout_resume_is_exact(tmp_path):
    torch.set_num_threads(1)
    data = tmp_path / 'text.jsonl'
    data.write_text(''.join(json.dumps({'text': d}) + '\n' for d in corpus_documents('shakespeare')[:12]))
    train(cfg(tmp_path / 'ref', data), progress=False)
    a = find_latest(tmp_path / 'ref' / 'checkpoints')
    b = resumed_from_step2(tmp_path / 'ref', tmp_path / 'resumed', data)
    assert a.step == b.step == 4
    keys = [k for k in a.tensors if k.startswith('student')]
    assert keys and all(torch.equal(a.tensors[k], b.tensors[k]) for k in keys)
    rng = [k for k in a.tensors if k.startswith('rng/')]                      # Python, NumPy and torch states
    assert {k.split('/')[1] for k in rng} >= {'python', 'numpy', 'torch'}, rng
    assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in rng)
    assert a.meta['state']['rng'] == b.meta['state']['rng']

    orig = ckpt.restore_rng                                                   # control: generators not restored
    ckpt.restore_rng = lambda d: None
    try: c = resumed_from_step2(tmp_path / 'ref', tmp_path / 'unrestored', data)
    finally: ckpt.restore_rng = orig
    assert not all(torch.equal(a.tensors[k], c.tensors[k]) for k in keys), 'dropout drew nothing: the test proves nothing'
