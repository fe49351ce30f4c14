"""Where X-Token's P-KL and the default (`retok`) differ, one component at a time, on the same student and batches.

    python bench/xtoken_why.py --corpus /tmp/bench28/pystdlib.jsonl --seeds 0 --arms xt_first_full --cache-dir /tmp/bench28/cache --out x.json
    python bench/kd_vs_lm.py --report bench/results/*.json x.json      # the per-seed and over-seeds tables include these arms

P-KL with the map of the first teacher token alone (`pieces=1`, no reverse pass) projects the student onto exactly
`retok`'s groups: `q[t]` is the student's mass on the student tokens whose teacher spelling starts with `t`, which is
`retok`'s group of head `t`. What remains different is the teacher's side: `retok` moves the mass of a teacher token
that heads no group to the group where the student's spelling of it begins (`redirected`); P-KL leaves it out (no
student token projects onto it, so its term is a constant and the teacher is in effect renormalised over the tokens
the student can reach). The arms (each `loss.kd_method=xtoken`, auxiliary terms off, like `kd_vs_lm.py`'s arms):

- `xt_first_full`: first-piece map, whole vocabulary: `retok`'s groups, the unreachable teacher mass left out;
- `xt_first`: the same on the batch's top 8192 teacher tokens (X-Token's support);
- `xt_noreverse`: X-Token's map (4 pieces, 0.9/0.09/...) without the reverse pass, top 8192;
- `xt_onepiece`: X-Token's map with one piece per spelling but the reverse pass, top 8192;
- `xtoken` / `xtoken_full` (in `kd_vs_lm.py`): X-Token's map, top 8192 / whole vocabulary.

Every arm is deterministic given its seed; results are in `kd_vs_lm.py`'s format (pair them with its LM-only and
`retok` runs of the same seed and corpus).
"""
from __future__ import annotations
import argparse, json, sys, time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kd_arms, kd_vs_lm

VARIANTS = {  # arm -> (build_xtoken_map keywords, loss.top_k)
    'xt_first_full': (dict(pieces=1, reverse=False), 0),
    'xt_first': (dict(pieces=1, reverse=False), 8192),
    'xt_noreverse': (dict(reverse=False), 8192),
    'xt_onepiece': (dict(pieces=1), 8192),
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split('\n', 1)[1])
    ap.add_argument('--corpus', default='shakespeare')
    ap.add_argument('--preset', default='cpu-demo')
    ap.add_argument('--steps', type=int, default=100)
    ap.add_argument('--seeds', type=int, nargs='+', default=[0])
    ap.add_argument('--arms', nargs='+', default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument('--eval-blocks', type=int, default=128)
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--cache-dir', default=None, help="the teacher's cached outputs (kd_vs_lm.py's --cache-dir)")
    ap.add_argument('--out', default=None, help='write the results (JSON) here, updated after every arm')
    args = ap.parse_args(argv)
    args.set, args.trl_path = [], None
    torch.set_num_threads(args.threads)
    import kaggle_distill.xtoken as xt
    cache, results = kd_vs_lm.TeacherCache(args.cache_dir), []
    cache.install()
    for seed in args.seeds:
        cache.train.clear(); cache.train_s.clear()
        for i, name in enumerate(args.arms):
            kw, top_k = VARIANTS[name]
            xt.xtoken_map = lambda s, t, kw=kw: xt.build_xtoken_map(s, t, **kw)      # make_xtoken_kd reads the map from here
            ov = ['loss.kd_method=xtoken', f'loss.top_k={top_k}', *kd_arms.AUX_OFF]
            r = kd_vs_lm.run_arm(name, ov, args, cache, seed, args.steps, want_before=i == 0)
            r['xtoken_map'] = kw
            results.append(r)
            print(f"seed {seed} {name}: {r['after']['student']['bpb']:.3f} bits/byte after {r['steps']} steps, {r['wall_s']:.0f} s", flush=True)
            if args.out: Path(args.out).write_text(json.dumps(results))
    return results


if __name__ == '__main__':
    main()
