"""Checkpoints against real processes: SIGKILL a process that is writing checkpoints, at random moments (forked
writers, fast) and in the middle of a save (fresh interpreters); SIGTERM a training loop in a fresh interpreter and
check it stops after a step with a final checkpoint. After every kill, every checkpoint on disk verifies and holds
exactly what was saved at its step, and find_latest returns the newest without a warning."""
import multiprocessing, os, random, signal, subprocess, sys, time, warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))                  # the library as exported from the notebooks, installed or not
from kaggle_distill.checkpoint import CheckpointWarning, find_latest, list_checkpoints, load_checkpoint, save_state

# The state written at `step`: every value is a function of the step, so the parent can check any checkpoint.
EXPECTED = '''
def expected_state(step):
    g = torch.Generator().manual_seed(step)
    return {'w': torch.randn(1024, 1024, generator=g), 'step': torch.tensor(step),
            'nested': {0: [step, torch.full((10,), float(step))], 'name': f'step-{step}'}, 'betas': (0.9, 0.999)}
'''
exec(EXPECTED)

WRITER = EXPECTED + '''
import os, sys, time, torch
import kaggle_distill.checkpoint as C
folder = sys.argv[1]
if os.environ.get('HANG_IN_SAVE'):          # stall inside the save, after the tensors file is written
    real = C.fsync_path
    def stalled(path):
        real(path)
        folder_name = os.path.basename(os.path.dirname(path))    # .tmp-ckpt-<step>-<pid>-<token>
        if os.path.basename(path) == C.TENSORS and int(folder_name.split('-')[2]) == int(os.environ['HANG_IN_SAVE']):
            print('in-save', flush=True); time.sleep(60)
    C.fsync_path = stalled
ck = C.find_latest([folder])
step = ck.step if ck else 0
print('start', step, flush=True)
while True:
    step += 1
    C.save_state(folder, step, expected_state(step), meta={'pid': os.getpid()}, keep=2)
    print(step, flush=True)
'''

TRAINER = EXPECTED + '''
import sys, time, torch
from kaggle_distill.checkpoint import save_state
from kaggle_distill.session import StopSignal
folder, step = sys.argv[1], 0
with StopSignal() as stop:
    print('ready', flush=True)
    while True:
        step += 1
        time.sleep(0.005)                     # one "training step"
        if step % 20 == 0: save_state(folder, step, expected_state(step), keep=2)
        if reason := stop.should_stop():
            save_state(folder, step, expected_state(step), meta={'reason': reason}, keep=2)
            print('stopped', reason, step, flush=True)
            break
'''


def spawn(script: str, folder: Path, **env) -> subprocess.Popen:
    "Start `script` in a fresh Python process with `folder` as its argument."
    e = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1', **env)
    return subprocess.Popen([sys.executable, '-c', script, str(folder)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=e, cwd=REPO)


def wait_for(proc: subprocess.Popen, prefix: str, timeout: float = 30) -> str:
    "Read the child's stdout until a line starting with `prefix`; fail with its stderr if it dies first."
    t0 = time.time()
    while time.time() - t0 < timeout:
        line = proc.stdout.readline()
        if line.startswith(prefix): return line.strip()
        if not line and proc.poll() is not None:
            raise AssertionError(f'child exited with {proc.returncode} before {prefix!r}: {proc.stderr.read()}')
    raise AssertionError(f'no {prefix!r} from the child within {timeout} s')


def kill(proc: subprocess.Popen) -> None:
    "SIGKILL the child (no cleanup of any kind can run) and reap it."
    proc.kill(); proc.wait()
    proc.stdout.close(); proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def check_state(ck) -> None:
    "The checkpoint's contents are exactly what the writer saved at that step."
    st, exp = ck.state(), expected_state(ck.step)
    assert torch.equal(st['w'], exp['w']) and torch.equal(st['step'], exp['step'])
    assert st['nested'][0][0] == ck.step and torch.equal(st['nested'][0][1], exp['nested'][0][1])
    assert st['nested']['name'] == f'step-{ck.step}' and st['betas'] == (0.9, 0.999)


def check_folder(folder: Path) -> int:
    "Every checkpoint folder verifies and holds its step's state; find_latest warns about nothing. The newest step."
    names = [p.name for p in list_checkpoints([folder])]
    assert all(n.startswith('ckpt-') and n[5:].isdigit() for n in names), names
    for p in list_checkpoints([folder]): check_state(load_checkpoint(p))
    with warnings.catch_warnings():
        warnings.simplefilter('error', CheckpointWarning)
        ck = find_latest([folder])
    assert ck is not None and ck.path.name == names[0]
    check_state(ck)
    return ck.step


def _forked_writer(folder: Path, conn) -> None:
    "A writer in a forked process (it starts in milliseconds): resume from the newest checkpoint, then save forever."
    torch.set_num_threads(1)
    ck = find_latest([folder])
    step = ck.step if ck else 0
    conn.send(('start', step))
    while True:
        step += 1
        save_state(folder, step, expected_state(step), meta={'pid': os.getpid()}, keep=2)
        conn.send(('saved', step))


def test_sigkill_at_random_moments(tmp_path):
    "Eight writer processes in a row, each SIGKILLed 0-300 ms after its first save (~5 saves of 4 MB)."
    ctx, rng, latest, caught_mid_save = multiprocessing.get_context('fork'), random.Random(0), 0, 0
    for i in range(8):
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_forked_writer, args=(tmp_path, send), daemon=True)
        proc.start(); send.close()
        assert recv.recv() == ('start', latest)            # it resumed from the newest valid checkpoint
        assert recv.recv() == ('saved', latest + 1)
        time.sleep(rng.uniform(0, 0.3))
        os.kill(proc.pid, signal.SIGKILL); proc.join(); recv.close()
        assert proc.exitcode == -signal.SIGKILL
        caught_mid_save += any(p.name.startswith('.tmp-ckpt-') for p in tmp_path.iterdir())
        new = check_folder(tmp_path)
        assert new > latest, (new, latest)                 # it made progress and nothing went backwards
        assert len(list_checkpoints([tmp_path])) <= 3      # keep=2, plus at most the one being committed
        latest = new
    print(f'{caught_mid_save} of 8 kills left a save in progress behind; last step {latest}')


def test_sigkill_in_the_middle_of_a_save(tmp_path):
    "A fresh interpreter stalls inside save 3 (its tensors file complete, no manifest, not renamed) and is killed."
    proc = spawn(WRITER, tmp_path, HANG_IN_SAVE='3')       # steps 1, 2 complete; step 3 stalls after its tensors
    wait_for(proc, 'in-save')
    kill(proc)
    tmp = [p for p in tmp_path.iterdir() if p.name.startswith('.tmp-ckpt-00000003')]
    assert len(tmp) == 1 and (tmp[0] / 'tensors.safetensors').stat().st_size > 4_000_000
    assert not (tmp[0] / 'manifest.json').exists()
    assert check_folder(tmp_path) == 2                     # the half-written step 3 is invisible
    recv, send = multiprocessing.Pipe(duplex=False)        # the next session resumes from 2 and cleans up
    nxt = multiprocessing.get_context('fork').Process(target=_forked_writer, args=(tmp_path, send), daemon=True)
    nxt.start(); send.close()
    assert recv.recv() == ('start', 2) and recv.recv() == ('saved', 3)
    os.kill(nxt.pid, signal.SIGKILL); nxt.join(); recv.close()
    assert not tmp[0].exists()
    assert check_folder(tmp_path) >= 3


def test_sigterm_stops_after_a_step_with_a_checkpoint(tmp_path):
    proc = spawn(TRAINER, tmp_path)
    wait_for(proc, 'ready')
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    reason, step = out.split()[-2:]
    assert reason == 'SIGTERM' and int(step) > 0
    ck = find_latest([tmp_path])
    assert ck.step == int(step) and ck.meta['reason'] == 'SIGTERM'
    check_state(ck)
