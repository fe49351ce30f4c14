"""KL at step 0 of the logit projector for each init ('normal', 'shared_pinv', 'lstsq'), with a real student head.

    python bench/projector_init.py                          # SmolLM2-135M student head, surrogate Qwen-vocabulary teacher
    python bench/projector_init.py --teacher smollm2-135m   # sanity check: teacher = student, the map is the identity
    python bench/projector_init.py --teacher huihui-ai/Huihui-MoE-1.2B-A0.6B --student HuggingFaceTB/SmolLM-135M  # Kaggle

The student side is always a real model: its output head and its tokenizer. The teacher is either a real
model (its last hidden states on the text, its output head and tokenizer) or, offline, a surrogate with
Qwen's vocabulary and hidden size 1024: its hidden states are the student's last hidden states under a
random isometry R (d_s -> 1024), its head rows for the shared tokens are R applied to the student's rows
plus Gaussian noise of `noise` times their size. 'lstsq' is fitted on calibration text; every init is
scored on other text: KL(teacher || projected) on the shared tokens, both renormalised, mean over
positions, T = 1, through kaggle_distill.divergence.divergence (what training calls).
"""
from __future__ import annotations
import argparse, json, math, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def last_states(model, tok, texts, n: int, per_text: int = 256):
    "The model's last hidden states (the lm_head input) on the first `per_text` tokens of each text, `n` rows."
    import torch
    rows = []
    for text in texts:
        ids = tok(text, return_tensors='pt').input_ids[:, :per_text].to(model.device)
        with torch.no_grad(): rows.append(model(ids, output_hidden_states=True).hidden_states[-1][0].float().cpu())
        if sum(len(r) for r in rows) >= n: break
    H = torch.cat(rows)[:n]
    if len(H) < n: raise RuntimeError(f'only {len(H)} positions from the given texts, {n} wanted')
    return H


def measure(H_cal, H_eval, E_s, E_t, s_idx, t_idx, Z_cal=None, Z_eval=None) -> dict:
    "Step-0 KL of each init; Z_* default to H_* @ E_tᵀ (the teacher's own logits)."
    import torch
    from kaggle_distill.projector import INITS, Projector, init_projector, shared_kl
    Z_cal = H_cal @ E_t.T if Z_cal is None else Z_cal
    Z_eval = H_eval @ E_t.T if Z_eval is None else Z_eval
    lp = torch.log_softmax(Z_eval[:, t_idx].double(), -1)
    row = {'teacher_entropy': round(-(lp.exp() * lp).sum(-1).mean().item(), 3), 'log_n': round(math.log(len(s_idx)), 3)}
    for strategy in INITS:
        torch.manual_seed(0)
        p = init_projector(Projector(E_t.shape[1], E_s.shape[1]), strategy, s_head=E_s, t_head=E_t, s_idx=s_idx, t_idx=t_idx,
                           t_hidden=H_cal, t_logits=Z_cal)
        row[strategy] = round(shared_kl(p, H_eval, E_s, Z_eval, s_idx, t_idx), 3) + 0.0  # + 0.0: no '-0.0'
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="The defaults reproduce the README's row 'projector KL at step 0 on shared tokens' (real SmolLM2-135M head,\n"
               "surrogate Qwen-vocabulary teacher, head noise 0.25: normal(0.01) 8.63, shared_pinv 0.35, lstsq 0.34 nats),\n"
               "offline, on CPU; the other noise levels are the curve of nbs/10_projector.")
    ap.add_argument('--student', default='smollm2-135m', help='student model (asset key, folder or hub id)')
    ap.add_argument('--student-tokenizer', default='', help="student tokenizer; '' = 'smollm' for smollm2-135m, else the model's")
    ap.add_argument('--teacher', default='surrogate', help="'surrogate', or a teacher model (asset key, folder or hub id)")
    ap.add_argument('--teacher-tokenizer', default='', help="teacher tokenizer; '' = 'qwen' for the surrogate, else the model's")
    ap.add_argument('--noise', type=float, nargs='+', default=[0.0, 0.25, 0.5, 1.0], help='surrogate head noise, relative to the rows')
    ap.add_argument('--corpus', default='shakespeare', help='asset corpus key of the text (calibration: documents 0-39, evaluation: 800-839)')
    ap.add_argument('--calib', type=int, default=1024, help='calibration positions for lstsq')
    ap.add_argument('--eval', type=int, default=512, help='positions the KL is measured on')
    ap.add_argument('--device', default='cpu', help="'cpu' or 'cuda'")
    ap.add_argument('--json', action='store_true', help='print only the JSON result')
    a = ap.parse_args(argv)

    import torch
    from kaggle_distill.assets import load_model, load_tokenizer, corpus_documents
    from kaggle_distill.projector import shared_token_pairs
    torch.manual_seed(0)
    t0 = time.perf_counter()
    docs = corpus_documents(a.corpus)
    cal_texts, eval_texts = docs[:40], docs[800:840]          # different plays
    s_tok = load_tokenizer(a.student_tokenizer or ('smollm' if a.student == 'smollm2-135m' else a.student))
    student = load_model(a.student).to(a.device).eval()
    E_s = student.get_output_embeddings().weight.detach().float().cpu()
    rows = []
    if a.teacher == 'surrogate':
        t_tok = load_tokenizer(a.teacher_tokenizer or 'qwen')
        s_idx, t_idx = shared_token_pairs(s_tok, t_tok)
        Hs_cal, Hs_eval = last_states(student, s_tok, cal_texts, a.calib), last_states(student, s_tok, eval_texts, a.eval)
        d_s, d_t = E_s.shape[1], 1024
        g = torch.Generator().manual_seed(0)
        R = torch.linalg.qr(torch.randn(d_t, d_s, generator=g))[0]             # isometry d_s -> d_t
        for noise in a.noise:
            E_t = torch.randn(len(t_tok), d_t, generator=g) * 0.02              # non-shared rows do not enter the measure
            rel = E_s[s_idx] @ R.T
            E_t[t_idx] = rel + noise * rel.norm(dim=1, keepdim=True) / d_t**0.5 * torch.randn(rel.shape, generator=g)
            rows.append({'teacher': f'surrogate, head noise {noise:g}', 'noise': noise,
                         **measure(Hs_cal @ R.T, Hs_eval @ R.T, E_s, E_t, s_idx, t_idx)})
    else:
        t_tok = load_tokenizer(a.teacher_tokenizer or ('smollm' if a.teacher == 'smollm2-135m' else a.teacher))
        s_idx, t_idx = shared_token_pairs(s_tok, t_tok)
        teacher = load_model(a.teacher).to(a.device).eval()
        E_t = teacher.get_output_embeddings().weight.detach().float().cpu()
        Ht_cal, Ht_eval = last_states(teacher, t_tok, cal_texts, a.calib), last_states(teacher, t_tok, eval_texts, a.eval)
        rows.append({'teacher': a.teacher, 'noise': None, **measure(Ht_cal, Ht_eval, E_s, E_t, s_idx, t_idx)})
    out = {'student': a.student, 'shared_tokens': len(s_idx), 'calib': a.calib, 'eval': a.eval,
           'seconds': round(time.perf_counter() - t0, 1), 'rows': rows}
    if a.json: print(json.dumps(out)); return
    print(f"student {a.student}: {len(s_idx)} shared tokens; lstsq fitted on {a.calib} positions, KL on {a.eval} others (nats, T=1)")
    print(f"{'teacher':<34} {'H(teacher)':>10} {'log n':>7} {'normal':>8} {'shared_pinv':>12} {'lstsq':>8}")
    for r in rows:
        print(f"{r['teacher']:<34} {r['teacher_entropy']:>10} {r['log_n']:>7} {r['normal']:>8} {r['shared_pinv']:>12} {r['lstsq']:>8}")


if __name__ == '__main__':
    main()
