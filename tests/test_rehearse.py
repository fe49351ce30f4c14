"""bench/rehearse.py (the real job at its real shapes) on the CPU demo pair, and bench/gpu_check.sh where no GPU is: what can
be run here. The t4 rehearsal itself (about 10 minutes, 11 GB) is `python bench/rehearse.py --preset t4 --device cpu --micro 1
--steps 1`; its figures are in docs/real_shapes.md."""
import json, os, subprocess, sys, tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TQDM_DISABLE': '1', 'PYTHONPATH': str(REPO)}


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp('rehearse') / 'r.json'
    before = set(Path(tempfile.gettempdir()).glob('rehearse-*'))
    env = {k: v for k, v in ENV.items() if not k.startswith('MALLOC_')}
    from kaggle_distill.config import aux_weights                  # the hidden-state terms (off by default) on with their old schedules,
    aux = [f'loss.weights.{n}={{start: {w.start}, end: {w.end}, ramp_from: {w.ramp_from}, ramp_to: {w.ramp_to}, active_from: {w.active_from}}}'
           for n, w in aux_weights().items()]                      # so that terms entering late in the run are forced on
    r = subprocess.run([sys.executable, 'bench/rehearse.py', '--preset', 'cpu-demo', '--steps', '2', '--max-docs', '40',
                        '--json', str(out), *aux], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads(out.read_text()), r.stdout, before


def test_every_phase_runs_and_is_timed(demo):
    res, text, _ = demo
    assert res['ok'] is True
    assert list(res['phases']) == ['build', 'step 1 (at step 0)', 'step 2 (at step 99)', 'save', 'resume', 'evaluate']
    for p in res['phases'].values(): assert p['s'] > 0 and p['peak_gb'] > 0
    for k in ('ok', 'step_s', 'peak_memory_gb', 'tokens_per_s', 'predicted_t4_peak_gb'): assert k in res
    assert res['peak_memory_gb'] == max(p['peak_gb'] for p in res['phases'].values())
    assert res['tokens_per_s'] == pytest.approx(sum(s['tokens'] for s in res['steps']) / sum(s['s'] for s in res['steps']), rel=1e-3)


def test_every_term_the_preset_turns_on_runs_once(demo):
    res, _, _ = demo
    first, last = res['steps']
    assert first['terms'] == ['lm', 'kd'] and first['at'] == 0
    assert set(last['terms']) == {'lm', 'kd', 'feature', 'attention', 'contrastive'} and last['at'] == 99
    assert all(last['loss'][t] is not None and last['loss'][t] >= 0 for t in last['terms'])
    assert first['loss']['feature'] is None                                           # off at the first step: not computed


def test_the_memory_model_is_checked_against_the_measurement(demo):
    res, text, _ = demo
    assert res['predicted_here_gb'] == pytest.approx(res['baseline_gb'] + res['memory_model_here']['moments'][res['memory_model_here']['phase']] / 1e9, abs=2e-3)
    assert res['memory_model_error'] == pytest.approx((res['predicted_here_gb'] - res['peak_memory_gb']) / res['peak_memory_gb'], abs=2e-3)
    assert 'error' in text and 'predicted T4 peak' in text
    ph = res['memory_model_by_phase']
    assert list(ph) == ['steps', 'resume', 'evaluate', 'whole run'] and ph['whole run']['measured_gb'] == res['peak_memory_gb']
    for v in ph.values(): assert v['error'] == pytest.approx((v['predicted_gb'] - v['measured_gb']) / v['measured_gb'], abs=2e-3)
    modes = res['predicted_t4_peak_gb_by_mode']                  # teach once, then train from the cache: modelled, both under online
    assert list(modes) == ['online', 'teach', 'cache'] and modes['online'] == res['predicted_t4_peak_gb']
    assert 0 < modes['teach'] < modes['online'] and 0 < modes['cache'] < modes['online'] and 'teach' in text


def test_it_sets_the_allocator_and_cleans_up(demo):
    res, _, before = demo
    assert res['allocator'] == {'MALLOC_MMAP_THRESHOLD_': '131072', 'MALLOC_ARENA_MAX': '2'}   # set by the script itself
    assert set(Path(tempfile.gettempdir()).glob('rehearse-*')) <= before                       # its run folder is gone
    assert res['teacher_precision']['precision'] == 'as loaded'


def test_bad_input_is_refused_before_anything_loads():
    r = subprocess.run([sys.executable, 'bench/rehearse.py', '--preset', 't5'], cwd=REPO, env=ENV, capture_output=True, text=True)
    assert r.returncode != 0 and "unknown preset 't5'" in r.stderr
    r = subprocess.run([sys.executable, 'bench/rehearse.py', '--device', 'cuda'], cwd=REPO, env=ENV, capture_output=True, text=True)
    assert r.returncode == 2 and 'no CUDA GPU is visible' in r.stderr


def test_gpu_check_stops_at_once_without_a_gpu(tmp_path):
    out = tmp_path / 'g.json'
    r = subprocess.run(['bash', 'bench/gpu_check.sh', str(out)], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and 'no CUDA GPU is visible to torch' in r.stderr and 'Nothing was run' in r.stderr
    assert not out.exists()


def test_gpu_check_plans_its_three_parts_within_eight_minutes():
    r = subprocess.run(['bash', 'bench/gpu_check.sh'], cwd=REPO, env={**ENV, 'GPU_CHECK_DRY_RUN': '1'}, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    parts = [l for l in r.stdout.splitlines() if ' (limit ' in l]
    assert [l.split(' ')[0] for l in parts] == ['notebooks', 'rehearsal', 'step_overhead']
    assert sum(int(l.split('(limit ')[1].split(' ')[0]) for l in parts) <= 450                 # + start-up: under 8 minutes
    assert '--memory-cap-gb 15' in r.stdout and '--device cuda' in r.stdout and 'HF_HUB' not in r.stdout
    cuda_nbs = r.stdout.split('notebooks with cuda cells: ')[1].strip().split('|')
    assert set(cuda_nbs) == {p.name for p in (REPO / 'nbs').glob('*.ipynb') if '#| cuda' in p.read_text()}
    for script in ('bench/rehearse.py', 'bench/step_overhead.py'):                            # the flags it passes exist
        h = subprocess.run([sys.executable, script, '--help'], cwd=REPO, env=ENV, capture_output=True, text=True).stdout
        assert '--device' in h and '--json' in h
