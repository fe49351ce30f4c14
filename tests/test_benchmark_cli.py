"""`kaggle-distill benchmark` through the console script, offline, on a tiny run the CLI trained: a multiple-choice task
made from the shipped Shakespeare (pick the next line of a speech), the three models scored by lm-evaluation-harness,
`benchmarks.json` and the report's table checked, each model's column against a direct computation of the same choice
with that model; a hub task offline and ends with one line and exit status 2, before any model
loads. (The other bad inputs are in tests/test_bad_input.py.)"""
import json, math, os, shutil, subprocess, sys, time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kaggle_distill.assets import corpus_documents
from kaggle_distill.benchmark import (MODELS, hub_reachable, load_benchmark_model, next_line_items, shakespeare_plays,
                                      write_local_task)
from kaggle_distill.config import from_dict
from kaggle_distill.report import write_report

KD = str(Path(sys.executable).with_name('kaggle-distill'))        # the console script of this environment
TINY = ['teacher.name=qwen3_moe', 'teacher.tokenizer=qwen', 'student.name=llama', 'student.tokenizer=smollm',
        'student.scratch={}', 'data.max_length=48', 'data.eval_fraction=0.2', 'data.eval_max_blocks=1', 'train.steps=2',
        'train.batch_size=2', 'train.log_every=1', 'train.eval_every=2', 'train.checkpoint_every=2', 'train.lr=1e-2']
N_ITEMS, LIMIT = 10, 8


def env(tmp: Path, offline: bool = True) -> dict:
    "Quiet, one thread, the harness's datasets cache in `tmp` (empty: nothing cached), and offline unless told not to be."
    e = {**os.environ, 'TQDM_DISABLE': '1', 'OMP_NUM_THREADS': '1', 'HF_DATASETS_CACHE': str(tmp / 'datasets'),
         'HF_HOME': str(tmp / 'hf_home')}
    if offline: e['HF_HUB_OFFLINE'] = '1'
    else: e.pop('HF_HUB_OFFLINE', None); e.pop('HF_DATASETS_OFFLINE', None)
    return e


@pytest.fixture(scope='module')
def trained(tmp_path_factory) -> tuple[Path, Path, Path, list]:
    "A run trained by the CLI (2 steps, tiny models) and a local task of `N_ITEMS` next-line questions (its YAML, its items)."
    tmp = tmp_path_factory.mktemp('bench')
    data = tmp / 'text.jsonl'
    data.write_text(''.join(json.dumps({'text': d}) + '\n' for d in corpus_documents('shakespeare')[:12]))
    run = tmp / 'run'
    r = subprocess.run([KD, 'train', f'run_dir={run}', f'data.source={data}', *TINY], capture_output=True, text=True,
                       env=env(tmp), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    items = next_line_items(shakespeare_plays(), N_ITEMS, seed=1)
    return tmp, run, write_local_task(tmp / 'tasks', 'next_line_mini', items, 'a test task'), items


def choice_log_likelihoods(model, tok, item: dict) -> list[float]:
    "Summed log-probability of each choice's tokens after the context and a newline (the task's target_delimiter)."
    ctx = tok(item['context'], add_special_tokens=False).input_ids
    out = []
    for c in item['choices']:                    # as the harness: the whole text's tokens after the context's length
        ids = ctx + tok(item['context'] + '\n' + c, add_special_tokens=False).input_ids[len(ctx):]
        with torch.no_grad(): lp = F.log_softmax(model(torch.tensor([ids[:-1]])).logits[0].float(), -1)
        out.append(sum(lp[i - 1, ids[i]].item() for i in range(len(ctx), len(ids))))
    return out


def direct_scores(model, tok, items: list) -> tuple[float, float]:
    "acc (highest log-likelihood) and acc_norm (per character of the choice, as the harness divides) of `items`."
    acc = norm = 0
    for it in items:
        ll = choice_log_likelihoods(model, tok, it)
        acc += int(max(range(len(ll)), key=ll.__getitem__) == it['answer'])
        per = [v / len(c) for v, c in zip(ll, it['choices'])]
        norm += int(max(range(len(per)), key=per.__getitem__) == it['answer'])
    return acc / len(items), norm / len(items)


def test_benchmark_cli(trained):
    tmp, run, task, items = trained
    elsewhere = tmp / 'elsewhere'; elsewhere.mkdir()          # the task's .jsonl is found beside its YAML, not in the cwd
    t0 = time.monotonic()
    r = subprocess.run([KD, 'benchmark', str(run), '--tasks', str(task), '--limit', str(LIMIT), '--batch-size', '8'],
                       capture_output=True, text=True, env=env(tmp), cwd=elsewhere, timeout=300)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'fatal: not a git repository' not in r.stderr and 'Traceback' not in r.stderr, r.stderr
    assert f'report: {run / "report.md"}' in r.stdout, r.stdout

    bench = json.loads((run / 'benchmarks.json').read_text())
    assert list(bench) == list(MODELS)
    cfg = from_dict(json.loads((run / 'config.json').read_text()))
    for name in MODELS:
        row = bench[name]['next_line_mini']
        assert set(row) == {'acc', 'acc_stderr', 'acc_norm', 'acc_norm_stderr', 'samples', 'samples_total'}, row
        assert (row['samples'], row['samples_total']) == (LIMIT, N_ITEMS)
        for m in ('acc', 'acc_norm'):                          # the harness's error of a mean: sqrt(p(1-p)/(n-1))
            assert math.isclose(row[f'{m}_stderr'], math.sqrt(row[m] * (1 - row[m]) / (LIMIT - 1)), abs_tol=1e-12), row
        model, tok = load_benchmark_model(name, cfg, run)
        assert (row['acc'], row['acc_norm']) == direct_scores(model, tok, items[:LIMIT]), name   # this column is this model
    trained_w, before_w = (load_benchmark_model(n, cfg, run)[0].state_dict() for n in ('student', 'student_before'))
    assert not torch.equal(trained_w['model.embed_tokens.weight'], before_w['model.embed_tokens.weight'])   # 2 steps moved it

    def table_lines(md: str) -> list:
        return [l for l in md.split('## Benchmarks')[1].split('\n## ')[0].splitlines() if l.startswith('|')]
    lines = table_lines((run / 'report.md').read_text())
    assert lines[0] == '| task | metric | n | teacher | student before | student after |', lines
    for i, m in enumerate(('acc', 'acc_norm')):
        cells = ' | '.join(f"{100 * bench[k]['next_line_mini'][m]:.1f} ± {100 * bench[k]['next_line_mini'][f'{m}_stderr']:.1f}"
                           for k in ('teacher', 'student_before', 'student'))
        assert lines[2 + i] == f'| next_line_mini | {m} | {LIMIT} of {N_ITEMS} | {cells} |', lines
    write_report(run)                                                       # what `kaggle-distill report` does
    assert table_lines((run / 'report.md').read_text()) == lines            # a redraw keeps the table
    print(f'\nbenchmark of 3 tiny models x {LIMIT} questions through the console script: {took:.1f} s')
    print('\n'.join(lines))


def test_offline_hub_task(trained):
    "A hub task whose data is not cached, offline: one line naming the task, its dataset and the two ways to provide it."
    tmp, run, task, _ = trained
    before = (run / 'benchmarks.json').read_bytes() if (run / 'benchmarks.json').exists() else None
    reachable = hub_reachable(timeout=2)         # no hub here: the benchmark must find that out itself, quickly
    t0 = time.monotonic()
    r = subprocess.run([KD, 'benchmark', str(run), '--tasks', f'{task},hellaswag'], capture_output=True, text=True,
                       env=env(tmp, offline=reachable), timeout=120)
    took = time.monotonic() - t0
    assert r.returncode == 2, r.stdout + r.stderr
    err = r.stderr.strip().splitlines()
    assert len(err) == 1, r.stderr
    for part in ("task 'hellaswag' needs the dataset 'Rowan/hellaswag' from the Hugging Face hub", 'datasets cache',
                 'HF_DATASETS_CACHE', 'local task YAML', 'bench/tasks/'):
        assert part in err[0], err[0]
    assert 'student:' not in r.stdout and 'tasks:' not in r.stdout, r.stdout        # nothing was scored
    assert ((run / 'benchmarks.json').read_bytes() if before is not None else None) == before
    assert 'OfflineModeIsEnabled' in err[0], err[0]          # refused by the hub client's offline mode: no retries
    if not reachable: assert 'the model hub cannot be reached' in r.stdout, r.stdout     # the benchmark switched it on
    assert took < 120, took                                   # never a hang (the hub client's retries alone take 23 s)
    shutil.rmtree(tmp / 'datasets', ignore_errors=True)


def test_committed_tasks_are_reproducible(tmp_path):
    "bench/tasks/ holds exactly what bench/shakespeare_tasks.py writes (the README's demo table is measured on these files)."
    import importlib.util
    repo = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location('shakespeare_tasks', repo / 'bench' / 'shakespeare_tasks.py')
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    written = mod.write_tasks(tmp_path)
    assert [p.name for p in written] == ['shakespeare_next_line.yaml', 'shakespeare_next_line_same_play.yaml']
    for y in written:
        for f in (y, y.with_suffix('.jsonl')):
            assert f.read_bytes() == (repo / 'bench' / 'tasks' / f.name).read_bytes(), f'{f.name}: run python bench/shakespeare_tasks.py'
    items = [json.loads(l) for l in (repo / 'bench' / 'tasks' / 'shakespeare_next_line.jsonl').read_text().splitlines()]
    assert len(items) == 200 and len({(i['context'], i['choices'][i['answer']]) for i in items}) == 200
