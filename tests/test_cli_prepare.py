"""`kaggle-distill kaggle prepare`: a wheel whose version names the commit, and dataset/kernel folders that the real
`kaggle` client (2.2.5) accepts. The client validates metadata before any network call; only its network client
builder is stubbed, so a call that gets that far has passed every client-side check."""
import json, os, re, subprocess, sys, zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
kaggle_api = pytest.importorskip('kaggle.api.kaggle_api_extended', reason='the kaggle client is a dev dependency')


class ReachedNetwork(Exception):
    "Raised where the client would open its connection: every client-side check passed."


class OfflineClient:
    "Stands in for the client `build_kaggle_client` returns: the first use of any of its API clients raises."
    def __enter__(self): return self
    def __exit__(self, *exc): return False
    def __getattr__(self, name): raise ReachedNetwork(name)


def offline_api(user='someone'):
    api = kaggle_api.KaggleApi()
    api.config_values = {'username': user}
    api.build_kaggle_client = lambda *a, **kw: OfflineClient()
    return api


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp('prepare') / 'up'
    env = {**os.environ, 'PYTHONPATH': str(REPO)}
    r = subprocess.run([sys.executable, '-m', 'kaggle_distill.cli', 'kaggle', 'prepare', '--user', 'someone', '--out', str(out)],
                       capture_output=True, text=True, env=env, cwd=REPO)
    assert r.returncode == 0, r.stderr
    print(r.stdout)
    return out, r.stdout


def test_wheel_version_names_the_commit(prepared):
    out, text = prepared
    sha = subprocess.run(['git', '-C', str(REPO), 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()
    [wheel] = (out / 'dataset').glob('kaggle_distill-*.whl')
    version = wheel.name.split('-')[1]
    assert re.fullmatch(rf'0\.1\.0\+g{sha}(\.dirty)?', version), version
    with zipfile.ZipFile(wheel) as z:
        assert f'__version__ = "{version}"' in z.read('kaggle_distill/__init__.py').decode()
        assert f'Version: {version}' in z.read(f'kaggle_distill-{version}.dist-info/METADATA').decode()
        assert 'kaggle_distill/kaggle.py' in z.namelist()
        for role in ('teacher', 'student'):                                           # the reference pair's files ship (package data)
            ref = json.loads(z.read(f'kaggle_distill/reference/{role}.json'))
            assert ref['config']['model_type'] in ('qwen3_moe', 'llama') and ref['sources']
    assert 'version = 0.1.0\n' in (REPO / 'settings.ini').read_text()          # the checkout is untouched
    for cmd in (f'kaggle datasets create -p {out / "dataset"}', f'kaggle datasets version -p {out / "dataset"}',
                f'kaggle kernels push -p {out / "kernel"}', 'kaggle kernels output someone/kaggle-distill'):
        assert cmd in text, cmd
    assert re.search(r't4: .* \d+ session\(s\)', text) and 'estimate' in text
    assert text.index('  t4x2: ') < text.index('  t4: ') < text.index('  p100: ')           # two T4s first
    assert 'of the fp16 peak' in text.split('  t4x2: ')[1].splitlines()[0]                 # no session measured yet: the model


def test_metadata_names_the_wheel_dataset_and_the_kernels_own_output(prepared):
    out, _ = prepared
    d = json.loads((out / 'dataset' / 'dataset-metadata.json').read_text())
    k = json.loads((out / 'kernel' / 'kernel-metadata.json').read_text())
    assert d['id'] == 'someone/kaggle-distill-wheel'
    assert k['dataset_sources'] == [d['id']] and k['kernel_sources'] == [k['id']] == ['someone/kaggle-distill']
    assert k['machine_shape'] == 'NvidiaTeslaT4' and k['enable_gpu'] is True          # two T4s, stated (the client: "GPU T4 x2")
    nb = json.loads((out / 'kernel' / k['code_file']).read_text())
    assert nb == json.loads((REPO / 'kaggle_kernels' / 'distill.ipynb').read_text())   # no --preset: the kernel as shipped


def test_the_real_kaggle_client_accepts_the_folders(prepared, capsys):
    out, _ = prepared
    api = offline_api()
    with pytest.raises(ReachedNetwork): api.kernels_push(str(out / 'kernel'))
    assert 'retired' not in capsys.readouterr().err
    with pytest.raises(ReachedNetwork): api.dataset_create_new(str(out / 'dataset'))
    with pytest.raises(ReachedNetwork): api.dataset_create_version(str(out / 'dataset'), 'code update')


def test_the_real_kaggle_client_on_the_retired_shape_and_bad_metadata(prepared, tmp_path, capsys):
    out, _ = prepared
    def push(**change):
        folder = tmp_path / 'k'; folder.mkdir(exist_ok=True)
        meta = {**json.loads((out / 'kernel' / 'kernel-metadata.json').read_text()), **change}
        (folder / 'kernel-metadata.json').write_text(json.dumps(meta))
        (folder / meta['code_file']).write_text((out / 'kernel' / 'distill.ipynb').read_text())
        offline_api().kernels_push(str(folder))
    with pytest.raises(ReachedNetwork): push(machine_shape='NvidiaTeslaP100')      # accepted, with a warning
    assert "'NvidiaTeslaP100' is retired" in capsys.readouterr().err
    with pytest.raises(ValueError, match='dataset'): push(dataset_sources=['kaggle-distill-wheel'])     # no owner
    with pytest.raises(ValueError, match='[Kk]ernel'): push(kernel_sources=['someone/kaggle-distill/extra/x'])
    with pytest.raises(ValueError, match='five characters'): push(title='kd')
    with pytest.raises(ValueError, match='language'): push(language='julia')


def test_prepare_with_a_preset_pins_it_in_an_injected_parameters_cell(tmp_path):
    from kaggle_distill.kaggle_prepare import prepare_kaggle
    text = prepare_kaggle('someone', tmp_path / 'up', preset='p100', repo=REPO)
    nb = json.loads((tmp_path / 'up' / 'kernel' / 'distill.ipynb').read_text())
    [cell] = [c for c in nb['cells'] if 'injected-parameters' in c['metadata'].get('tags', [])]
    assert "preset = 'p100'" in cell['source'] and 'p100: ' in text
    with pytest.raises(Exception, match='unknown preset'): prepare_kaggle('someone', tmp_path / 'x', preset='p1OO', repo=REPO)
    with pytest.raises(Exception, match='not a Kaggle user name'): prepare_kaggle('some one', tmp_path / 'y', repo=REPO)


def test_prepare_reads_a_measured_throughput_from_its_output_folder(tmp_path):
    "A second prepare leaves the fetched output (--out/output) as it is and uses the tokens/s a session measured there (main's folder rules hold)."
    from kaggle_distill.kaggle_prepare import prepare_kaggle
    out = tmp_path / 'up'
    prepare_kaggle('someone', out, repo=REPO)
    run = out / 'output' / 'run'; run.mkdir(parents=True)                  # what `kaggle kernels output ... -p up/output` fetched
    hw = {'processes': 2, 'device_type': 'cuda', 'device_names': ['Tesla T4', 'Tesla T4'], 'teacher_dtype': 'float16',
          'student_dtype': 'float32', 'autocast': 'float16', 'tokens_per_s': 6543.0, 'peak_memory_gb': 8.7}
    cfg = {'teacher': {'name': 'huihui-ai/Huihui-MoE-1.2B-A0.6B'}, 'student': {'name': 'HuggingFaceTB/SmolLM-135M'}, 'data': {'max_length': 384}}
    (run / 'summary.json').write_text(json.dumps({'status': 'paused', 'config': cfg, 'hardware': hw}))
    text = prepare_kaggle('someone', out, repo=REPO)
    assert json.loads((run / 'summary.json').read_text())['hardware'] == hw                 # never touched
    assert len(list((out / 'dataset').glob('kaggle_distill-*.whl'))) == 1                  # the kernel installs exactly one
    line = text.split('  t4x2: ')[1].splitlines()[0]
    assert '6,543 tokens/s' in line and f"measured by the session in {run / 'summary.json'} on 2 x Tesla T4" in line, line
    assert 'of the fp16 peak' in text.split('  t4: ')[1].splitlines()[0]                   # one T4: not measured, modelled
