"""Package metadata comes from settings.ini (the nbdev 2 convention)."""
from configparser import ConfigParser
from pathlib import Path

import setuptools

cfg = ConfigParser(delimiters=['='])
cfg.read('settings.ini', encoding='utf-8')
cfg = cfg['DEFAULT']

setuptools.setup(
    name=cfg['lib_name'],
    version=cfg['version'],
    description=cfg['description'],
    long_description=Path('README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    author=cfg['author'],
    author_email=cfg['author_email'],
    license='Apache-2.0',
    python_requires='>=' + cfg['min_python'],
    packages=setuptools.find_packages(include=['kaggle_distill', 'kaggle_distill.*']),
    include_package_data=True,
    package_data={'kaggle_distill': ['reference/*.json']},   # the reference pair's configurations (kaggle_distill.models)
    install_requires=cfg['requirements'].split(),
    extras_require={'dev': cfg['dev_requirements'].split(),
                    'eval': cfg.get('eval_requirements', '').split()},   # kaggle-distill benchmark: lm-evaluation-harness
    entry_points={
        'console_scripts': cfg['console_scripts'].split(),
        'nbdev': [f"{cfg['lib_name']}={cfg['lib_name']}._modidx:d"],
    },
    zip_safe=False,
)
