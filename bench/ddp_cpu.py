"""One process against two (`torchrun --nproc_per_node=2`, gloo on CPU) at the same global batch: final loss, largest
weight difference, wall time.

    python bench/ddp_cpu.py                        # the README's figures: tiny random models on real tokenizers, 30 steps
    python bench/ddp_cpu.py --steps 100 --out runs/ddp-bench

Both runs train the same config (`train.batch_size=2 train.grad_accum=4`: each of the two processes takes 2 of the 4
micro-batches of a step) from the same seed on the same data, one after the other; wall time is the whole command
(start-up, data packing, evaluations included), so on a loaded machine it says little.
"""
from __future__ import annotations
import argparse, json, os, shutil, subprocess, sys, time
from pathlib import Path

TINY = '{num_hidden_layers: 2, hidden_size: %d, intermediate_size: %d, num_attention_heads: 2, num_key_value_heads: 1}'


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split('\n', 2)[2])
    p.add_argument('--steps', type=int, default=30, help='optimizer steps (default 30)')
    p.add_argument('--out', type=Path, default=Path('runs/ddp-bench'), help='folder for the two runs (replaced)')
    return p.parse_args(argv)


def overrides(run_dir: Path, data: Path, steps: int) -> list[str]:
    return [f'run_dir={run_dir}', 'teacher.name=llama', 'teacher.tokenizer=gpt2', f'teacher.scratch={TINY % (64, 128)}',
            'student.name=llama', 'student.tokenizer=smollm', f'student.scratch={TINY % (32, 64)}', f'data.source={data}',
            'data.max_length=48', 'data.eval_fraction=0.2', 'data.eval_max_blocks=2', f'train.steps={steps}',
            'train.batch_size=2', 'train.grad_accum=4', 'train.log_every=1', f'train.eval_every={steps}',
            f'train.checkpoint_every={steps}', 'train.device=cpu']


def run(nproc: int, run_dir: Path, data: Path, steps: int) -> float:
    "Train in `nproc` processes; the wall seconds of the whole command."
    launch = [] if nproc == 1 else ['-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}']
    cmd = [sys.executable, *launch, '-m', 'kaggle_distill.cli', 'train', *overrides(run_dir, data, steps)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, 'TQDM_DISABLE': '1'}, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(argv=None):
    import torch
    from kaggle_distill.assets import corpus_documents
    from kaggle_distill.checkpoint import find_latest
    a = parse_args(argv)
    shutil.rmtree(a.out, ignore_errors=True); a.out.mkdir(parents=True)
    data = a.out / 'text.jsonl'
    data.write_text(''.join(json.dumps({'text': d}) + '\n' for d in corpus_documents('shakespeare')[:24]))
    wall = {n: run(n, a.out / f'n{n}', data, a.steps) for n in (1, 2)}
    ck = {n: find_latest(a.out / f'n{n}' / 'checkpoints') for n in (1, 2)}
    keys = [k for k in ck[1].tensors if k.startswith('student')]
    diff = max((ck[1].tensors[k].float() - ck[2].tensors[k].float()).abs().max().item() for k in keys)
    losses = {n: [r['loss']['total'] for r in map(json.loads, (a.out / f'n{n}' / 'metrics.jsonl').read_text().splitlines())
                  if r['kind'] == 'train'] for n in (1, 2)}
    curve = max(abs(x - y) for x, y in zip(losses[1], losses[2]))
    train_s = {n: json.loads((a.out / f'n{n}' / 'summary.json').read_text())['time_s']['training'] for n in (1, 2)}
    print(f'{a.steps} steps, global batch 8 x 48 tokens | final loss 1 process {losses[1][-1]:.6f}, 2 processes {losses[2][-1]:.6f} | '
          f'largest loss difference over the curve {curve:.2e} | largest student weight difference {diff:.2e} | '
          f'wall {wall[1]:.0f} s vs {wall[2]:.0f} s (training {train_s[1]:.0f} s vs {train_s[2]:.0f} s) | '
          f'loader {ck[1].state()["loader"]} vs {ck[2].state()["loader"]}')


if __name__ == '__main__':
    main()
