"""Bad input and faults (issue 10): every case ends with exit status 2, one message on stderr naming the problem,
no traceback, and the files untouched (a hash of the whole folder before and after).

Most cases run the CLI's `main` in a forked child of this already-imported process (stdout/stderr to files,
an uncaught exception printed as Python prints it, exit status from `os._exit`): the same code path as the
console script, without 40 interpreter start-ups at ~10 s each. A few cases run real `python -m
kaggle_distill.cli` processes: the plain console script, `--debug`, and two trainers on one run folder."""
import hashlib, json, os, signal, subprocess, sys, tempfile, time, traceback
from pathlib import Path

import pytest

from kaggle_distill import cli                     # imported once, before forking
from kaggle_distill.config import LOSS_NAMES
import kaggle_distill.trainer, kaggle_distill.data, kaggle_distill.models, kaggle_distill.checkpoint  # noqa: F401

TINY = ['teacher.name=qwen3_moe', 'teacher.tokenizer=qwen', 'student.name=llama', 'student.tokenizer=smollm',
        'student.scratch={}', 'data.max_length=48', 'data.eval_fraction=0.2', 'data.eval_max_blocks=2', 'train.steps=2',
        'train.batch_size=2', 'train.device=cpu']


def run_forked(args: list, cwd: Path, env: dict | None = None) -> tuple[int, str, str]:
    "Run `cli.main(args)` in a forked child as the console script would; (exit status, stdout, stderr)."
    out, err = cwd.parent / 'stdout.txt', cwd.parent / 'stderr.txt'
    pid = os.fork()
    if pid == 0:                                          # child: never returns into pytest
        code = 1
        try:
            os.chdir(cwd); os.environ.update(env or {})
            sys.stdout, sys.stderr = open(out, 'w'), open(err, 'w')
            try: code = cli.main(args)
            except SystemExit as e: code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException: traceback.print_exc(); code = 1
            sys.stdout.flush(); sys.stderr.flush()
        finally: os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out.read_text(), err.read_text()


def tree_hash(root: Path) -> str:
    "sha256 over every path under `root` (files with their bytes, folders by name)."
    h = hashlib.sha256()
    for p in sorted(root.rglob('*')):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file(): h.update(p.read_bytes())
    return h.hexdigest()


def _w(p: Path, data) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data if isinstance(data, bytes) else data.encode())
    return p


def _parquet(p: Path, **cols) -> Path:
    import pyarrow as pa, pyarrow.parquet as pq
    p.parent.mkdir(parents=True, exist_ok=True); pq.write_table(pa.table(cols), p); return p


def _other_run(d: Path) -> Path:
    "A run folder holding the config of a run with another learning rate."
    from kaggle_distill.config import load_config, to_dict
    cfg = load_config(overrides=[f'run_dir={d / "run"}', f'data.source={d / "data.jsonl"}', *TINY, 'train.lr=0.5'])
    return _w(d / 'run' / 'config.json', json.dumps(to_dict(cfg)))


def _finished_run(d: Path) -> Path:
    "A run folder as a finished run leaves it, as far as `benchmark`'s checks look: config.json and student/config.json."
    _other_run(d)
    return _w(d / 'run' / 'student' / 'config.json', '{}')


# (id, setup(d) -> extra args, expected message fragments). `d` holds data.jsonl; the run folder is d/run.
CASES = [
    # configuration: values, keys, presets, overrides
    ('out-of-range', lambda d: ['config', 'train.batch_size=0'], ['train.batch_size: 0 is out of range', 'allowed in']),
    ('unknown-key', lambda d: ['config', 'train.lrr=1'], ["train.lrr: unknown key", "did you mean 'lr'"]),
    ('unknown-preset', lambda d: ['config', '--preset', 'cpu-dem'], ["unknown preset 'cpu-dem'", "did you mean 'cpu-demo'"]),
    ('override-no-equals', lambda d: ['config', 'train.lr'], ['is not of the form key=value']),
    ('override-empty-key', lambda d: ['config', 'train.=1'], ['empty key part']),
    ('override-bad-yaml', lambda d: ['config', 'train.resume_from=[a'], ['value is not valid YAML']),
    ('not-an-int', lambda d: ['config', 'train.steps=abc'], ['train.steps: expected int']),
    ('bad-choice', lambda d: ['config', 'loss.kd_method=foo'], ["loss.kd_method: 'foo' is not allowed"]),
    ('empty-run-dir', lambda d: ['config', 'run_dir='], ['run_dir: empty', 'run_dir=runs/my-run']),
    ('empty-data-source', lambda d: ['config', 'data.source='], ['data.source: empty']),
    ('device-tpu', lambda d: ['config', 'train.device=tpu'], ["train.device: 'tpu' is not a device", "'cuda:N'"]),
    ('teacher-device-typo', lambda d: ['config', 'train.teacher_device=gpu'], ["train.teacher_device: 'gpu' is not a device"]),
    ('all-weights-zero', lambda d: ['config', *[f'loss.weights.{n}=0' for n in LOSS_NAMES]], ['every loss weight is 0', 'loss.weights.lm=1.0']),
    ('unknown-loss', lambda d: ['config', 'loss.weights.kdd=1'], ["unknown loss (did you mean 'kd'?)"]),
    ('temperature-zero', lambda d: ['config', 'loss.temperature.start=0'], ['loss.temperature: must stay > 0']),
    ('ramp-swapped', lambda d: ['config', 'loss.weights.kd={start: 0, end: 1, ramp_from: 0.5, ramp_to: 0.1}'],
     ['ramp_to (0.1) is before ramp_from (0.5)']),
    ('model-unnamed', lambda d: ['config', 'teacher.name='], ['both models must be named']),
    ('scratch-typo', lambda d: ['config', 'student.scratch={hiden_size: 64}'], ["did you mean 'hidden_size'"]),
    ('scratch-negative', lambda d: ['config', 'student.scratch={hidden_size: -5}'], ['-5 must be a positive integer']),
    # configuration files
    ('config-file-missing', lambda d: ['config', '--config', str(d / 'nope.yaml')], ['nope.yaml', 'does not exist']),
    ('config-file-latin1', lambda d: ['config', '--config', str(_w(d / 'c.yaml', 'train: {lr: 1e-4} # caf\xe9'.encode('latin-1')))],
     ['is not UTF-8 text', 'save it as UTF-8']),
    ('config-file-bad-yaml', lambda d: ['config', '--config', str(_w(d / 'c.yaml', 'train: {lr: [1'))], ['cannot be parsed']),
    ('config-file-bad-json', lambda d: ['config', '--config', str(_w(d / 'c.json', '{"train": '))], ['cannot be parsed']),
    ('config-file-list', lambda d: ['config', '--config', str(_w(d / 'c.json', '[1, 2]'))], ['must hold a mapping']),
    ('config-file-is-folder', lambda d: ['config', '--config', str(d)], ['does not exist']),
    # run folders
    ('run-dir-is-file', lambda d: ['train', f'run_dir={_w(d / "afile", "x")}'], ['is a file, not a folder']),
    ('run-dir-under-file', lambda d: ['train', f'run_dir={_w(d / "afile", "x")}/run'], ['is a file, not a folder']),
    ('run-dir-not-writable', lambda d: ['train', 'run_dir=/proc/kd-run'], ['cannot be written', 'writable folder']),
    ('run-dir-garbage-config', lambda d: [_w(d / 'run' / 'config.json', b'\x00\xffgarbage') and 'train'],
     ['config.json is not a readable configuration']),
    ('run-dir-config-list', lambda d: [_w(d / 'run' / 'config.json', '[1]') and 'train'], ['does not hold a configuration mapping']),
    ('run-dir-other-run', lambda d: [_other_run(d) and 'train'], ['holds a run with a different configuration', 'train.lr:']),
    ('resume-from-missing', lambda d: ['train', f'train.resume_from={d / "nowhere"}'], ['train.resume_from:', 'does not exist']),
    # data
    ('data-missing', lambda d: ['train', f'data.source={d / "missing.txt"}'], ['missing.txt', 'neither an asset corpus']),
    ('data-csv', lambda d: ['train', f'data.source={_w(d / "t.csv", "a,b")}'], ["unsupported file type '.csv'"]),
    ('data-empty-folder', lambda d: [(d / 'empty').mkdir() or 'train', f'data.source={d / "empty"}'], ['no .txt/.md/.jsonl/.parquet files']),
    ('data-hf-malformed', lambda d: ['train', 'data.source=hf:a/b/c/d'], ["expected 'hf:name/config'"]),
    ('data-garbage-parquet', lambda d: ['train', f'data.source={_w(d / "g.parquet", b"PAR1 not really")}'], ['is not a readable Parquet file']),
    ('data-parquet-no-column', lambda d: ['train', f'data.source={_parquet(d / "p.parquet", body=["x"])}'], ["no column 'text'", 'data.text_column']),
    ('data-parquet-int-column', lambda d: ['train', f'data.source={_parquet(d / "p.parquet", text=[1, 2])}'], ["has type int64, not string"]),
    # models, tokenizers, devices
    ('tokenizer-not-offline', lambda d: ['train', 'student.tokenizer=no-such-org/no-such-model'], ['is not available offline']),
    ('model-not-offline', lambda d: ['train', 'teacher.name=no-such-org/teacher'], ["teacher.name='no-such-org/teacher' is not available offline"]),
    ('model-missing-folder', lambda d: ['train', f'teacher.name={d / "no-model"}'], ['looks like a local path but is not a folder']),
    ('tokenizer-is-corpus', lambda d: ['train', 'student.tokenizer=shakespeare'], ['is a corpus asset, not a tokenizer']),
    ('device-absent', lambda d: ['train', 'train.device=cuda:99'], ['CUDA GPU']),
    # other commands
    ('report-missing', lambda d: ['report', str(d / 'no-run')], ['is not a folder']),
    ('report-on-file', lambda d: ['report', str(_w(d / 'afile', 'x'))], ['is not a folder']),
    ('kaggle-no-user', lambda d: ['kaggle', 'prepare'], ['--user']),
    ('benchmark-no-folder', lambda d: ['benchmark', str(d / 'no-run')], ['is not a folder', 'run_dir of a run']),
    ('benchmark-not-a-run', lambda d: ['benchmark', str(d)], ['has no config.json, so it is not a run folder']),
    ('benchmark-no-student', lambda d: [_other_run(d) and 'benchmark', str(d / 'run')],
     ['has no trained student yet', '--models student_before,teacher']),
    ('benchmark-unknown-model', lambda d: ['benchmark', str(d), '--models', 'student,techer'], ["unknown model 'techer' (did you mean 'teacher'?)"]),
    ('benchmark-limit-0', lambda d: ['benchmark', str(d), '--limit', '0'], ['--limit 0: give a positive number']),
    ('benchmark-unknown-task', lambda d: [_finished_run(d) and 'benchmark', str(d / 'run'), '--tasks', 'hellaswg'],
     ["task 'hellaswg' is neither a harness task name (did you mean 'hellaswag'?)"]),
    ('benchmark-task-file-missing', lambda d: [_finished_run(d) and 'benchmark', str(d / 'run'), '--tasks', str(d / 'nope.yaml')],
     ['nope.yaml', 'does not exist']),
    ('unknown-command', lambda d: ['trian'], ["invalid choice: 'trian'"]),
]


@pytest.fixture
def sandbox(tmp_path) -> Path:
    "A folder with a small valid data file; commands run inside it (cwd), so a stray write would change its hash."
    d = tmp_path / 'work'
    _w(d / 'data.jsonl', ''.join(json.dumps({'text': f'line {i} of some text'}) + '\n' for i in range(8)))
    return d


def train_args(d: Path, args: list) -> list:
    "`train` and `config` get the tiny models and a run folder under `d` (the case's own settings come last and win)."
    if args[0] in ('train', 'config'):
        return [args[0], f'run_dir={d / "run"}', f'data.source={d / "data.jsonl"}', *TINY, *args[1:]]
    return args


@pytest.mark.parametrize('case', CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, sandbox):
    name, setup, fragments = case
    args = train_args(sandbox, setup(sandbox))
    before = tree_hash(sandbox)
    rc, out, err = run_forked(args, sandbox)
    assert rc == 2, (rc, out, err)
    assert 'Traceback' not in err and 'Traceback' not in out, err
    for f in fragments: assert f in err, (f, err)
    assert tree_hash(sandbox) == before, f'{name}: files were written'
    assert not (sandbox / 'run' / '.lock').exists()


def test_busy_run_dir(sandbox):
    "A run folder locked by a live process: exit 2 naming its pid, nothing changed; free again once it is SIGKILLed."
    from kaggle_distill.checkpoint import RunLock
    run = sandbox / 'run'
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            with RunLock(run): os.write(w, b'x'); time.sleep(60)
        finally: os._exit(0)
    os.read(r, 1)
    before = tree_hash(sandbox)
    rc, _, err = run_forked(train_args(sandbox, ['train']), sandbox)
    assert rc == 2 and f'in use by another trainer (pid {pid})' in err and 'Traceback' not in err, err
    assert tree_hash(sandbox) == before
    os.kill(pid, signal.SIGKILL); os.waitpid(pid, 0)
    with RunLock(run): pass                                  # no stale lock after SIGKILL


def _cli(args: list, cwd: Path, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, '-m', 'kaggle_distill.cli', *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, 'TQDM_DISABLE': '1', 'OMP_NUM_THREADS': '1', **env})


def test_console_script_and_debug(sandbox):
    "The real console script: one line and exit 2; with --debug or KAGGLE_DISTILL_DEBUG=1 the traceback too."
    ps = [_cli(['config', 'run_dir='], sandbox), _cli(['--debug', 'config', 'run_dir='], sandbox),
          _cli(['config', 'run_dir='], sandbox, KAGGLE_DISTILL_DEBUG='1')]
    (o0, e0), (o1, e1), (o2, e2) = [p.communicate(timeout=120) for p in ps]
    assert ps[0].returncode == 2 and e0.startswith('kaggle-distill: invalid configuration') and 'Traceback' not in e0, e0
    assert ps[1].returncode == 1 and 'Traceback' in e1 and 'ConfigError' in e1 and 'run_dir: empty' in e1, e1
    assert ps[2].returncode == 1 and 'Traceback' in e2, e2


def test_two_trainers(sandbox):
    "Two real trainers on one run folder: the second exits at once with status 2 naming the first's pid."
    args = train_args(sandbox, ['train', 'train.steps=200', 'train.eval_every=1000', 'train.checkpoint_every=1000'])
    first = _cli(args, sandbox)
    lock, deadline = sandbox / 'run' / '.lock', time.monotonic() + 120
    while not (lock.exists() and lock.read_text().strip() == str(first.pid)) and time.monotonic() < deadline:
        assert first.poll() is None, first.communicate()
        time.sleep(0.1)
    try:
        rc, _, err = run_forked(args, sandbox)
        assert rc == 2 and f'in use by another trainer (pid {first.pid})' in err and 'Traceback' not in err, err
    finally:
        first.kill(); first.communicate()
