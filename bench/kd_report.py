"""The tables of `bench/kd_vs_lm.py --report`: per seed, over seeds, teach once / train many, equal wall time, and
against other trainers (the peers, `docs/bench_peers.md`).

Reads the saved result files of `bench/kd_vs_lm.py` (one dict per arm, seed and step count) and prints Markdown tables;
runs no model. Every interval is a 95 % bootstrap over held-out blocks (`kaggle_distill.evaluate.bpb_interval`), paired
where two runs are compared on the same blocks.
"""
from __future__ import annotations
import math, sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kd_arms import ARMS, DEFAULT_ARM, TARGET_SEEDS, PEER_TARGETS


def bpb_of(ev, who='student'): return ev[who]['bpb']


def corpus_of(r: dict) -> str:
    """The corpus a result was trained and evaluated on: an asset key, or a file's name without folder and suffix (the
    same corpus made in another folder is the same corpus); files written before this field existed ran on Shakespeare."""
    c = r.get('corpus', 'shakespeare')
    return Path(c).stem if Path(c).suffix else c


def dedup(results: list[dict]) -> list[dict]:
    "One result per (corpus, arm, seed, steps), the first: several saved files may each hold the LM-only run of a seed."
    seen, out = set(), []
    for r in results:
        if (k := (corpus_of(r), r['arm'], r['seed'], r['steps'])) not in seen: seen.add(k); out.append(r)
    return out


def seed_rows(results: list[dict]) -> list[dict]:
    "Per (seed, arm): the numbers of the table, with the paired difference to the LM-only arm of that seed."
    from kaggle_distill.evaluate import bpb_interval
    out = []
    for seed in sorted({r['seed'] for r in results}):
        rs = [r for r in results if r['seed'] == seed]
        lm = {r['steps']: r for r in reversed(rs) if r['arm'] == 'lm'}
        before = next(r['before'] for r in rs if r['before'] is not None)
        teacher = before['teacher']['bpb']
        for r in rs:
            a, blk = r['after'], r['after']['blocks']
            row = dict(seed=seed, arm=r['arm'], steps=r['steps'], before=bpb_of(before), before_ci=before['student']['bpb_ci'],
                       after=bpb_of(a), after_ci=a['student']['bpb_ci'], teacher=teacher,
                       gap_closed=(bpb_of(before) - bpb_of(a)) / (bpb_of(before) - teacher),
                       wall_s=r['wall_s'], tok_per_s=r['tok_per_s'], kd_shared=a['student']['kd_shared'],
                       top1_conf=a['student']['top1_confident'], top1=a['student']['top1'])
            base = lm.get(r['steps'])                       # the LM-only run of the same seed and steps
            if base is not None and r is not base and base['after']['blocks']['bytes'] == blk['bytes']:
                row['vs_lm'] = bpb_of(a) - bpb_of(base['after'])
                row['vs_lm_ci'] = list(bpb_interval(blk['s_nll'], blk['bytes'], baseline=base['after']['blocks']['s_nll']))
            out.append(row)
    return out


def pooled(results: list[dict]) -> dict:
    """Per (arm, steps) over seeds: mean after, mean difference to the LM-only run of the same seed and steps, and the
    interval of the per-block differences pooled over seeds."""
    from kaggle_distill.evaluate import bpb_interval
    out = {}
    for arm, steps in dict.fromkeys((r['arm'], r['steps']) for r in results):
        d_nll, d_bytes, diffs, afters, walls = [], [], [], [], []
        for r in (r for r in results if r['arm'] == arm and r['steps'] == steps):
            afters.append(bpb_of(r['after'])); walls.append(r['wall_s'])
            lm = next((x for x in results if x['arm'] == 'lm' and x['seed'] == r['seed'] and x['steps'] == steps), None)
            if lm is None or arm == 'lm' or lm['after']['blocks']['bytes'] != r['after']['blocks']['bytes']: continue
            d_nll += list(np.subtract(r['after']['blocks']['s_nll'], lm['after']['blocks']['s_nll'])); d_bytes += r['after']['blocks']['bytes']
            diffs.append(bpb_of(r['after']) - bpb_of(lm['after']))
        row = dict(seeds=len(afters), after=float(np.mean(afters)), after_sd=float(np.std(afters, ddof=1)) if len(afters) > 1 else None,
                   wall_s=float(np.mean(walls)))
        if diffs:
            row.update(vs_lm=float(np.mean(diffs)), vs_lm_ci=list(bpb_interval(d_nll, d_bytes)), wins=sum(d < 0 for d in diffs),
                       vs_lm_seeds=diffs)
        out[arm, steps] = row
    return out


def equal_wall_rows(results: list[dict]) -> list[dict]:
    """Per LM-only run timed on an arm (`wall_of`: that arm's name and steps): the arm's run of the same seed against
    it, paired per block."""
    from kaggle_distill.evaluate import bpb_interval
    out = []
    for w in (r for r in results if 'wall_of' in r):
        ref_arm, ref_steps = w['wall_of']['arm'], w['wall_of']['steps']
        ref = next((r for r in results if (r['arm'], r['seed'], r['steps']) == (ref_arm, w['seed'], ref_steps)), None)
        if ref is None or ref['after']['blocks']['bytes'] != w['after']['blocks']['bytes']: continue
        out.append(dict(seed=w['seed'], arm=ref_arm, steps=ref['steps'], after=bpb_of(ref['after']), wall_s=ref['wall_s'],
                        lm_steps=w['steps'], lm_after=bpb_of(w['after']), lm_wall_s=w['wall_s'],
                        diff=bpb_of(ref['after']) - bpb_of(w['after']),
                        diff_ci=list(bpb_interval(ref['after']['blocks']['s_nll'], ref['after']['blocks']['bytes'],
                                                  baseline=w['after']['blocks']['s_nll']))))
    return out


def numerals_slice(results: list[dict], corpus: str) -> list[int]:
    """The numerals slice of a corpus's held-out blocks (indices): the eighth of the blocks with the highest share of
    digit characters in their text (digits / bytes; ties by block order), blocks without a digit left out. Read from
    any result of the corpus that recorded `eval_digits` (every run of a corpus evaluates the same blocks)."""
    ref = next((r for r in results if corpus_of(r) == corpus and 'eval_digits' in r), None)
    if ref is None: return []
    d, b = ref['eval_digits'], ref['after']['blocks']['bytes']
    top = sorted(range(len(d)), key=lambda i: (-d[i] / b[i], i))[:max(1, len(d) // 8)]
    return sorted(i for i in top if d[i] > 0)


def _paired(a: dict, b: dict, idx: list[int] | None) -> tuple[list, list, list]:
    "Per-block NLL of result `a`, of result `b` and the bytes, on blocks `idx` (None: all)."
    pick = (lambda xs: [xs[i] for i in idx]) if idx is not None else list
    return pick(a['after']['blocks']['s_nll']), pick(b['after']['blocks']['s_nll']), pick(a['after']['blocks']['bytes'])


def _bpb(nll, n_bytes) -> float: return math.fsum(nll) / (math.log(2) * sum(n_bytes))


def peer_rows(results: list[dict]) -> list[dict]:
    """Per (corpus, blocks: all or the numerals slice, peer arm, steps): the default arm (`DEFAULT_ARM`) against the peer,
    seed for seed on the same blocks (default − peer: negative = the default is better, each seed's interval over
    blocks), their mean, the interval of the per-block differences pooled over seeds, both against LM only, and
    whether the issue's target (`PEER_TARGETS`: the default ahead by at least that much on every seed, every interval
    excluding 0) is met. A row for the default itself carries its own difference to LM only."""
    from kaggle_distill.evaluate import bpb_interval
    out = []
    for corpus in dict.fromkeys(map(corpus_of, results)):
        rs = [r for r in results if corpus_of(r) == corpus]
        sl = numerals_slice(rs, corpus)
        n = len(rs[0]['after']['blocks']['bytes'])
        for blocks, idx in (('all', None), ('numerals', sl)):
            if blocks == 'numerals' and not sl: continue
            for arm, steps in dict.fromkeys((r['arm'], r['steps']) for r in rs if r['arm'] in PEER_TARGETS or r['arm'] == DEFAULT_ARM):
                seeds, afters, vs_lm, d_all, b_all, l_all, lb_all = [], [], [], [], [], [], []
                for r in sorted((r for r in rs if (r['arm'], r['steps']) == (arm, steps)), key=lambda r: r['seed']):   # seed order
                    find = lambda a: next((x for x in rs if (x['arm'], x['seed'], x['steps']) == (a, r['seed'], steps)
                                           and x['after']['blocks']['bytes'] == r['after']['blocks']['bytes']), None)
                    lm, dflt = find('lm'), find(DEFAULT_ARM)
                    if lm is None or dflt is None: continue
                    p_nll, lm_nll, nb = _paired(r, lm, idx)
                    d_nll = _paired(dflt, r, idx)[0]
                    afters.append(_bpb(p_nll, nb)); vs_lm.append(_bpb(p_nll, nb) - _bpb(lm_nll, nb))
                    l_all += list(np.subtract(p_nll, lm_nll)); lb_all += nb
                    if arm != DEFAULT_ARM:
                        seeds.append(dict(seed=r['seed'], diff=_bpb(d_nll, nb) - _bpb(p_nll, nb),
                                          ci=list(bpb_interval(d_nll, nb, baseline=p_nll))))
                        d_all += list(np.subtract(d_nll, p_nll)); b_all += nb
                if not afters: continue
                row = dict(corpus=corpus, blocks=blocks, n_blocks=n if idx is None else len(idx), arm=arm, steps=steps, seeds=len(afters),
                           after=float(np.mean(afters)), vs_lm=float(np.mean(vs_lm)), vs_lm_ci=list(bpb_interval(l_all, lb_all)))
                if seeds:
                    target = PEER_TARGETS[arm]
                    row.update(per_seed=seeds, diff=float(np.mean([x['diff'] for x in seeds])), diff_ci=list(bpb_interval(d_all, b_all)),
                               target=target, met=all(x['diff'] <= -target and x['ci'][1] < 0 for x in seeds))
                out.append(row)
    return out


def print_peers(results: list[dict], file=sys.stdout):
    "The 'Against other trainers' table (`peer_rows`), and a line per corpus on its numerals slice."
    rows = peer_rows(results)
    if not any('per_seed' in r for r in rows): return
    p = lambda *a: print(*a, file=file)
    p(f"\nAgainst other trainers (default = the `{DEFAULT_ARM}` arm, LM + {DEFAULT_ARM} KD with the auxiliary terms off; "
      "default − peer in bits/byte on the same blocks, negative: the default is better; per seed (in seed order) with its "
      "interval over blocks; pooled: mean over seeds, interval of the per-block differences pooled over seeds; target: the default ahead "
      "by at least this on every seed, every interval excluding 0)")
    p("| corpus | blocks | arm | steps | seeds | after | vs LM only | default − arm, per seed | pooled | target | met |")
    p("|---|---|---|---|---|---|---|---|---|---|---|")
    order = lambda r: (r['corpus'], r['blocks'] != 'all', r['steps'], r['arm'] != DEFAULT_ARM, arm_order(r['arm'], r['steps']))
    for r in sorted(rows, key=order):
        per = ' / '.join(f"{x['diff']:+.3f} {fmt_ci(x['ci'])}" for x in r.get('per_seed', [])) or '—'
        pooled_ = f"{r['diff']:+.3f} {fmt_ci(r['diff_ci'])}" if 'diff' in r else '—'
        tgt, met = (f"≤ −{r['target']:.2f}", 'yes' if r['met'] else 'no') if 'target' in r else ('', '')
        if met and r['seeds'] < TARGET_SEEDS: met += f" ({r['seeds']} of {TARGET_SEEDS} seeds)"      # not yet the issue's claim
        name = f"{r['arm']} (default)" if r['arm'] == DEFAULT_ARM else r['arm']
        p(f"| {r['corpus']} | {r['blocks']} ({r['n_blocks']}) | {name} | {r['steps']} | {r['seeds']} | {r['after']:.3f} | "
          f"{r['vs_lm']:+.3f} {fmt_ci(r['vs_lm_ci'])} | {per} | {pooled_} | {tgt} | {met} |")
    for corpus in dict.fromkeys(map(corpus_of, results)):
        sl = numerals_slice(results, corpus)
        ref = next((r for r in results if corpus_of(r) == corpus and 'eval_digits' in r), None)
        if ref is None: continue
        n = len(ref['eval_digits'])
        if not sl: p(f"- {corpus}: no held-out block has a digit: no numerals slice"); continue
        share = [ref['eval_digits'][i] / ref['after']['blocks']['bytes'][i] for i in sl]
        p(f"- {corpus}: numerals slice = the {len(sl)} of {n} held-out blocks with the highest share of digit characters "
          f"({min(share):.1%} to {max(share):.1%} of their bytes; all {n} blocks: "
          f"{sum(ref['eval_digits']) / sum(ref['after']['blocks']['bytes']):.1%})")


def lm_curve(results: list[dict], seed: int) -> list[tuple[int, float, float]]:
    "The LM-only runs of a seed as (steps, held-out bits/byte, CPU seconds per step), by steps."
    runs = {}
    for r in results:
        if r['seed'] == seed and (r['arm'] == 'lm' or r['arm'].startswith('lm@wall(')):
            runs.setdefault(r['steps'], (bpb_of(r['after']), r.get('cpu_s', r['wall_s']) / r['steps']))
    return sorted((n, b, c) for n, (b, c) in runs.items())


def lm_steps_to_reach(curve, target: float) -> float | None:
    "Steps LM only needs to reach `target` bits/byte: linear in log(steps) between the two runs around it; None outside the runs."
    for (n0, b0, _), (n1, b1, _) in zip(curve, curve[1:]):
        if b1 <= target <= b0:
            if b0 == b1: return float(n0)
            f = (b0 - target) / (b0 - b1)
            return math.exp(math.log(n0) + f * (math.log(n1) - math.log(n0)))
    return None


def reuse_rows(results: list[dict]) -> list[dict]:
    """Per cache run: what its teach pass cost (CPU seconds of the training shards), its own training cost, and the
    break-even number of reuses R*: with the teach pass shared by R runs, KD from the cache costs teach/R + train; LM only
    given as much CPU reaches the cache run's bits/byte at `lm_steps_to_reach` steps, so R* = teach / (LM's cost - train)."""
    out = []
    for r in results:
        if not r['arm'].startswith('cache') or r.get('teach_cpu_s') is None: continue
        curve = lm_curve(results, r['seed'])
        if not curve: continue
        per_step = float(np.median([c for _, _, c in curve]))
        train = r.get('cpu_s', r['wall_s'])
        n_star = lm_steps_to_reach(curve, bpb_of(r['after']))
        lm_cost = None if n_star is None else n_star * per_step
        r_star = None if lm_cost is None else (r['teach_cpu_s'] / (lm_cost - train) if lm_cost > train else math.inf)
        out.append(dict(seed=r['seed'], arm=r['arm'], steps=r['steps'], after=bpb_of(r['after']), teach_cpu_s=r['teach_cpu_s'],
                        train_cpu_s=train, lm_step_cpu_s=per_step, lm_steps_needed=n_star, r_star=r_star,
                        lm_range=(curve[0][0], curve[-1][0]), bytes_per_position=r.get('bytes_per_position')))
    return out


def fmt_ci(ci): return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ''


def arm_order(arm: str, steps: int) -> tuple:
    "Tables list results by steps, then in the order ARMS names the arms (LM only first)."
    return steps, list(ARMS).index(arm) if arm in ARMS else len(ARMS)


def print_tables(results: list[dict], file=sys.stdout):
    rows = sorted(seed_rows(results), key=lambda r: (r['seed'], *arm_order(r['arm'], r['steps'])))
    p = lambda *a: print(*a, file=file)
    p("\nPer seed (held-out bits/byte, 95 % bootstrap intervals over blocks; vs LM: paired difference on the same blocks)")
    p(f"| seed | arm | steps | before | after | vs LM only | gap closed | kd_shared | top1@conf | wall s | tok/s |")
    p("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        vs = f"{r['vs_lm']:+.3f} {fmt_ci(r['vs_lm_ci'])}" if 'vs_lm' in r else '—'
        p(f"| {r['seed']} | {r['arm']} | {r['steps']} | {r['before']:.3f} | {r['after']:.3f} {fmt_ci(r['after_ci'])} | {vs} | "
          f"{r['gap_closed']:.1%} | {r['kd_shared']:.3f} | {r['top1_conf'] if r['top1_conf'] is None else format(r['top1_conf'], '.3f')} | "
          f"{r['wall_s']:.0f} | {r['tok_per_s']:.0f} |")
    teacher = rows[0]['teacher'] if rows else float('nan')
    p(f"\nOver seeds (teacher {teacher:.3f} bits/byte; vs LM: mean over seeds, interval of per-block differences pooled over seeds)")
    p("| arm | steps | seeds | after (mean ± sd) | vs LM only | seeds won | wall s |")
    p("|---|---|---|---|---|---|---|")
    for (arm, steps), r in sorted(pooled(results).items(), key=lambda kv: arm_order(*kv[0])):
        if arm.startswith('lm@wall('): continue
        sd = f" ± {r['after_sd']:.3f}" if r['after_sd'] is not None else ''
        vs = f"{r['vs_lm']:+.3f} {fmt_ci(r['vs_lm_ci'])}" if 'vs_lm' in r else '—'
        won = f"{r['wins']}/{len(r['vs_lm_seeds'])}" if 'vs_lm' in r else '—'
        p(f"| {arm} | {steps} | {r['seeds']} | {r['after']:.3f}{sd} | {vs} | {won} | {r['wall_s']:.0f} |")
    if rr := reuse_rows(results):
        p("\nTeach once, train many (CPU seconds; R*: how many runs must share one teach pass before KD from the cache beats LM only "
          "at equal CPU time; LM only's steps to reach the cache run's bits/byte interpolated in log(steps) between its runs)")
        p("| seed | arm | steps | after | bytes/position | teach s | train s | LM s/step | LM steps to match | R* |")
        p("|---|---|---|---|---|---|---|---|---|---|")
        for r in rr:
            need = f"{r['lm_steps_needed']:.0f}" if r['lm_steps_needed'] else f"outside {r['lm_range'][0]}-{r['lm_range'][1]}"
            rs = '—' if r['r_star'] is None else ('never' if math.isinf(r['r_star']) else f"{r['r_star']:.1f}")
            p(f"| {r['seed']} | {r['arm']} | {r['steps']} | {r['after']:.3f} | {r['bytes_per_position']} | {r['teach_cpu_s']:.0f} | "
              f"{r['train_cpu_s']:.0f} | {r['lm_step_cpu_s']:.2f} | {need} | {rs} |")
    if ew := equal_wall_rows(results):
        p("\nEqual wall time (LM only trained for as long as the arm, teacher time included; arm − LM paired on the same blocks)")
        p("| seed | arm | steps | after | wall s | LM only steps | LM only after | LM wall s | arm − LM only |")
        p("|---|---|---|---|---|---|---|---|---|")
        for r in ew:
            p(f"| {r['seed']} | {r['arm']} | {r['steps']} | {r['after']:.3f} | {r['wall_s']:.0f} | {r['lm_steps']} | "
              f"{r['lm_after']:.3f} | {r['lm_wall_s']:.0f} | {r['diff']:+.3f} {fmt_ci(r['diff_ci'])} |")
