"""`ensure_gpu_torch` really replaces torch: real pip, in a throwaway venv, against a local PEP 503 index of fake
wheels (no network). The venv starts with Kaggle's situation on a P100: a cu128 torch (and torchvision) whose
build has no sm_60 kernels. Afterwards it must hold the newest cu126 build below 2.15 and the torchvision
built for it, as a fresh interpreter sees them."""
import base64, hashlib, json, os, subprocess, sys, zipfile
from pathlib import Path

import pytest

from kaggle_distill.kaggle import ensure_gpu_torch, probe_torch

CU128_ARCHS = ['sm_70', 'sm_75', 'sm_80', 'sm_86', 'sm_90', 'sm_100', 'sm_120', 'compute_120']
CU126_ARCHS = ['sm_50', 'sm_60', 'sm_70', 'sm_75', 'sm_80', 'sm_86', 'sm_90']


def fake_wheel(folder: Path, name: str, version: str, files: dict, requires=()) -> Path:
    "A minimal valid wheel (METADATA, WHEEL, RECORD with hashes) holding `files`."
    dist = f'{name}-{version}.dist-info'
    meta = f'Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n' + ''.join(f'Requires-Dist: {r}\n' for r in requires)
    files = {**files, f'{dist}/METADATA': meta,
             f'{dist}/WHEEL': 'Wheel-Version: 1.0\nGenerator: fake\nRoot-Is-Purelib: true\nTag: py3-none-any\n'}
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b'=').decode()
        record.append(f'{path},sha256={digest},{len(text.encode())}')
    record.append(f'{dist}/RECORD,,')
    whl = folder / f'{name}-{version}-py3-none-any.whl'
    with zipfile.ZipFile(whl, 'w') as z:
        for path, text in files.items(): z.writestr(path, text)
        z.writestr(f'{dist}/RECORD', '\n'.join(record) + '\n')
    return whl


def fake_torch(folder: Path, version: str, archs: list) -> Path:
    "A `torch` whose `torch.cuda` reports one P100 (capability 6.0) and the build's arch list `archs`."
    cuda = ('def is_available(): return True\ndef device_count(): return 1\n'
            "def get_device_name(i=0): return 'Tesla P100-PCIE-16GB'\ndef get_device_capability(i=0): return (6, 0)\n"
            f'def get_arch_list(): return {archs!r}\n')
    return fake_wheel(folder, 'torch', version, {'torch/__init__.py': f'__version__ = {version!r}\nfrom . import cuda\n',
                                                 'torch/cuda/__init__.py': cuda})


def fake_torchvision(folder: Path, version: str, torch_version: str) -> Path:
    return fake_wheel(folder, 'torchvision', version, {'torchvision/__init__.py': f'__version__ = {version!r}\n'},
                      requires=[f'torch=={torch_version}'])


def pep503_index(root: Path, wheels: list) -> str:
    "A PEP 503 'simple' tree under `root` linking `wheels`; its file:// URL."
    by_project = {}
    for w in wheels: by_project.setdefault(w.name.split('-')[0].lower(), []).append(w)
    (root / 'simple').mkdir(parents=True)
    (root / 'simple' / 'index.html').write_text(''.join(f'<a href="{p}/">{p}</a>\n' for p in by_project))
    for project, ws in by_project.items():
        (root / 'simple' / project).mkdir()
        (root / 'simple' / project / 'index.html').write_text(''.join(f'<a href="{w.as_uri()}">{w.name}</a>\n' for w in ws))
    return (root / 'simple').as_uri()


@pytest.fixture(autouse=True)
def isolated_pip(monkeypatch):
    "pip sees only the indexes a test names: no config files (this machine's add extra indexes and find-links)."
    for k in [k for k in os.environ if k.startswith('PIP_')]: monkeypatch.delenv(k)
    monkeypatch.setenv('PIP_CONFIG_FILE', os.devnull); monkeypatch.setenv('PIP_DISABLE_PIP_VERSION_CHECK', '1')


@pytest.fixture(scope='module')
def venv_python(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp('venv')
    subprocess.run([sys.executable, '-m', 'venv', str(d)], check=True)
    return str(d / 'bin' / 'python')


def test_p100_torch_is_really_replaced(tmp_path, venv_python):
    kaggle_whl = tmp_path / 'kaggle-image'; kaggle_whl.mkdir()
    fake_torch(kaggle_whl, '2.9.0+cu128', CU128_ARCHS); fake_torchvision(kaggle_whl, '0.24.0+cu128', '2.9.0')
    subprocess.run([venv_python, '-m', 'pip', 'install', '--quiet', '--no-index', '--find-links', str(kaggle_whl),
                    'torch==2.9.0+cu128', 'torchvision==0.24.0+cu128'], check=True)
    before = probe_torch(venv_python)
    assert (before['torch'], before['capability'], before['companions']) == ('2.9.0+cu128', [6, 0], {'torchvision': '0.24.0+cu128'})

    files = tmp_path / 'files'; files.mkdir()
    wheels = [fake_torch(files, '2.13.0+cu126', CU126_ARCHS), fake_torch(files, '2.14.0+cu126', CU126_ARCHS),
              fake_torch(files, '2.15.0+cu128', CU128_ARCHS),                   # above the bound: must not be picked
              fake_torchvision(files, '0.28.0+cu126', '2.13.0'), fake_torchvision(files, '0.29.0+cu126', '2.14.0'),
              fake_torchvision(files, '0.30.0+cu128', '2.15.0')]
    index = pep503_index(tmp_path / 'index', wheels)

    info = ensure_gpu_torch(python=venv_python, index_url=index)
    assert info['torch'] == '2.14.0+cu126' and 'sm_60' in info['arch_list']
    assert info['companions'] == {'torchvision': '0.29.0+cu126'}
    after = probe_torch(venv_python)                                  # another fresh interpreter agrees
    assert after == info
    out = subprocess.run([venv_python, '-m', 'pip', 'list', '--format', 'json'], capture_output=True, text=True, check=True).stdout
    versions = {p['name']: p['version'] for p in json.loads(out)}
    assert versions['torch'] == '2.14.0+cu126' and versions['torchvision'] == '0.29.0+cu126'


def test_no_usable_build_on_the_index_raises(tmp_path, venv_python):
    kaggle_whl = tmp_path / 'kaggle-image'; kaggle_whl.mkdir()
    fake_torch(kaggle_whl, '2.9.0+cu128', CU128_ARCHS)
    subprocess.run([venv_python, '-m', 'pip', 'install', '--quiet', '--force-reinstall', '--no-index', '--find-links',
                    str(kaggle_whl), 'torch==2.9.0+cu128'], check=True)
    subprocess.run([venv_python, '-m', 'pip', 'uninstall', '--quiet', '--yes', 'torchvision'], check=False)
    files = tmp_path / 'files'; files.mkdir()
    index = pep503_index(tmp_path / 'index', [fake_torch(files, '2.10.0+cu126', CU128_ARCHS)])   # a build without sm_60
    with pytest.raises(RuntimeError, match='still lacks kernels'): ensure_gpu_torch(python=venv_python, index_url=index)
    assert probe_torch(venv_python)['torch'] == '2.10.0+cu126'       # pip did run: the build was replaced, and refused
