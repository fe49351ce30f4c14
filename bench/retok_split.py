"""Where does a `retok` student lose bits? Its held-out loss on the observed token, split into the group and the share inside it.

    python bench/retok_split.py                      # cpu-demo pair, Shakespeare, 100 steps, seed 0: LM only and KD alone
    python bench/retok_split.py --steps 300 --seed 1

For every held-out pair whose next student token `s*` ends on an aligned pair (`observed_next`), the student's
`-log q(s*)` is `-log q(G) - log q(s* | G)`, with `G` the re-tokenization group of `s*` (`retok_map`). Rows are
split into those with an own cell (`s*` shares its group with other student tokens) and groups of one. The same
split of the KD target (the teacher's cells, `cell_log_probs` with the observed token's cell) says what KD alone
asks the student for. Arms as in `bench/kd_vs_lm.py` (`lm`, `retok_kd_only`), same seed and batches.
"""
from __future__ import annotations
import argparse, sys, time
from pathlib import Path
import torch

sys.path.insert(0, str(Path(__file__).parent))
from kd_vs_lm import ARMS


def split_table(run, student, kd) -> dict:
    "Per row kind: count, mean nats of the student's token, group and within-group parts, and the KD target's."
    from kaggle_distill.trainer import teacher_at_pairs
    from kaggle_distill.retokenize import observed_next, cell_log_probs, group_log_probs
    acc = {k: torch.zeros(7, dtype=torch.float64) for k in ('own cell', 'group of one')}
    with torch.no_grad():
        for b in run.eval_batches:
            obs = observed_next(*(b[k] for k in ('s_ids', 't_ids', 'pair_b', 'pair_s', 'pair_t')))
            P = len(b['pair_b'])
            tl = teacher_at_pairs(run, {'t_ids': b['t_ids'], 't_mask': b['t_mask'], 'pair_b': torch.cat([b['pair_b'], obs.in_b]),
                                        'pair_t': torch.cat([b['pair_t'], obs.in_t])})[0]
            keep = kd.observed_keep(tl[:P], tl[P:], b['t_ids'], obs, 1.0)
            s_own, t_own = kd.own_cells(obs.s_next, obs.t_next)
            gt = cell_log_probs(tl[:P], kd.t_group, kd.n_groups, t_own, 1.0, keep)
            sl = student(input_ids=b['s_ids'], attention_mask=b['s_mask']).logits[b['pair_b'], b['pair_s']].float()
            sn = obs.s_next.clamp_min(0); g = kd.s_group[sn]
            tok = -torch.log_softmax(sl, -1).gather(-1, sn[:, None]).squeeze(-1)
            grp = -group_log_probs(sl, kd.s_group, kd.n_groups).gather(-1, g[:, None]).squeeze(-1)
            t_grp = -torch.logaddexp(gt.gather(-1, g[:, None]).squeeze(-1), torch.where(s_own >= 0, gt[:, -1], -torch.inf))
            t_tok = torch.where(s_own >= 0, -gt[:, -1], t_grp)
            for name, m in (('own cell', (obs.s_next >= 0) & (s_own >= 0)),
                            ('group of one', (obs.s_next >= 0) & (s_own < 0) & (kd.s_group_size[g] == 1))):
                acc[name] += torch.stack([m.sum(), tok[m].sum(), grp[m].sum(), (tok - grp)[m].sum(),
                                          t_tok[m].sum(), t_grp[m].sum(), (t_tok - t_grp)[m].sum()]).double()
    return {k: [float(v[0])] + (v[1:] / v[0].clamp_min(1)).tolist() for k, v in acc.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--steps', type=int, default=100); ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--arms', nargs='+', default=['lm', 'retok_kd_only'])
    ap.add_argument('--eval-blocks', type=int, default=64)
    args = ap.parse_args(argv)
    from kaggle_distill.config import load_config
    from kaggle_distill.trainer import build_run, make_optimizer, optimizer_step
    from kaggle_distill.retokenize import make_retok_kd
    torch.set_num_threads(1)
    print("| arm | rows | n | -log q(s*) | = group | + within | target: s* | group | within |")
    print("|---|---|---|---|---|---|---|---|---|")
    for arm in args.arms:
        cfg = load_config('cpu-demo', overrides=[f'train.seed={args.seed}', f'train.steps={args.steps}', 'train.device=cpu',
                                                 f'data.eval_max_blocks={args.eval_blocks}', *ARMS[arm]])
        run = build_run(cfg)
        opt, sched = make_optimizer(run.student, run.learnable(), cfg.train)
        scaler, stream, step, t0 = torch.amp.GradScaler('cpu', enabled=False), run.train_loader.forever(), 0, time.perf_counter()
        while step < args.steps:
            if not optimizer_step(run, opt, sched, scaler, [next(stream)], step).skipped: step += 1
        kd = run.kd if run.kd.method == 'retok' else make_retok_kd(cfg.loss, run.s_tok, run.t_tok)
        run.student.eval()
        for kind, (n, *v) in split_table(run, run.student, kd).items():
            print(f"| {arm} | {kind} | {n:.0f} | " + ' | '.join(f'{x:.3f}' for x in v) + ' |', flush=True)
        print(f"<!-- {arm}: trained {args.steps} steps in {time.perf_counter() - t0:.0f} s -->", flush=True)


if __name__ == '__main__':
    main()
