"""A code corpus that needs no download: Python's own standard library source, one document per module file.

    python bench/code_corpus.py /tmp/bench/pystdlib.jsonl          # ~5 M characters (default)
    python bench/kd_vs_lm.py --corpus /tmp/bench/pystdlib.jsonl --arms lm default

The files are taken in sorted path order from the running interpreter's stdlib folder, skipping tests, idlelib,
site-packages and vendored packages, until `--max-chars` characters are collected, so the same Python version gives
the same corpus. Each file is one document, so the library's held-out split (by document hash) keeps whole modules
out of training.
"""
from __future__ import annotations
import argparse, json, sysconfig
from pathlib import Path

SKIP = ('test', 'tests', 'idlelib', 'site-packages', 'dist-packages', 'lib2to3', 'turtledemo', '_vendor', 'ensurepip')


def stdlib_files(root: Path) -> list[Path]:
    "The stdlib's .py files under `root`, sorted, without tests, vendored code or installed packages."
    return sorted(f for f in root.rglob('*.py') if not set(f.relative_to(root).parts[:-1]) & set(SKIP))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('out', help='the .jsonl file to write (refused if it exists)')
    p.add_argument('--max-chars', type=int, default=5_000_000, help='stop once this many characters are collected')
    a = p.parse_args(argv)
    out = Path(a.out)
    if out.exists(): p.error(f'{out} exists; remove it or choose another path')
    root = Path(sysconfig.get_paths()['stdlib'])
    n_chars = n_docs = 0
    with out.open('w', encoding='utf-8') as fh:
        for f in stdlib_files(root):
            try: text = f.read_text(encoding='utf-8')
            except UnicodeDecodeError: continue
            if not text.strip(): continue
            fh.write(json.dumps({'text': text}) + '\n')
            n_chars += len(text); n_docs += 1
            if n_chars >= a.max_chars: break
    print(f'{out}: {n_docs} modules, {n_chars:,} characters of {root}')


if __name__ == '__main__': main()
