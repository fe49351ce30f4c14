"""Bad input and faults (issue 10): every case ends with exit status 2, one message on stderr naming the problem,
no traceback, and the files untouched (a hash of the whole folder before and after).

Most cases run the CLI's `main` in a forked child of this already-imported process (stdout/stderr to files,
an uncaught exception printed as Python prints it, exit status from `os._exit`): the same code path as the
console script, without 40 interpreter start-ups at ~10 s each. A few cases run real `python -m
kaggle_distill.cli` processes: the plain console script, `--debug`, and two trainers on one run folder."""
import hashlib, json, os, signal, subprocess, sys, tempfile, time, traceback, warnings
from pathlib import Path

import pytest

from kaggle_distill import cli                     # imported once, before forking
from kaggle_distill.config import LOSS_NAMES
import kaggle_distill.trainer, kaggle_distill.data, kaggle_distill.models, kaggle_distill.checkpoint  # noqa: F401

TINY = ['teacher.name=qwen3_moe', 'teacher.tokenizer=qwen', 'student.name=llama', 'student.tokenizer=smollm',
        'student.scratch={}', 'data.max_length=48', 'data.eval_fraction=0.2', 'data.eval_max_blocks=2', 'train.steps=2',
        'train.batch_size=2', 'train.device=cpu']


def start_forked(args: list, cwd: Path, env: dict | None = None, patch=None) -> tuple[int, Path, Path]:
    """Start `cli.main(args)` in a forked child as the console script would (`env`: None deletes a variable; `patch()`
    runs in the child first, to stub a writer or a client); (pid, stdout file, stderr file)."""
    out, err = cwd.parent / 'stdout.txt', cwd.parent / 'stderr.txt'
    env = {'TQDM_DISABLE': '1', **(env or {})}              # no progress bars in the captured output
    pid = os.fork()
    if pid == 0:                                          # child: never returns into pytest
        code = 1
        try:
            os.chdir(cwd)
            for k, v in env.items():
                if v is None: os.environ.pop(k, None)
                else: os.environ[k] = v
            sys.stdout, sys.stderr = open(out, 'w'), open(err, 'w')
            warnings.resetwarnings()                      # pytest records warnings; the console script prints them
            warnings.showwarning = lambda m, c, f, n, file=None, line=None: sys.stderr.write(warnings.formatwarning(m, c, f, n, line))
            try:
                if patch: patch()
                code = cli.main(args)
            except SystemExit as e: code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException: traceback.print_exc(); code = 1
            sys.stdout.flush(); sys.stderr.flush()
        finally: os._exit(code)
    return pid, out, err


def finish_forked(pid: int, out: Path, err: Path) -> tuple[int, str, str]:
    "Wait for a `start_forked` child; (exit status, stdout, stderr)."
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out.read_text(), err.read_text()


def run_forked(args: list, cwd: Path, env: dict | None = None, patch=None) -> tuple[int, str, str]:
    "Run `cli.main(args)` in a forked child as the console script would; (exit status, stdout, stderr)."
    return finish_forked(*start_forked(args, cwd, env, patch))


def tree_hash(root: Path) -> str:
    "sha256 over every path under `root` (files with their bytes, folders and links by name; pipes are not read)."
    h = hashlib.sha256()
    for p in sorted(root.rglob('*')):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file() and not p.is_symlink(): h.update(p.read_bytes())
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
    ('config-file-is-folder', lambda d: ['config', '--config', str(d)], ['is not a regular file (a folder)']),
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
    # issue 26. Config files: no key twice, no aliases, bounded size, nesting and numbers; a quoted string stays one
    ('config-dup-key-yaml', lambda d: ['config', '--config', str(_w(d / 'c.yaml', 'train:\n  lr: 0.1\ntrain:\n  steps: 3\n'))],
     ["line 3: key 'train' appears twice in one mapping (first at line 1); keep one"]),
    ('config-dup-key-yaml-nested', lambda d: ['config', '--config', str(_w(d / 'c.yaml', 'train:\n  lr: 0.1\n  steps: 3\n  lr: 0.2\n'))],
     ["line 4: key 'lr' appears twice in one mapping (first at line 2)"]),
    ('config-dup-key-json', lambda d: ['config', '--config', str(_w(d / 'c.json', '{"train": {"lr": 0.1,\n "lr": 0.2}}'))],
     ["line 2: key 'lr' appears twice in one object (first at line 1)"]),
    ('config-deep-yaml', lambda d: ['config', '--config', str(_w(d / 'c.yaml', 'a: ' + '[' * 20000 + ']' * 20000))],
     ['nested more than 32 levels deep']),
    ('config-deep-json', lambda d: ['config', '--config', str(_w(d / 'c.json', '{"a": ' * 20000 + '1' + '}' * 20000))],
     ['line 1: nested more than 32 levels deep']),
    ('config-alias-bomb', lambda d: ['config', '--config', str(_w(d / 'c.yaml', BOMB))], ['line 2: YAML aliases (*a) are not allowed']),
    ('config-huge-file', lambda d: ['config', '--config', str(_w(d / 'c.yaml', 'train: {}\n' + '# x\n' * 300000))],
     ['is 1,200,010 bytes; a config holds at most 262,144']),
    ('config-quoted-number-yaml', lambda d: ['config', '--config', str(_w(d / 'c.yaml', 'train:\n  lr: "1e-4"\n'))],
     ["train.lr: expected float, got '1e-4' (str)"]),
    ('config-quoted-number-json', lambda d: ['config', '--config', str(_w(d / 'c.json', '{"train": {"log_every": "10"}}'))],
     ["train.log_every: expected int, got '10' (str)"]),
    ('config-5000-digits', lambda d: ['config', '--config', str(_w(d / 'c.yaml', 'train:\n  seed: ' + '9' * 5000))],
     ['line 2: a number of 5000 digits']),
    ('config-5000-digits-json', lambda d: ['config', '--config', str(_w(d / 'c.json', '{"train": {"seed": ' + '9' * 5000 + '}}'))],
     ['a number of 5000 digits']),
    ('config-fifo', lambda d: ['config', '--config', str(_fifo(d / 'c.yaml'))], ['is not a regular file (a pipe, socket or device)']),
    ('config-name-too-long', lambda d: ['config', '--config', str(d / ('c' * 300 + '.yaml'))], ['cannot be used (file name too long)']),
    ('config-symlink-loop', lambda d: ['config', '--config', str(_loop(d / 'c.yaml'))], ['cannot be used (too many levels of symbolic links)']),
    # overrides: the same parser
    ('override-quoted-number', lambda d: ['config', 'train.lr="1e-4"'], ["train.lr: expected float, got '1e-4' (str)"]),
    ('override-5000-digits', lambda d: ['config', 'train.seed=' + '9' * 5000], ['a number of 5000 digits']),
    ('override-5000-digit-float', lambda d: ['config', 'train.lr=0.' + '1' * 5000], ['a number of 5001 digits']),
    ('override-deep', lambda d: ['config', 'student.scratch=' + '{a: ' * 40 + '1' + '}' * 40], ['nested more than 32 levels deep']),
    ('override-alias', lambda d: ['config', 'student.scratch={a: &x 1, b: *x}'], ['YAML aliases (*x) are not allowed']),
    ('override-dup-key', lambda d: ['config', 'student.scratch={num_hidden_layers: 1, num_hidden_layers: 2}'],
     ["key 'num_hidden_layers' appears twice"]),
    ('override-huge-value', lambda d: ['config', 'train.resume_from=' + 'x' * 300_000], ['put long settings in a file']),
    # unbounded values: every number has an upper bound, checked before any work
    ('huge-seed', lambda d: ['train', 'train.seed=99999999999999999999'],
     ['train.seed: 99999999999999999999 is out of range; allowed in [0, 2147483647]']),
    ('huge-batch-size', lambda d: ['train', 'train.batch_size=100000000'], ['train.batch_size: 100000000 is out of range; allowed in [1, 4096]']),
    ('huge-grad-accum', lambda d: ['train', 'train.grad_accum=1000000'], ['train.grad_accum: 1000000 is out of range']),
    ('huge-steps', lambda d: ['train', 'train.steps=1e12'], ['train.steps: 1000000000000 is out of range; allowed in [1, 10000000]']),
    ('huge-max-docs', lambda d: ['train', 'data.max_docs=10000000000000'], ['data.max_docs: 10000000000000 is out of range']),
    ('huge-eval-blocks', lambda d: ['train', 'data.eval_max_blocks=1000000000'], ['data.eval_max_blocks: 1000000000 is out of range']),
    ('huge-top-k', lambda d: ['train', 'loss.top_k=100000000'], ['loss.top_k: 100000000 is out of range']),
    ('huge-keep-checkpoints', lambda d: ['train', 'train.keep_checkpoints=100000'], ['train.keep_checkpoints: 100000 is out of range']),
    ('huge-weight', lambda d: ['train', 'loss.weights.kd=1e300'], ['loss.weights.kd: 1e+300 is out of range']),
    ('huge-temperature', lambda d: ['train', 'loss.temperature.start=1e20'], ['loss.temperature.start: 1e+20 is out of range']),
    ('huge-time-budget', lambda d: ['train', 'train.time_budget_s=1e12'], ['train.time_budget_s: 1000000000000.0 is out of range']),
    ('infinite-lr', lambda d: ['train', 'train.lr=.inf'], ['train.lr: inf is out of range']),
    ('huge-scratch-dimension', lambda d: ['train', 'student.scratch={hidden_size: 1000000000000}'],
     ['student.scratch.hidden_size: 1000000000000 is larger than any model has']),
    ('huge-scratch-model', lambda d: ['train', 'student.scratch={hidden_size: 65536, num_attention_heads: 64, num_key_value_heads: 64, '
                                               'intermediate_size: 262144, num_hidden_layers: 64}'],
     ['B-parameter model; one built from scratch here holds at most 10 B']),
    # method/option combinations: refused before packing, not after
    ('sample-k-with-retok', lambda d: ['train', 'loss.sample_k=8'], ["loss.sample_k=8 works with loss.kd_method 'same_tokenizer' or 'shared_vocab'"]),
    ('sample-k-with-top-k', lambda d: ['train', 'loss.sample_k=8', 'loss.kd_method=shared_vocab', 'loss.top_k=4'],
     ['needs loss.divergence=forward_kl and loss.top_k=0']),
    ('retok-with-tv', lambda d: ['train', 'loss.divergence=tv'], ["loss.kd_method 'retok' works with the KL family"]),
    ('jsd-beta-zero', lambda d: ['train', 'loss.divergence=jsd', 'loss.beta=0'], ['jsd needs 0 < beta < 1']),
    ('skew-kl-beta-one', lambda d: ['train', 'loss.divergence=skew_kl', 'loss.beta=1'], ['skew_kl needs beta < 1']),
    # paths: a name too long, a loop of symbolic links, a named pipe
    ('run-dir-name-too-long', lambda d: ['train', f'run_dir={d / ("r" * 300)}'], ['cannot be used (file name too long)', 'characters)']),
    ('run-dir-symlink-loop', lambda d: ['train', f'run_dir={_loop(d / "loop")}'], ['cannot be used (too many levels of symbolic links)']),
    ('data-name-too-long', lambda d: ['train', f'data.source={d / ("t" * 300 + ".txt")}'], ['cannot be used (file name too long)']),
    ('data-symlink-loop', lambda d: ['train', f'data.source={_loop(d / "loop.txt")}'], ['cannot be used (too many levels of symbolic links)']),
    ('data-fifo', lambda d: ['train', f'data.source={_fifo(d / "pipe.txt")}'], ['is not a regular file or a folder (a named pipe, socket or device)']),
    ('resume-from-symlink-loop', lambda d: ['train', f'train.resume_from=[{_loop(d / "loop")}]'],
     ['train.resume_from:', 'cannot be used (too many levels of symbolic links)']),
    ('report-name-too-long', lambda d: ['report', str(d / ('r' * 300))], ['cannot be used (file name too long)']),
    ('config-int-key', lambda d: ['config', '--config', str(_w(d / 'c.yaml', '1: 2\ntrain: {~: 3}\n'))],
     ['config: key 1 is a int; keys are setting names', 'train: key None is a NoneType']),
    ('resume-from-not-text', lambda d: ['train', 'train.resume_from=[1, 2]'], ['train.resume_from: expected a list of text']),
    # a folder that is not a run: a run there would overwrite config.json, metrics.jsonl, student/, report.md ...
    ('run-dir-not-a-run', lambda d: ['train', f'run_dir={_w(d / "mine" / "notes.md", "x").parent}'],
     ["holds files that are not a kaggle-distill run (notes.md)", 'Train into a new or empty folder']),
    ('run-dir-user-student', lambda d: ['train', f'run_dir={_w(d / "mine" / "student" / "model.bin", "x").parent.parent}'],
     ["holds files that are not a kaggle-distill run (student)"]),
    ('model-name-too-long', lambda d: ['train', f'teacher.name={d / ("m" * 300)}'], ["teacher.name=", 'cannot be used (file name too long)', 'characters)']),
    ('model-symlink-loop', lambda d: ['train', f'student.tokenizer={_loop(d / "tok")}'], ['looks like a local path but is not a folder']),
    ('report-not-a-run', lambda d: ['report', str(_w(d / 'mine' / 'notes.md', 'x').parent)], ['holds no metrics.jsonl, so it is not a run folder']),
    # a damaged metrics.jsonl (not just a torn last line) is refused before work, with its line, and kept as it is
    ('metrics-damaged-line', lambda d: [_w(d / 'run' / 'metrics.jsonl', '{"kind": "train", "step": 1}\n{"kind": "tr\n{"kind": "train", "step": 2}\n') and 'train'],
     ['metrics.jsonl line 2 is not a metrics record', 'repair or delete that line']),
]

BOMB = 'a: &a [x, x, x, x, x, x, x, x, x]\n' + ''.join(f'{chr(98 + i)}: &{chr(98 + i)} [' + ', '.join([f'*{chr(97 + i)}'] * 9) + ']\n'
                                                   for i in range(8))   # the billion laughs: 9^9 values from 10 lines


def _fifo(p: Path) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True); os.mkfifo(p); return p


def _loop(p: Path) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True); p.symlink_to(p); return p


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
    from kaggle_distill.session import RunLock
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


# ---------------------------------------------------------------------------------------------------------------------
# issue 26: nothing lost, ever. The cases below need more than one command, a stub in the child, or a signal.

import builtins, contextlib, errno, io, shutil

REPO = Path(__file__).resolve().parents[1]


def _deny(*targets: Path):
    """In a forked child: reads of `targets` (and anything under them) fail with EACCES, as a chmod 000 would; tests run
    as root here, whom permissions do not stop, so the refusal is stubbed where a denied read fails (open, scandir)."""
    roots = [os.path.realpath(t) for t in targets]
    real_open, real_scandir = builtins.open, os.scandir
    def denied(p) -> bool:
        if isinstance(p, int): return False
        r = os.path.realpath(os.fspath(p)); return any(r == t or r.startswith(t + os.sep) for t in roots)
    def fake_open(file, *a, **k):
        if denied(file): raise PermissionError(errno.EACCES, 'Permission denied', str(file))
        return real_open(file, *a, **k)
    def fake_scandir(p='.'):
        if denied(p): raise PermissionError(errno.EACCES, 'Permission denied', str(p))
        return real_scandir(p)
    builtins.open = io.open = fake_open; os.scandir = fake_scandir


def _enospc(what: str):
    "An `OSError` as a full disk raises it."
    return OSError(errno.ENOSPC, 'No space left on device', what)


def one_line(err: str) -> str:
    "The one `kaggle-distill:` line of a command's stderr (loading messages may precede it), with no traceback anywhere."
    assert 'Traceback' not in err, err
    lines = [l for l in err.splitlines() if l.startswith('kaggle-distill:')]
    assert len(lines) == 1, err
    return lines[0] + '\n'


def _leftovers(root: Path) -> list[str]:
    "Temporary files or folders and run-folder locks anywhere under `root` (what an interrupted or failed writer could leave)."
    return sorted(str(p.relative_to(root)) for p in root.rglob('*')
                  if p.name.endswith('.tmp') or p.name.startswith('.tmp-') or p.name.startswith('.del-') or p.name == '.lock')


@pytest.fixture(scope='module')
def finished(tmp_path_factory) -> tuple[Path, list]:
    """A finished two-step run (a checkpoint at each step) and its `train` arguments: tests copy the run folder and
    resume it (fast: the data cache comes along, no step is left to train). Run with TQDM_DISABLE=1: no bar."""
    root = tmp_path_factory.mktemp('finished')
    data = _w(root / 'data.jsonl', ''.join(json.dumps({'text': f'line {i} of some text'}) + '\n' for i in range(8)))
    args = ['train', f'run_dir={root / "run"}', f'data.source={data}', *TINY, 'train.checkpoint_every=1', 'train.eval_every=2']
    (root / 'cwd').mkdir()
    rc, out, err = run_forked(args, root / 'cwd', env={'TQDM_DISABLE': '1'})
    assert rc == 0, (out, err)
    assert 'distill' not in err, err                     # TQDM_DISABLE=1 silences the training bar too
    return root / 'run', args


def _copy_run(finished, sandbox: Path) -> tuple[Path, list]:
    "A copy of the finished run in `sandbox` and the arguments that resume it there."
    src, args = finished
    run = sandbox / 'run'
    shutil.copytree(src, run)
    return run, [a if not a.startswith('run_dir=') else f'run_dir={run}' for a in args]


def test_training_bar_shows_without_tqdm_disable(finished, sandbox):
    "The control of the fixture's check: the same command without TQDM_DISABLE shows the `distill` bar."
    run, args = _copy_run(finished, sandbox)
    shutil.rmtree(run / 'checkpoints' / 'ckpt-00000002')                # one step left to train
    rc, out, err = run_forked(args, sandbox, env={'TQDM_DISABLE': None})
    assert rc == 0 and 'distill' in err, (out, err)


# --- checkpoints and partial files: never taken as absent ------------------------------------------------------------

def test_unreadable_checkpoint_falls_back_to_the_previous(finished, sandbox):
    "The newest checkpoint cannot be read: one warning naming it, the run resumes from the previous one and finishes."
    run, args = _copy_run(finished, sandbox)
    rc, out, err = run_forked(args, sandbox, patch=lambda: _deny(run / 'checkpoints' / 'ckpt-00000002'))
    assert rc == 0 and 'Traceback' not in err, (out, err)
    assert err.count('skipped unreadable checkpoint') == 1, err
    assert f"{run / 'checkpoints' / 'ckpt-00000002'}: manifest.json cannot be read (Permission denied)" in err, err
    assert f"resuming from {run / 'checkpoints' / 'ckpt-00000001'} (step 1 of 2)" in out, out
    assert not _leftovers(sandbox)


def test_unreadable_checkpoints_folder_is_an_error(finished, sandbox):
    "A checkpoints folder that cannot be listed: exit 2 before any work, never 'starting fresh'; metrics and all kept."
    run, args = _copy_run(finished, sandbox)
    before = tree_hash(sandbox)
    rc, out, err = run_forked(args, sandbox, patch=lambda: _deny(run / 'checkpoints'))
    assert rc == 2 and 'Traceback' not in err and 'starting fresh' not in out, (out, err)
    assert f"{run / 'checkpoints'} cannot be read (Permission denied), so the checkpoints in it cannot be seen" in err, err
    assert tree_hash(sandbox) == before and not _leftovers(sandbox)


def test_corrupt_checkpoint_is_warned_about_once(finished, sandbox):
    "The preflight and the locked resume both look at the checkpoints; the warning about a corrupt one is printed once."
    run, args = _copy_run(finished, sandbox)
    t = run / 'checkpoints' / 'ckpt-00000002' / 'tensors.safetensors'
    t.write_bytes(t.read_bytes()[:-100])
    rc, out, err = run_forked(args, sandbox)
    assert rc == 0 and err.count('skipped corrupt checkpoint') == 1, (out, err)
    assert 'resuming from' in out and 'ckpt-00000001' in out


def test_torn_metrics_line_is_cut_on_resume(finished, sandbox):
    "A run killed in the middle of an append: its torn last line is cut with one warning, and the run resumes."
    run, args = _copy_run(finished, sandbox)
    with (run / 'metrics.jsonl').open('a') as f: f.write('{"kind": "train", "step": 3, "lo')
    rc, out, err = run_forked(args, sandbox)
    assert rc == 0 and 'Traceback' not in err, (out, err)
    assert err.count('its last line was cut short by an interrupted write') == 1, err
    lines = (run / 'metrics.jsonl').read_text().splitlines()
    assert lines and all(json.loads(l)['step'] <= 2 for l in lines)


# --- a full disk in every phase: one line, exit 2, no temporary file, and the run folder resumable ------------------

def _disk_full_then_resume(sandbox: Path, args: list, patch, what: str, out_check=None):
    rc, out, err = run_forked(args, sandbox, patch=patch)
    assert rc == 2 and 'Traceback' not in err, (rc, out, err)
    [line] = [l for l in err.splitlines() if l.startswith('kaggle-distill:')]     # one line, among the loading messages
    assert line.startswith(f'kaggle-distill: disk full: {what}'), err
    assert not _leftovers(sandbox), _leftovers(sandbox)
    rc, out, err = run_forked(args, sandbox)                        # space freed: the same command goes on
    assert rc == 0 and 'Traceback' not in err, (rc, out, err)
    return out


def test_disk_full_while_packing(sandbox):
    "The packed data cache cannot be written: no half entry and no temporary file; the rerun packs again and trains."
    import numpy as np
    real = np.savez
    def patch():
        def full(f, **arrays): f.write(b'PK\x03\x04 half an archive'); raise _enospc('train.npz')
        np.savez = full
    _disk_full_then_resume(sandbox, train_args(sandbox, ['train']), patch, 'no space left to write packed data')
    assert np.savez is real
    assert (sandbox / 'run' / 'student' / 'config.json').is_file()


def test_disk_full_while_checkpointing(sandbox):
    "A checkpoint cannot be written: the previous ones are intact, no temporary folder is left; the rerun finishes."
    import kaggle_distill.checkpoint as ck
    def patch():
        def full(tensors, path, metadata=None): Path(path).write_bytes(b'half'); raise _enospc(str(path))
        ck.save_file = full
    _disk_full_then_resume(sandbox, train_args(sandbox, ['train', 'train.checkpoint_every=1']), patch, '')   # its own message: GB needed and free


def test_disk_full_while_saving_the_student(finished, sandbox):
    "The final student cannot be written: nothing half-written; the run's last checkpoint is kept and the rerun saves it."
    from transformers import PreTrainedModel
    run, args = _copy_run(finished, sandbox)
    shutil.rmtree(run / 'student'); (run / 'summary.json').unlink()
    def patch():
        def full(self, folder, *a, **k):
            Path(folder).mkdir(parents=True, exist_ok=True); (Path(folder) / 'model.safetensors').write_bytes(b'half')
            raise _enospc(str(Path(folder) / 'model.safetensors'))
        PreTrainedModel.save_pretrained = full
    _disk_full_then_resume(sandbox, args, patch, 'no space left to write the trained student')
    assert (run / 'student' / 'model.safetensors').stat().st_size > 1000 and json.loads((run / 'summary.json').read_text())['status'] == 'finished'


def test_disk_full_while_writing_the_report(finished, sandbox):
    "A report plot cannot be written: no half-written PNG or temporary; the rerun writes summary and report."
    from matplotlib.figure import Figure
    run, args = _copy_run(finished, sandbox)
    shutil.rmtree(run / 'plots'); (run / 'report.md').unlink()
    def patch():
        def full(self, fname, *a, **k): Path(fname).write_bytes(b'\x89PNG half'); raise _enospc(str(fname))
        Figure.savefig = full
    _disk_full_then_resume(sandbox, args, patch, 'no space left to write a report plot')
    assert (run / 'report.md').is_file() and (run / 'plots' / 'evaluation.png').stat().st_size > 1000


def test_any_other_disk_full_is_one_line(finished, sandbox):
    "A full disk where no writer expected it (here: the run folder's config.json) still ends in one line and exit 2."
    run, args = _copy_run(finished, sandbox)
    import kaggle_distill.files as files
    def patch():
        real = files.write_atomic
        def full(path, data, what=''):
            if Path(path).name == 'config.json': raise _enospc(str(path))
            return real(path, data, what)
        files.write_atomic = full
    rc, out, err = run_forked(args, sandbox, patch=patch)
    assert rc == 2 and one_line(err) == f"kaggle-distill: disk full: no space left to write {run / 'config.json'}; nothing half-written was kept. " \
        "Free space on that disk (or write elsewhere, e.g. run_dir=<a folder on a larger disk>) and run the same command again: " \
        "a run goes on from its last checkpoint\n", err
    assert not _leftovers(sandbox)


# --- late errors: no .lock, no temporary --------------------------------------------------------------------------

def test_late_errors_leave_no_lock(sandbox):
    """An error found only after the data is packed (the KD method refusing the tokenizers) is still one line, exit 2;
    an unexpected one is a traceback, exit 1. Neither leaves `run/.lock` (nor any temporary) behind."""
    import kaggle_distill.retokenize as rt
    def refuse():
        def make_kd(*a, **k): raise ValueError('the two vocabularies share no token')
        rt.make_kd = make_kd
    rc, out, err = run_forked(train_args(sandbox, ['train']), sandbox, patch=refuse)
    assert rc == 2 and one_line(err) == "kaggle-distill: loss.kd_method='retok': the two vocabularies share no token\n", err
    assert not _leftovers(sandbox)
    def crash():
        def make_kd(*a, **k): raise RuntimeError('a bug')
        rt.make_kd = make_kd
    rc, out, err = run_forked(train_args(sandbox, ['train']), sandbox, patch=crash)
    assert rc == 1 and 'Traceback' in err and 'RuntimeError: a bug' in err, err
    assert not _leftovers(sandbox)


# --- hub sources: probed before any work, offline fails fast ---------------------------------------------------------

HUB_ENV = {'HF_HUB_OFFLINE': None, 'HF_DATASETS_OFFLINE': None}


def _hub_env(d: Path, **more) -> dict:
    return {**HUB_ENV, 'HF_HUB_CACHE': str(d / 'no-hub-cache'), 'HF_DATASETS_CACHE': str(d / 'no-ds-cache'), **more}


@pytest.mark.parametrize('case', [
    ('unreachable', ConnectionError('Failed to establish a new connection: [Errno -3] Temporary failure in name resolution'),
     "data source 'hf:wikitext/wikitext-2-raw-v1': the hub did not answer within 10 s (ConnectionError"),
    ('timeout', TimeoutError('The read operation timed out'), 'the hub did not answer within 10 s (TimeoutError'),
    ('missing', 'not-found', "the hub has no dataset 'wikitext'"),
], ids=lambda c: c[0])
def test_hub_source_probed_before_work(case, sandbox):
    "A hub source the hub does not answer for: one line before any model loads, nothing written; the client is stubbed."
    import huggingface_hub, huggingface_hub.errors as hfe
    _, exc, expect = case
    calls = sandbox.parent / 'calls.txt'
    def patch():
        def info(self, repo_id, timeout=None, **kw):
            calls.write_text(f'{repo_id} {timeout}')
            if exc == 'not-found':
                e = hfe.RepositoryNotFoundError.__new__(hfe.RepositoryNotFoundError); Exception.__init__(e, '404'); raise e
            raise exc
        huggingface_hub.HfApi.dataset_info = info
    before = tree_hash(sandbox)
    rc, out, err = run_forked(train_args(sandbox, ['train', 'data.source=hf:wikitext/wikitext-2-raw-v1']), sandbox,
                              env=_hub_env(sandbox.parent), patch=patch)
    assert rc == 2 and expect in err and 'Traceback' not in err, err
    assert calls.read_text() == 'wikitext 10.0'                              # one metadata request, with the timeout
    assert tree_hash(sandbox) == before


def test_hub_source_offline_fails_fast(sandbox):
    "With HF_HUB_OFFLINE=1 and nothing cached: refused at once, without calling the hub."
    import huggingface_hub
    def patch():
        def info(*a, **k): raise AssertionError('the hub was called')
        huggingface_hub.HfApi.dataset_info = info
    t0 = time.monotonic()
    rc, out, err = run_forked(train_args(sandbox, ['train', 'data.source=hf:wikitext/wikitext-2-raw-v1']), sandbox,
                              env=_hub_env(sandbox.parent, HF_HUB_OFFLINE='1'), patch=patch)
    assert rc == 2 and 'the hub is switched off here (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)' in err, err
    assert time.monotonic() - t0 < 60                                          # no network timeout waited for


def test_unreadable_data_file(sandbox):
    "A data file that cannot be read: named before any work (the check opens every file), nothing written."
    before = tree_hash(sandbox)
    rc, out, err = run_forked(train_args(sandbox, ['train']), sandbox, patch=lambda: _deny(sandbox / 'data.jsonl'))
    assert rc == 2 and f"{sandbox / 'data.jsonl'} cannot be read (Permission denied)" in err and 'Traceback' not in err, err
    assert tree_hash(sandbox) == before


# --- Ctrl-C and SIGTERM (issue 30): one line and exit 130 before the first checkpoint, a pause inside the loop ------

def _signal_when_ready(args, cwd, sig, patch, ready: Path, timeout: float = 120) -> tuple[int, str, str]:
    "Start a forked trainer whose `patch` touches `ready` at the moment to interrupt; send `sig` then; its result."
    pid, out, err = start_forked(args, cwd, patch=patch)
    deadline = time.monotonic() + timeout
    while not ready.exists():
        done, status = os.waitpid(pid, os.WNOHANG)
        assert done == 0, (out.read_text(), err.read_text())
        assert time.monotonic() < deadline, 'the child never got ready'
        time.sleep(0.05)
    os.kill(pid, sig)
    return finish_forked(pid, out, err)


def _pause_in(module, name: str, ready: Path, seconds: float = 60, call: int = 1):
    "A patch: the `call`-th call of `module.name` touches `ready`, then sleeps (the signal arrives meanwhile), then runs."
    def patch():
        real, n = getattr(module, name), [0]
        def slow(*a, **k):
            n[0] += 1
            if n[0] == call: ready.touch(); time.sleep(seconds)
            return real(*a, **k)
        setattr(module, name, slow)
    return patch


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT], ids=['SIGTERM', 'SIGINT'])
def test_signal_while_packing(sig, sandbox):
    "Ctrl-C or SIGTERM while the data is packed: one line, exit 130, no traceback, nothing half-written, no .lock; rerun trains."
    import kaggle_distill.data as data
    ready = sandbox.parent / 'ready'
    rc, out, err = _signal_when_ready(train_args(sandbox, ['train']), sandbox, sig, _pause_in(data, '_pack_source', ready), ready)
    how = 'Ctrl-C (SIGINT)' if sig == signal.SIGINT else 'SIGTERM'
    assert rc == 130 and one_line(err) == f"kaggle-distill: interrupted by {how} before this run's first checkpoint: there is nothing to " \
        f"resume and nothing half-written is left; run the same command again to start (packed data kept in " \
        f"{sandbox / 'run' / 'data_cache'} is reused)\n", (rc, out, err)
    assert not _leftovers(sandbox)
    rc, out, err = run_forked(train_args(sandbox, ['train']), sandbox)
    assert rc == 0, (out, err)


def test_ctrl_c_during_the_step0_evaluation(sandbox):
    "Ctrl-C during the first evaluation (models loaded, no checkpoint yet): exit 130, no metrics record half-written."
    import kaggle_distill.trainer as tr
    ready = sandbox.parent / 'ready'
    rc, out, err = _signal_when_ready(train_args(sandbox, ['train']), sandbox, signal.SIGINT, _pause_in(tr, 'evaluate_run', ready), ready)
    assert rc == 130 and "interrupted by Ctrl-C (SIGINT) before this run's first checkpoint" in err and 'Traceback' not in err, err
    assert not _leftovers(sandbox) and not (sandbox / 'run' / 'metrics.jsonl').exists()
    assert run_forked(train_args(sandbox, ['train']), sandbox)[0] == 0


def test_ctrl_c_in_the_loop_pauses(sandbox):
    "Ctrl-C inside the training loop pauses as SIGTERM does: a checkpoint, the report, exit 3; the rerun finishes."
    import kaggle_distill.trainer as tr
    ready = sandbox.parent / 'ready'
    args = train_args(sandbox, ['train', 'train.steps=4'])
    rc, out, err = _signal_when_ready(args, sandbox, signal.SIGINT, _pause_in(tr, 'optimizer_step', ready, seconds=3, call=2), ready)
    assert rc == 3 and 'paused at step' in out and '(SIGINT)' in out and 'Traceback' not in err, (out, err)
    assert json.loads((sandbox / 'run' / 'summary.json').read_text())['status'] == 'paused'
    assert not _leftovers(sandbox)
    rc, out, err = run_forked(args, sandbox)
    assert rc == 0 and 'resuming from' in out, (out, err)


def test_sigterm_while_saving_the_student(finished, sandbox):
    "SIGTERM after the last checkpoint, while the student is written: exit 130 naming that checkpoint; the rerun writes it."
    from transformers import PreTrainedModel
    run, args = _copy_run(finished, sandbox)
    shutil.rmtree(run / 'student')
    ready = sandbox.parent / 'ready'
    rc, out, err = _signal_when_ready(args, sandbox, signal.SIGTERM, _pause_in(PreTrainedModel, 'save_pretrained', ready), ready)
    assert rc == 130 and one_line(err) == "kaggle-distill: interrupted by SIGTERM; nothing half-written is left (files are written whole " \
        "or not at all). The checkpoint at step 2 is kept: run the same command again to continue from it\n", err
    assert not _leftovers(sandbox) and not (run / 'student').exists()
    rc, out, err = run_forked(args, sandbox)
    assert rc == 0 and (run / 'student' / 'config.json').is_file(), (out, err)


def test_ctrl_c_real_console_script(tmp_path):
    """The real console script, Ctrl-C while it packs a corpus (the run folder is locked as setup begins): one line on
    stderr, exit 130, no traceback, no .lock, no temporary file."""
    run = tmp_path / 'run'
    p = _cli(['train', f'run_dir={run}', 'data.source=shakespeare', *TINY[:4], 'student.scratch={}', 'train.device=cpu'], tmp_path)
    lock, deadline = run / '.lock', time.monotonic() + 120
    while not (lock.exists() and lock.read_text().strip() == str(p.pid)):
        assert p.poll() is None and time.monotonic() < deadline, p.communicate()
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, (p.returncode, out, err)
    assert 'interrupted by Ctrl-C (SIGINT)' in one_line(err), err
    assert not _leftovers(tmp_path)


# --- kaggle prepare: it deletes nothing it did not write -------------------------------------------------------------

def _fake_checkout(root: Path) -> Path:
    "A small git checkout that looks like kaggle_distill's to `kaggle prepare` (refusals happen before any wheel is built)."
    c = root / 'clone'
    _w(c / 'settings.ini', '[DEFAULT]\nversion = 0.1.0\n'); _w(c / 'kaggle_kernels' / 'distill.ipynb', '{"cells": []}')
    _w(c / 'nbs' / 'notes.md', 'my work')
    git = lambda *a: subprocess.run(['git', '-C', str(c), *a], check=True, capture_output=True)
    git('init', '-q'); git('add', '-A'); git('-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-qm', 'x')
    return c


def _marker(files) -> str:
    return json.dumps({'written_by': 'kaggle-distill kaggle prepare', 'files': files})


PREPARE_CASES = [   # (id, setup(root) -> extra args, cwd relative to root, expected message fragments)
    ('out-is-the-checkout', lambda r: ['--out', '.'], 'clone', ["--out '.' is the checkout: prepare writes only into a folder of its own"]),
    ('out-holds-the-checkout', lambda r: ['--out', '..'], 'clone', ["--out '..' is a folder holding the checkout"]),
    ('out-is-home-like', lambda r: ['--out', str(r)], 'clone', ['is a folder holding the checkout']),
    ('out-has-other-files', lambda r: [_w(r / 'mine' / 'notes.txt', 'x') and '--out', str(r / 'mine')], 'clone',
     ['holds files kaggle prepare did not write (notes.txt); nothing was changed', 'give a new or empty folder with --out']),
    ('out-inside-git', lambda r: ['--out', '.git/upload'], 'clone', ["is inside the checkout's .git folder"]),
    ('out-is-a-file', lambda r: ['--out', str(_w(r / 'afile', 'x'))], 'clone', ['is a file, not a folder']),
    ('out-under-a-file', lambda r: ['--out', str(_w(r / 'afile', 'x') / 'up')], 'clone', ['which is a file, not a folder']),
    ('out-foreign-marker', lambda r: ['--out', str(_w(r / 'up' / '.kaggle-distill-prepare.json', '{"files": []}').parent)], 'clone',
     ['is not a marker written by kaggle prepare']),
    ('out-marker-by-name-only', lambda r: ['--out', str(_w(r / 'up' / '.kaggle-distill-prepare.json', 'hello').parent)], 'clone',
     ['is not a marker written by kaggle prepare']),
    ('out-marker-escapes', lambda r: ['--out', str(_w(r / 'up' / '.kaggle-distill-prepare.json', _marker(['../clone/settings.ini'])).parent)],
     'clone', ['is not a marker written by kaggle prepare']),
    ('out-extra-file', lambda r: [_w(r / 'up' / 'kernel' / 'notes.md', 'mine') and _w(r / 'up' / 'dataset' / 'a.whl', 'w') and
                                  _w(r / 'up' / '.kaggle-distill-prepare.json', _marker(['dataset/a.whl'])) and '--out', str(r / 'up')],
     'clone', ['did not write (kernel/notes.md) beside what an earlier prepare wrote']),
    ('out-name-too-long', lambda r: ['--out', str(r / ('u' * 300))], 'clone', ['cannot be used (file name too long)']),
    ('out-symlink-loop', lambda r: ['--out', str(_loop(r / 'loop'))], 'clone', ['cannot be used (too many levels of symbolic links)']),
    ('outside-a-checkout', lambda r: ['--out', str(_w(r / 'up' / 'keep.txt', 'x').parent)], 'elsewhere',
     ['is not inside a kaggle_distill git checkout']),
    ('user-empty', lambda r: ['--user', ''], 'clone', ["--user '' is not a Kaggle user name"]),
    ('user-invalid', lambda r: ['--user', 'some one'], 'clone', ["--user 'some one' is not a Kaggle user name"]),
    ('preset-unknown', lambda r: ['--preset', 'p1OO'], 'clone', ["unknown preset 'p1OO'"]),
]


@pytest.mark.parametrize('case', PREPARE_CASES, ids=[c[0] for c in PREPARE_CASES])
def test_kaggle_prepare_refuses(case, tmp_path):
    "Each refusal: exit 2, one line naming the folder and the fix, and every file (the checkout's .git included) untouched."
    name, setup, cwd, fragments = case
    root = tmp_path / 'root'
    _fake_checkout(root); (root / 'elsewhere').mkdir()
    args = ['kaggle', 'prepare', '--user', 'someone', *setup(root)]
    before = tree_hash(root)
    rc, out, err = run_forked(args, root / cwd)                    # its stdout/stderr files land in root: removed below
    assert rc == 2 and 'Traceback' not in err and err.count('\n') == 1, (rc, out, err)
    for f in fragments: assert f in err, (f, err)
    os.remove(root / 'stdout.txt'); os.remove(root / 'stderr.txt')
    assert tree_hash(root) == before, f'{name}: files were changed'


def test_kaggle_prepare_rerun_replaces_only_its_own_files(tmp_path):
    """The real prepare (a wheel is built) twice into one folder: the rerun replaces exactly what the first wrote,
    and `output/` (a downloaded session's checkpoints) is never touched."""
    up = tmp_path / 'up'
    ckpt = _w(up / 'output' / 'run' / 'checkpoints' / 'ckpt-00000500' / 'tensors.safetensors', b'weights of session 1')
    for _ in range(2):
        rc, out, err = run_forked(['kaggle', 'prepare', '--user', 'someone', '--out', str(up)], REPO)
        assert rc == 0, (out, err)
        assert ckpt.read_bytes() == b'weights of session 1'
        marker = json.loads((up / '.kaggle-distill-prepare.json').read_text())
        files = sorted(str(p.relative_to(up)) for p in up.rglob('*') if p.is_file() and 'output' not in p.parts)
        assert files == sorted([*marker['files'], '.kaggle-distill-prepare.json']), (files, marker)
        assert any(f.startswith('dataset/kaggle_distill-') and f.endswith('.whl') for f in marker['files'])
        assert {'dataset/dataset-metadata.json', 'kernel/distill.ipynb', 'kernel/kernel-metadata.json'} <= set(marker['files'])
    assert not _leftovers(tmp_path)
    (up / 'kernel' / 'my-notes.md').write_text('mine')              # something of the user's: the next rerun refuses
    rc, out, err = run_forked(['kaggle', 'prepare', '--user', 'someone', '--out', str(up)], REPO)
    assert rc == 2 and 'did not write (kernel/my-notes.md)' in err and (up / 'kernel' / 'my-notes.md').read_text() == 'mine', err


def test_report_on_damaged_files(tmp_path):
    "`report` on a run whose summary.json is torn and whose metrics.jsonl has a damaged byte: the report, with notes; no traceback."
    run = tmp_path / 'run'
    _w(run / 'metrics.jsonl', b'{"kind": "train", "step": 1, "loss": {"total": 2.0}}\n\xff\xfe{"kind": "tr\n')
    _w(run / 'summary.json', '{"status": "fini')
    rc, out, err = run_forked(['report', str(run)], tmp_path)
    assert rc == 0 and 'Traceback' not in err, (out, err)
    md = (run / 'report.md').read_text()
    assert 'summary.json is not readable' in md and 'line 2 of metrics.jsonl is unreadable' in md, md
