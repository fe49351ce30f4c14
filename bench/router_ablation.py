"""Does the student-aware router pay? The same student, from the same seed, on the same batches, three ways:

    no_feature   no hidden-state feature loss at all (LM + KD only)
    fixed_map    the feature loss on the fixed student -> teacher layer map (`loss.weights.feature`)
    router       the student-aware router's routed feature loss and its balance term
                 (`loss.weights.routed_feature`, `loss.weights.route_balance`; `kaggle_distill.router`)

    python bench/router_ablation.py                                   # both pairs, 30 steps, seed 0 (about 10 min on 2 CPU cores)
    python bench/router_ablation.py --pairs cpu-demo --steps 100 --seeds 0 1 2
    python bench/router_ablation.py --report a.json b.json            # the table of saved results

Pairs: `cpu-demo` (the real SmolLM2-135M teacher, a dense Llama: the router weighs teacher layers around the mapped
one) and `tiny-moe` (the random tiny Qwen3-MoE test teacher with 3 experts on the Qwen tokenizer: the router also
weighs the experts' outputs). The student is the cpu-demo student in both. Attention and contrastive terms are off in
every arm so that only the feature term differs; the fixed-map and routed feature losses get the same weight schedule.

Per pair, arm and seed: held-out bits/byte after training with a 95 % bootstrap interval over held-out blocks, the
paired difference to `no_feature` on the same blocks (`kaggle_distill.evaluate.bpb_interval` with a baseline), and
for the router its balance loss (0: sources used evenly, 1: collapsed onto one) and sharpness (0: every position
spreads evenly, an unused router) on the held-out batches. Equal steps in every arm.
"""
from __future__ import annotations
import argparse, json, sys, time
from pathlib import Path

import torch

COMMON = ['loss.weights.attention=0', 'loss.weights.contrastive=0']
PAIRS = {  # name -> overrides on top of the preset
    'cpu-demo': [],
    'tiny-moe': ['teacher.name=qwen3_moe', 'teacher.tokenizer=qwen', 'teacher.scratch={}'],
}


def feature_schedule(weight: float) -> str:
    "The feature weight schedule of both feature arms: on from 10 % of the run, 0.1 ramping to `weight` by 30 %."
    return f'{{start: {min(0.1, weight)}, end: {weight}, ramp_from: 0.1, ramp_to: 0.3, active_from: 0.1}}'


def arms(feature_weight: float, balance_weight: float) -> dict[str, list[str]]:
    "Arm name -> overrides."
    f = feature_schedule(feature_weight)
    return {'no_feature': ['loss.weights.feature=0'],
            'fixed_map': [f'loss.weights.feature={f}'],
            'router': ['loss.weights.feature=0', f'loss.weights.routed_feature={f}',
                       f'loss.weights.route_balance={{start: {balance_weight}, end: {balance_weight}, active_from: 0.1}}']}


def run_arm(pair: str, arm: str, overrides: list[str], args, seed: int, want_before: bool) -> dict:
    "Train one arm for `args.steps` optimizer steps from `seed`; evaluate after (and before, for the first arm)."
    from kaggle_distill.config import load_config
    from kaggle_distill.trainer import build_run, evaluate_run, make_optimizer, optimizer_step
    ov = [f'train.seed={seed}', f'train.steps={args.steps}', f'data.source={args.corpus}', f'data.eval_max_blocks={args.eval_blocks}',
          'train.device=cpu', f'run_dir={args.run_root}/{pair}',   # only its data cache is written there: shared by the arms
          *COMMON, *PAIRS[pair], *args.set, *overrides]
    cfg = load_config(args.preset, overrides=ov)
    run = build_run(cfg)
    before = evaluate_run(run, 0) if want_before else None
    opt, sched = make_optimizer(run.student, run.learnable(), cfg.train)
    scaler = torch.amp.GradScaler('cpu', enabled=False)
    stream = run.train_loader.forever()
    t0, step, skipped, last = time.perf_counter(), 0, 0, None
    while step < args.steps:
        r = optimizer_step(run, opt, sched, scaler, [next(stream) for _ in range(cfg.train.grad_accum)], step)
        if r.skipped:
            skipped += 1
            if skipped > 10: raise RuntimeError(f'{pair}/{arm}: more than 10 non-finite steps ({r.skipped})')
            continue
        step += 1; last = r.loss
    wall = time.perf_counter() - t0
    after = evaluate_run(run, args.steps)
    strip = lambda ev: None if ev is None else {'teacher': {k: ev['teacher'][k] for k in ('bpb', 'bpb_ci')},
                                                'student': {k: ev['student'].get(k) for k in ('bpb', 'bpb_ci', 'top1', 'routing')},
                                                'blocks': ev['blocks']}
    return dict(pair=pair, arm=arm, seed=seed, steps=args.steps, overrides=overrides, wall_s=wall, skipped=skipped,
                last_loss=last, before=strip(before), after=strip(after))


def rows(results: list[dict]) -> list[dict]:
    "One row per result, with the paired difference to `no_feature` of the same pair and seed."
    from kaggle_distill.evaluate import bpb_interval
    out = []
    for r in results:
        base = next((x for x in results if x['pair'] == r['pair'] and x['seed'] == r['seed'] and x['arm'] == 'no_feature'), None)
        before = next((x['before'] for x in results if x['pair'] == r['pair'] and x['seed'] == r['seed'] and x['before']), None)
        a, blk = r['after']['student'], r['after']['blocks']
        row = dict(pair=r['pair'], arm=r['arm'], seed=r['seed'], steps=r['steps'], after=a['bpb'], after_ci=a['bpb_ci'],
                   before=before['student']['bpb'] if before else None, teacher=r['after']['teacher']['bpb'], wall_s=r['wall_s'],
                   routing=a.get('routing'))
        if base is not None and base is not r and base['after']['blocks']['bytes'] == blk['bytes']:
            row['vs'] = a['bpb'] - base['after']['student']['bpb']
            row['vs_ci'] = list(bpb_interval(blk['s_nll'], blk['bytes'], baseline=base['after']['blocks']['s_nll']))
        out.append(row)
    return out


def print_table(results: list[dict], file=sys.stdout):
    p = lambda *a: print(*a, file=file)
    ci = lambda c: f'[{c[0]:.3f}, {c[1]:.3f}]' if c else ''
    p('\nHeld-out bits/byte after training (95 % bootstrap interval over blocks); vs no feature: paired difference on the same '
      'blocks; router: balance loss (1 = collapsed) and sharpness (0 = unused) on the held-out batches')
    p('| pair | arm | seed | steps | before | after | vs no feature | router balance | sharpness | teacher | train s |')
    p('|---|---|---|---|---|---|---|---|---|---|---|')
    for r in rows(results):
        vs = f"{r['vs']:+.3f} {ci(r['vs_ci'])}" if 'vs' in r else '—'
        bal = f"{r['routing']['balance']:.3f}" if r['routing'] else '—'
        sh = f"{r['routing']['sharpness']:.3f}" if r['routing'] else '—'
        before = f"{r['before']:.3f}" if r['before'] is not None else '—'
        p(f"| {r['pair']} | {r['arm']} | {r['seed']} | {r['steps']} | {before} | {r['after']:.3f} {ci(r['after_ci'])} | {vs} | "
          f"{bal} | {sh} | {r['teacher']:.3f} | {r['wall_s']:.0f} |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split('\n', 1)[1])
    ap.add_argument('--preset', default='cpu-demo', help='the preset every arm starts from (default cpu-demo)')
    ap.add_argument('--pairs', nargs='+', default=list(PAIRS), choices=list(PAIRS), help='teacher/student pairs (default: both)')
    ap.add_argument('--corpus', default='shakespeare', help='data.source: an asset corpus key or a local file/folder (default shakespeare)')
    ap.add_argument('--steps', type=int, default=30, help='optimizer steps per arm (default 30)')
    ap.add_argument('--seeds', type=int, nargs='+', default=[0], help='seeds (default 0)')
    ap.add_argument('--arms', nargs='+', default=['no_feature', 'fixed_map', 'router'], choices=['no_feature', 'fixed_map', 'router'],
                    help='arms to run (default all three)')
    ap.add_argument('--feature-weight', type=float, default=0.3, help='final weight of the fixed-map and routed feature losses (default 0.3)')
    ap.add_argument('--balance-weight', type=float, default=0.1, help='weight of the router balance term (default 0.1)')
    ap.add_argument('--eval-blocks', type=int, default=16, help='held-out blocks evaluated (default 16)')
    ap.add_argument('--set', nargs='*', default=[], help='overrides for every arm, e.g. loss.router_window=2')
    ap.add_argument('--threads', type=int, default=1, help='torch threads (default 1)')
    ap.add_argument('--run-root', default='runs/router-ablation', help='folder for the packed-data cache of each pair (default runs/router-ablation)')
    ap.add_argument('--out', default=None, help='write all results (JSON) here, updated after every arm')
    ap.add_argument('--report', nargs='+', default=None, help='only print the table of these saved result files')
    args = ap.parse_args(argv)
    if args.report:
        results = [r for f in args.report for r in json.loads(Path(f).read_text())]
        print_table(results); return results
    torch.set_num_threads(args.threads)
    table, results, t_all = arms(args.feature_weight, args.balance_weight), [], time.perf_counter()
    for pair in args.pairs:
        for seed in args.seeds:
            for i, arm in enumerate(args.arms):
                r = run_arm(pair, arm, table[arm], args, seed, want_before=i == 0)
                results.append(r)
                rt = r['after']['student']['routing']
                print(f"{pair} seed {seed} {arm}: {r['after']['student']['bpb']:.3f} bits/byte after {r['steps']} steps, "
                      f"{r['wall_s']:.0f} s" + (f", balance {rt['balance']:.3f}, sharpness {rt['sharpness']:.3f}" if rt else ''), flush=True)
                if args.out: Path(args.out).write_text(json.dumps(results))
    print_table(results)
    print(f"\nbench wall time: {time.perf_counter() - t_all:.0f} s")
    return results


if __name__ == '__main__':
    main()
