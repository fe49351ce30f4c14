"""The real Kaggle kernel notebook, unchanged but for papermill's injected parameters cell, through three simulated
Kaggle sessions on CPU with tiny real-architecture models. Each session teaches first (`kaggle-distill teach`), then
trains from the stored teacher signal:

1. the teach pass stops on its time budget (exit status 3): the budget, counted from the kernel's first cell, is
   used up by the session's setup (installing the wheel, probing the GPU, packing the data); no training starts;
2. the teach pass continues from session 1's output and completes, training starts from the cache, and the session
   is SIGKILLed mid-step, the whole process group at once (Kaggle's hard kill at the session limit);
3. finds the teacher cache complete (the teacher is not loaded), resumes training and finishes (exit status 0).

As on Kaggle: the package comes from its wheel in `input/<dataset>/`, installed by the kernel's own pip cell into the
interpreter that runs the notebook (a throwaway venv, never the development one); each session's `working/` becomes
the next session's read-only `input/<kernel slug>/`, and `working/` starts empty. The final student must be
bit-identical to an uninterrupted teach-then-train run's, no session but the killed one may end in an error cell, the final report
must be complete, and sessions 2 and 3 must reuse the packed data instead of packing again."""
import json, os, random, shutil, signal, stat, subprocess, sys, sysconfig, time
from pathlib import Path

import pytest
import torch

from kaggle_distill.assets import corpus_documents
from kaggle_distill.checkpoint import find_latest
from kaggle_distill.kaggle import inject_parameters
from kaggle_distill.kaggle_prepare import build_wheel

REPO = Path(__file__).resolve().parents[1]
KERNEL = REPO / 'kaggle_kernels' / 'distill.ipynb'
SLUG, DATASET = 'kaggle-distill', 'kaggle-distill-wheel'
STEPS = 8
EXECUTE = """
import sys
from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell
nb = read_nb(sys.argv[1])
try: CaptureShell().run_all(nb, exc_stop=True)
finally: write_nb(nb, sys.argv[2])
"""


def tiny(data: Path) -> list[str]:
    "The tiny run: real architectures (Qwen3-MoE teacher, Llama student), real offline tokenizers, a few real documents."
    return ['teacher.name=qwen3_moe', 'teacher.tokenizer=qwen', 'student.name=llama', 'student.tokenizer=smollm',
            'student.scratch={}', f'data.source={data}', 'data.max_length=48', 'data.eval_fraction=0.2',
            'data.eval_max_blocks=2', f'train.steps={STEPS}', 'train.batch_size=2', 'train.grad_accum=2', 'train.log_every=1',
            'train.eval_every=4', 'train.checkpoint_every=1', 'train.keep_checkpoints=2', 'train.warmup=0.25']


def quiet_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith('PIP_') and k not in ('PYTHONPATH', 'VIRTUAL_ENV')}
    return {**env, 'TQDM_DISABLE': '1', 'OMP_NUM_THREADS': '1', 'PIP_CONFIG_FILE': os.devnull, 'PIP_NO_INDEX': '1',
            'PIP_DISABLE_PIP_VERSION_CHECK': '1', **extra}


@pytest.fixture(scope='module')
def kaggle_python(tmp_path_factory) -> str:
    """A throwaway venv standing in for Kaggle's image: it sees the development venv's packages (torch, transformers,
    execnb, pip...) through a .pth line, but not its editable kaggle_distill (whose finder only a site dir's .pth runs)."""
    d = tmp_path_factory.mktemp('kaggle-venv')
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(d)], check=True)
    py = str(d / 'bin' / 'python')
    site = subprocess.run([py, '-c', "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, 'dev_packages.pth').write_text(sysconfig.get_paths()['purelib'] + '\n')
    r = subprocess.run([py, '-c', 'import kaggle_distill'], capture_output=True, text=True, env=quiet_env(), cwd=d)
    assert r.returncode != 0, 'the dev checkout of kaggle_distill leaks into the Kaggle venv'
    return py


def fresh_cache(folder: Path) -> Path:
    """The asset cache of a fresh machine: the offline tokenizers prepared (no hub here), but no packed data and no
    models, so packed data can only come from the session's inputs."""
    from kaggle_distill.assets import cache_dir
    folder.mkdir(parents=True)
    for name in ('tokenizers', 'gguf'):
        if (cache_dir() / name).exists(): (folder / name).symlink_to(cache_dir() / name)
    return folder


def start_session(root: Path, nb_in: Path, nb_out: Path, python: str, cache: Path) -> subprocess.Popen:
    "Run the notebook in its own process group (as the kernel's container), with the Kaggle root relocated."
    return subprocess.Popen([python, '-c', EXECUTE, str(nb_in), str(nb_out)], cwd=root / 'working', start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=quiet_env(KAGGLE_DISTILL_KAGGLE_ROOT=str(root), KAGGLE_DISTILL_CACHE=str(cache)))


def end_session(root: Path):
    "What Kaggle does between sessions: the output becomes a read-only input of the next one, working/ starts empty."
    dst = root / 'input' / SLUG
    if dst.exists():
        for p in dst.rglob('*'): p.chmod(p.stat().st_mode | stat.S_IWUSR)
        dst.chmod(0o755); shutil.rmtree(dst)
    shutil.copytree(root / 'working', dst)
    for p in [*dst.rglob('*'), dst]: p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    shutil.rmtree(root / 'working'); (root / 'working').mkdir()


def cell_text(nb: dict) -> str:
    return '\n'.join(''.join(o.get('text', '')) + ''.join(''.join(v) for v in o.get('data', {}).values())
                     for c in nb['cells'] for o in c.get('outputs', []))


def errors(nb: dict) -> list:
    return [o for c in nb['cells'] for o in c.get('outputs', []) if o.get('output_type') == 'error']


def newest_step(run_dir: Path) -> int:
    ck = run_dir / 'checkpoints'
    return max((int(p.name.split('-')[1]) for p in ck.glob('ckpt-*')), default=-1) if ck.exists() else -1


def test_three_kaggle_sessions(tmp_path, kaggle_python):
    t_start = time.monotonic()
    root = tmp_path / 'kaggle'
    (root / 'working').mkdir(parents=True)
    build_wheel(REPO, root / 'input' / DATASET)
    data = root / 'input' / 'corpus' / 'text.jsonl'; data.parent.mkdir(parents=True)
    data.write_text(''.join(json.dumps({'text': d}) + '\n' for d in corpus_documents('shakespeare')[:24]))
    from kaggle_distill.benchmark import next_line_items, shakespeare_plays, write_local_task
    task = write_local_task(root / 'input' / 'tasks', 'next_line_sim', next_line_items(shakespeare_plays(), 4), 'the sim task')

    # The uninterrupted reference, with the same code from the checkout, runs beside session 1.
    ref = tmp_path / 'ref'
    args = [f"run_dir={ref}", *tiny(data)]
    code = (f'import sys; from kaggle_distill.cli import main; rc = main(["teach", *{args!r}]); '
            f'sys.exit(rc or main(["train", *{args!r}]))')
    ref_p = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=quiet_env(PYTHONPATH=str(REPO)))

    kernel = json.loads(KERNEL.read_text())
    def notebook(n: int, budget: float) -> Path:
        p = tmp_path / f'session{n}.ipynb'
        p.write_text(json.dumps(inject_parameters(kernel, preset='cpu-demo',
                                                  overrides=[*tiny(data), f'train.time_budget_s={budget}'],
                                                  benchmark_tasks=[str(task)], benchmark_limit=2)))
        return p
    run_dir, outs, times = root / 'working' / 'run', [], []
    def complete_session(n: int, budget: float) -> str:
        "Run session `n` to its end; it must exit 0 with no error cell. Returns the text of its cell outputs."
        t0 = time.monotonic()
        p = start_session(root, notebook(n, budget), tmp_path / f'out{n}.ipynb', kaggle_python, fresh_cache(tmp_path / f'cache{n}'))
        log = p.communicate(timeout=600)[0]
        nb = json.loads((tmp_path / f'out{n}.ipynb').read_text()); text = cell_text(nb)
        times.append(time.monotonic() - t0)
        assert p.returncode == 0 and not errors(nb), log + text
        return text

    # Session 1: a 5-second budget is used up by the setup the session clock counts: the teach pass pauses, no training.
    text1 = complete_session(1, 5)
    assert 'the teach pass paused on the session' in text1 and 'kaggle_distill 0.1.0+g' in text1 and 'teach paused' in text1, text1
    assert json.loads((run_dir / 'teach.json').read_text())['status'] == 'paused' and not (run_dir / 'summary.json').exists()
    assert list((run_dir / 'data_cache').iterdir()), 'session 1 packed the data into its run folder'
    assert 'benchmark: not in this session (the run is not finished)' in text1, text1
    paused_at = newest_step(run_dir)
    assert paused_at == -1 and 'distill:' not in text1 and 'starting fresh' not in text1, text1   # no training started
    end_session(root)

    # Session 2: no budget; SIGKILLed, whole process group, at a random moment after it saved a step of its own.
    t0 = time.monotonic()
    p = start_session(root, notebook(2, 0), tmp_path / 'out2.ipynb', kaggle_python, fresh_cache(tmp_path / 'cache2'))
    deadline = time.monotonic() + 600
    while newest_step(run_dir) <= paused_at and p.poll() is None and time.monotonic() < deadline: time.sleep(0.05)
    assert p.poll() is None, 'session 2 ended before it could be killed:\n' + p.communicate()[0]
    time.sleep(random.Random(0).uniform(0.0, 0.4))
    os.killpg(p.pid, signal.SIGKILL); log2 = p.communicate()[0]
    times.append(time.monotonic() - t0)
    killed_at = newest_step(run_dir)
    assert paused_at < killed_at < STEPS
    teach2 = json.loads((run_dir / 'teach.json').read_text())
    assert teach2['status'] == 'finished' and teach2['data']['cache_hit'], log2     # the data packed in session 1, reused
    assert teach2['data']['cache_from'].startswith(str(root / 'input' / SLUG)), teach2
    end_session(root)

    # Session 3: finishes.
    text3 = complete_session(3, 0)
    assert 'finished: the report above is the final one' in text3, text3
    assert 'nothing to teach' in text3 and 'the teacher was not loaded' in text3, text3          # the cache came from input/
    assert 'training from the teacher cache' in text3 and 'the teacher is not loaded' in text3, text3
    assert 'benchmark: done (student, student_before, teacher)' in text3 and '| next_line_sim | acc | 2 of 4 |' in text3, text3
    assert f"resuming from {root / 'input' / SLUG / 'run' / 'checkpoints'}" in text3, text3   # the killed session's output

    ref_out = ref_p.communicate(timeout=600)[0]
    assert ref_p.returncode == 0, ref_out
    a, b = find_latest(ref / 'checkpoints'), find_latest(run_dir / 'checkpoints')
    assert a.step == b.step == STEPS
    keys = [k for k in a.tensors if k.startswith('student')]
    assert keys and all(torch.equal(a.tensors[k], b.tensors[k]) for k in keys)
    report = (run_dir / 'report.md').read_text()
    assert f'**Status: finished** at step {STEPS} of {STEPS}' in report and 'student after' in report, report
    assert '## Benchmarks' in report and '| next_line_sim | acc | 2 of 4 |' in report, report     # the kernel benchmarked it
    assert 'cache_hit yes' in report, report                # packed in session 1 only: every later session found it
    dev_site = Path(sysconfig.get_paths()['purelib'])                # the kernel's pip never touched the dev venv
    assert not list(dev_site.glob('kaggle_distill-*+g*')) and list(dev_site.glob('kaggle_distill-0.1.0.dist-info'))
    print(f'\nsessions: 1 paused teaching, 2 killed at step {killed_at}, 3 finished at step {STEPS}; '
          f'wall times {", ".join(f"{t:.0f}s" for t in times)}; total {time.monotonic() - t_start:.0f}s')
    for n, text in ((1, text1), (3, text3)):
        head = [l for l in text.split('# Distillation report')[0].splitlines() if l.strip() and 'distill:' not in l]
        print(f'--- session {n}, the kernel\'s output before the report ---\n' + '\n'.join(head))
