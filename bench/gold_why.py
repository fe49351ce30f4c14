"""Why TRL's GOLD arm (ULD, its defaults: no cross-entropy term) ends worse than the untrained student: seconds, no model.

    python bench/gold_why.py --trl-path /tmp/trl_site          # TRL 1.16 installed apart, as for kd_vs_lm.py's gold arms

TRL's own `ULDLoss` (built from the `GOLDConfig` fields the `gold`, `gold_hybrid` and `gold_ce` arms use; the
cpu-demo pair's tokenizers, GPT-2 student and SmolLM teacher) on free student logits, one row per position, trained
by Adam against fixed teacher distributions that put most of their mass on one token the two vocabularies share (the
same string). Two measurements:

1. Shuffle the student's vocabulary (a random permutation of the logits' last axis): the ULD loss does not change,
   to float rounding. A loss that cannot tell one student token from another cannot teach which token comes next.
   Hybrid ULD (its matched part compares tokens that are the same string) and a cross-entropy term do change.
2. 100 Adam steps on each loss: the loss falls for all, but under ULD alone the student's probability of the
   teacher's top token stays at chance (its top-1 agreement with the teacher stays at 0) while its distribution takes
   the teacher's shape on other tokens; hybrid ULD and ULD + cross-entropy move the mass onto the right token.

That is the `gold` arm's run in `bench/results/peers_s0.json`: its loss fell from 1.84 to 0.50 over the 100 steps
while the held-out top-1 went to 0.000 and bits/byte from 4.755 (untrained) to 5.395.
"""
from __future__ import annotations
import argparse, sys
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

LOSSES = {  # name -> the GOLDConfig fields of kd_vs_lm.py's arm of the same name that ULDLoss reads (the rest: GOLD's defaults)
    'gold': dict(),
    'gold_hybrid': dict(uld_use_hybrid_loss=True),
    'gold_ce': dict(uld_crossentropy_weight=1.0),
}


def uld_loss(trl_path, fields: dict, s_tok, t_tok):
    "TRL's `ULDLoss` with GOLD's defaults plus `fields`; positional alignment (`use_extended_uld=False`): same lengths here."
    if trl_path and trl_path not in sys.path: sys.path.insert(0, trl_path)
    from trl.experimental.gold.gold_trainer import ULDLoss
    cfg = SimpleNamespace(uld_crossentropy_weight=0.0, uld_distillation_weight=1.0, uld_student_temperature=1.0,
                          uld_teacher_temperature=1.0, uld_skip_student_eos=False, uld_skip_teacher_eos=False,
                          use_extended_uld=False, uld_token_merge_strategy='observed', uld_use_hybrid_loss=False,
                          uld_hybrid_matched_weight=None, uld_hybrid_unmatched_weight=None, beta=0.5)
    for k, v in fields.items(): setattr(cfg, k, v)
    return ULDLoss(cfg, student_tokenizer=s_tok, teacher_tokenizer=t_tok)


def setup(s_tok, t_tok, n: int = 32, seed: int = 0):
    """Teacher logits at `n` positions, each peaked (about 60 % of the mass) on a token both vocabularies spell alike;
    the student ids of those tokens; the student's starting logits (small noise)."""
    g = torch.Generator().manual_seed(seed)
    sv, tv = s_tok.get_vocab(), t_tok.get_vocab()
    shared = sorted(set(sv) & set(tv))
    pick = [shared[i] for i in torch.randperm(len(shared), generator=g)[:n].tolist()]
    t_top = torch.tensor([tv[w] for w in pick]); s_top = torch.tensor([sv[w] for w in pick])
    t_logits = torch.randn(1, n, len(t_tok), generator=g)
    t_logits[0, torch.arange(n), t_top] += 13.0
    s_logits = 0.01 * torch.randn(1, n, len(s_tok), generator=g)
    return t_logits, s_logits, s_top


def call(loss_fn, s_logits, t_logits, s_top):
    "The loss of `s_logits` (labels: the student's ids of the teacher's top tokens, shifted as ULDLoss's CE expects)."
    labels = torch.cat([torch.tensor([[-100]]), s_top[None, :-1]], 1)       # CE: logits at i predict labels[i + 1]
    t_labels = labels.clone()                                                # ULD: both answers from position 1 on
    ids = torch.zeros_like(labels)
    return loss_fn(s_logits, t_logits, labels, t_labels, ids, ids)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--trl-path', default=None, help='folder of a separate TRL install (pip install --target)')
    ap.add_argument('--steps', type=int, default=100)
    args = ap.parse_args(argv)
    from kaggle_distill.assets import load_tokenizer
    s_tok, t_tok = load_tokenizer('gpt2'), load_tokenizer('smollm')
    t_logits, s0, s_top = setup(s_tok, t_tok)
    perm = torch.randperm(s0.size(-1), generator=torch.Generator().manual_seed(1))
    print("| loss | loss, student as is | loss, student vocabulary shuffled | after Adam: loss | p(teacher's top token) | top-1 = teacher's |")
    print("|---|---|---|---|---|---|")
    out = {}
    for name, fields in LOSSES.items():
        fn = uld_loss(args.trl_path, fields, s_tok, t_tok)
        s = torch.randn(s0.shape, generator=torch.Generator().manual_seed(2))      # a spread-out student, to shuffle
        a, b = float(call(fn, s, t_logits, s_top)), float(call(fn, s[..., perm], t_logits, s_top))
        z = s0.clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=0.1)
        for _ in range(args.steps):
            opt.zero_grad(); loss = call(fn, z, t_logits, s_top); loss.backward(); opt.step()
        p, mid = z.detach().softmax(-1)[0], torch.arange(1, len(s_top) - 1)   # positions both CE and ULD see
        p_top = float(p[mid, s_top[mid]].mean())
        agree = float((p[mid].argmax(-1) == s_top[mid]).float().mean())
        out[name] = dict(as_is=a, shuffled=b, final=float(loss), p_top=p_top, top1=agree)
        print(f"| {name} | {a:.6f} | {b:.6f} | {float(loss):.4f} | {p_top:.4f} | {agree:.2f} |")
    print(f"(chance: p = 1/{s0.size(-1)} = {1 / s0.size(-1):.1e}; {len(s_top)} positions, teacher's top token at about "
          f"{float(t_logits.softmax(-1).max(-1).values.mean()):.2f} of its mass)")
    return out


if __name__ == '__main__':
    main()
