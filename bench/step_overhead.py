"""What a training step of this package costs next to a bare step and a bare step plus a naive KL.

    python bench/step_overhead.py                        # cpu-demo and p100-like shapes, CPU, 1 thread
    python bench/step_overhead.py --shapes demo --repeats 9
    python bench/step_overhead.py --shapes lengths        # step time at length 256 and 512 (SDPA path)
    python bench/step_overhead.py --shapes kd             # KD alone at 384 x 151,936: chunked, one chunk, naive
    python bench/step_overhead.py --device cuda           # also prints achieved FLOP/s as a share of the fp16 peak
    python bench/step_overhead.py --shapes retok --before 2970f71   # the retok KD term alone, this tree against a commit's
    python bench/step_overhead.py --shapes cache          # a step trained from the teacher cache vs LM only vs online KD

Arms, run interleaved (round-robin, the order rotated every repeat) on the same batches:
- `project`: `kaggle_distill.trainer.optimizer_step` with the LM and KD terms (auxiliary terms off, `shared_vocab`).
- `bare`: teacher forward (no grad, full logits) + student forward/backward + cross entropy + AdamW.
- `bare+naive_kl`: `bare` plus a plain autograd KL, T^2 * KL(softmax(t/T) || softmax(s/T)), on the aligned positions
  and shared columns (gathered row-wise, then column-wise), added to the loss.
Each arm is timed by CPU time of the process (`time.process_time`) and wall time; the script prints medians, the
spread (min-max over repeats) and the ratios of the medians. Shapes: `demo` is the cpu-demo preset (SmolLM2-135M
teacher, tiny Llama student, 4 x 96 tokens); `p100` is the P100 preset's shapes (4 x 384 tokens, the real Qwen
151,936-row teacher vocabulary and SmolLM 49,152-row student vocabulary) on tiny models of the real architectures,
so that the vocabulary-sized work dominates as it does on the GPU.

`retok`: the default KD term alone (`RetokKD`, forward + backward) at the t4/p100 shapes: 1,344 aligned pairs (87.5 % of
4 x 384 student tokens, the Qwen-vs-SmolLM share of `bench/aligned_share.py`), float32 teacher rows of 151,669 ids
(as `teacher_at_pairs` returns them), student rows of 49,152 with a gradient, the real SmolLM -> Qwen re-tokenization
map; plain groups (the presets, LM on) and with the observed token's cell (KD alone). Arms: this tree's `RetokKD` and
`--before REV`'s (its `kaggle_distill/retokenize.py`, read with `git show`, run against this tree's other modules),
interleaved. It also counts the bytes each arm moves over the teacher's and the student's vocabulary-wide rows per
aligned pair: every operator (views aside) reads its inputs and writes its output once; a gather and an in-place
scatter touch only their indexed elements. A count of traffic, not of what the caches absorb.
"""
from __future__ import annotations
import argparse, json, math, statistics, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch
import torch.nn.functional as F

AUX_OFF = ['loss.weights.feature=0', 'loss.weights.attention=0', 'loss.weights.contrastive=0', 'loss.weights.router=0']
SHAPES = {
    'demo': [],
    'p100': ['teacher.name=qwen3_moe', 'teacher.tokenizer=qwen', 'student.name=llama', 'student.tokenizer=smollm',
             'student.scratch={}', 'data.max_length=384', 'train.batch_size=4', 'data.max_docs=60'],
}
PEAK_FP16_TFLOPS = {'T4': 65, 'P100': 18.7, 'V100': 125, 'A100': 312, 'L4': 121, 'A10': 125, 'H100': 989, 'H200': 989}


def build(shape: str, device: str, extra=(), kd_method='shared_vocab'):
    "A `Run` of the cpu-demo preset with `shape`'s overrides, KD + LM only, its optimizer and a few batches."
    from kaggle_distill.config import load_config
    from kaggle_distill.trainer import build_run, make_optimizer
    tmp = Path(tempfile.gettempdir()) / f'step_overhead_{shape}_{"_".join(extra).replace("=", "-").replace(".", "-")}'  # data cache reused
    cfg = load_config('cpu-demo', overrides=[f'run_dir={tmp}', f'train.device={device}', f'loss.kd_method={kd_method}',
                                             'loss.weights.kd=0.5', *AUX_OFF, *SHAPES[shape], *extra])
    run = build_run(cfg)
    opt, sched = make_optimizer(run.student, run.learnable(), cfg.train)
    scaler = torch.amp.GradScaler(run.device.type, enabled=run.autocast == torch.float16)
    it = iter(run.train_loader)
    batches = [next(it) for _ in range(3)]
    return run, opt, sched, scaler, batches


def project_step(run, opt, sched, scaler, batch):
    from kaggle_distill.trainer import optimizer_step
    r = optimizer_step(run, opt, sched, scaler, [batch], run.total // 2)
    assert r.skipped is None, r.skipped


def bare_step(run, opt, batch, naive_kl: bool):
    "Teacher forward (full logits) + student forward/backward + CE (+ a naive KL) + AdamW, nothing else."
    dev, T = run.device, 2.0
    b = {k: v.to(dev) for k, v in batch.items()}
    with torch.no_grad(): t_logits = run.teacher(input_ids=b['t_ids'], attention_mask=b['t_mask']).logits
    out = run.student(input_ids=b['s_ids'], attention_mask=b['s_mask'])
    ids, mask = b['s_ids'], b['s_mask']
    loss = F.cross_entropy(out.logits[:, :-1].float().flatten(0, 1), ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100).flatten())
    if naive_kl:
        s_idx, t_idx = getattr(run.kd, 's_idx', None), getattr(run.kd, 't_idx', None)
        s = out.logits[b['pair_b'], b['pair_s']].float()
        t = t_logits[b['pair_b'], b['pair_t']].float()
        if s_idx is not None: s, t = s[:, s_idx], t[:, t_idx]
        kl = F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), log_target=True, reduction='batchmean') * T * T
        loss = loss + 0.5 * kl
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize(dev)


def timed(fn, dev) -> tuple[float, float]:
    sync(dev); c0, w0 = time.process_time(), time.perf_counter()
    fn(); sync(dev)
    return time.process_time() - c0, time.perf_counter() - w0


def interleave(arms: dict, dev, repeats: int, warmup: int = 1) -> dict:
    "Run every arm `warmup` + `repeats` times round-robin (order rotated per repeat); CPU and wall seconds per arm."
    names = list(arms)
    for _ in range(warmup):
        for n in names: arms[n]()
    out = {n: {'cpu': [], 'wall': []} for n in names}
    for r in range(repeats):
        for n in names[r % len(names):] + names[:r % len(names)]:
            c, w = timed(arms[n], dev)
            out[n]['cpu'].append(c); out[n]['wall'].append(w)
    return out


def summary(times: dict) -> dict:
    return {n: {k: {'median': statistics.median(v), 'min': min(v), 'max': max(v)} for k, v in d.items()} for n, d in times.items()}


def ratios(s: dict, pairs: dict) -> dict:
    "Ratios of medians, CPU time and wall, for `pairs` = {label: (numerator arm(s), denominator arm(s))}."
    med = lambda arms, k: sum(s[a][k]['median'] if a[0] != '-' else -s[a[1:]][k]['median'] for a in arms)
    return {label: {k: round(med(a, k) / med(b, k), 3) for k in ('cpu', 'wall')} for label, (a, b) in pairs.items()}


def step_flops(run, batch) -> float:
    "Matmul FLOPs of one step: teacher forward 2·N_t per teacher token, student forward + backward 6·N_s per student token."
    n_t = sum(p.numel() for p in run.teacher.parameters()); n_s = sum(p.numel() for p in run.student.parameters())
    return 2 * n_t * batch['t_ids'].numel() + 6 * n_s * batch['s_ids'].numel()


def fp16_peak(dev) -> float | None:
    if dev.type != 'cuda': return None
    name = torch.cuda.get_device_name(dev)
    for k, v in PEAK_FP16_TFLOPS.items():
        if k in name: return v * 1e12
    return None


def print_table(title: str, s: dict):
    print(f'\n{title}')
    print(f"{'arm':<16}{'cpu median s':>14}{'cpu min-max':>18}{'wall median s':>15}{'wall min-max':>18}")
    for n, d in s.items():
        print(f"{n:<16}{d['cpu']['median']:>14.3f}{d['cpu']['min']:>9.3f}-{d['cpu']['max']:<8.3f}"
              f"{d['wall']['median']:>15.3f}{d['wall']['min']:>9.3f}-{d['wall']['max']:<8.3f}")


def bench_shape(shape: str, a) -> dict:
    run, opt, sched, scaler, batches = build(shape, a.device)
    dev, k = run.device, iter(range(10 ** 9))
    pick = lambda: batches[next(k) % len(batches)]
    arms = {'project': lambda: project_step(run, opt, sched, scaler, pick()),
            'bare': lambda: bare_step(run, opt, pick(), False),
            'bare+naive_kl': lambda: bare_step(run, opt, pick(), True)}
    s = summary(interleave(arms, dev, a.repeats))
    r = ratios(s, {'project / bare': (['project'], ['bare']),
                   'project / (bare + naive KL)': (['project'], ['bare+naive_kl']),
                   'naive KL alone / bare': (['bare+naive_kl', '-bare'], ['bare'])})
    print_table(f"shape {shape}: student {tuple(batches[0]['s_ids'].shape)}, teacher {tuple(batches[0]['t_ids'].shape)}, "
                f"aligned pairs {len(batches[0]['pair_b'])}, vocab {len(run.s_tok)} -> {len(run.t_tok)}", s)
    for label, v in r.items(): print(f"  {label}: cpu {v['cpu']:.3f}, wall {v['wall']:.3f}")
    res = {'summary': s, 'ratios': r}
    if (peak := fp16_peak(dev)):
        fl = step_flops(run, batches[0]) / s['project']['wall']['median']
        res['flops_share'] = fl / peak
        print(f"  achieved {fl / 1e12:.2f} TFLOP/s = {100 * fl / peak:.1f}% of the {torch.cuda.get_device_name(dev)} fp16 peak")
    elif dev.type == 'cuda': print('  fp16 peak of this GPU unknown: no FLOP/s share')
    return res


def bench_lengths(a) -> dict:
    "Project step time at lengths 256 and 512 (p100-like shapes, SDPA attention): the growth factor."
    out = {}
    for L in (256, 512):
        run, opt, sched, scaler, batches = build('p100', a.device, [f'data.max_length={L}'])
        out[L] = summary(interleave({f'project@{L}': lambda: project_step(run, opt, sched, scaler, batches[0])},
                                    run.device, a.repeats))[f'project@{L}']
        del run, opt
    g = {k: round(out[512][k]['median'] / out[256][k]['median'], 3) for k in ('cpu', 'wall')}
    print_table('project step at length 256 and 512 (p100-like, SDPA)', {f'L={L}': v for L, v in out.items()})
    print(f"  step time 512 / 256: cpu {g['cpu']:.3f}, wall {g['wall']:.3f} (linear: 2.0)")
    return {'summary': {str(k): v for k, v in out.items()}, 'growth_512_over_256': g}


def bench_kd(a) -> dict:
    "KD alone, forward + backward, 384 x 151,936 float32: `divergence` chunked (auto), one chunk, and a naive autograd KL."
    from kaggle_distill.divergence import divergence
    dev = torch.device(a.device)
    g = torch.Generator(device=dev).manual_seed(0)
    s0 = torch.randn(384, 151936, generator=g, device=dev) * 3; t0 = torch.randn(384, 151936, generator=g, device=dev) * 3
    def arm(f):
        def go():
            s = s0.clone().requires_grad_(); f(s).backward()
        return go
    naive = lambda s: F.kl_div(F.log_softmax(s / 2, -1), F.log_softmax(t0 / 2, -1), log_target=True, reduction='batchmean') * 4
    arms = {'chunked': arm(lambda s: divergence(s, t0, T=2.0)), 'one_chunk': arm(lambda s: divergence(s, t0, T=2.0, chunk_size=None)),
            'naive': arm(naive)}
    s = summary(interleave(arms, dev, a.repeats))
    r = ratios(s, {'chunked / naive': (['chunked'], ['naive']), 'chunked / one chunk': (['chunked'], ['one_chunk'])})
    print_table('KD alone, 384 x 151,936, float32, forward + backward', s)
    for label, v in r.items(): print(f"  {label}: cpu {v['cpu']:.3f}, wall {v['wall']:.3f}")
    return {'summary': s, 'ratios': r}


def load_before(rev: str):
    "The `kaggle_distill.retokenize` module of commit `rev`, imported beside this tree's (its relative imports resolve here)."
    import importlib.util, subprocess
    src = subprocess.run(['git', '-C', str(ROOT), 'show', f'{rev}:kaggle_distill/retokenize.py'], capture_output=True, text=True,
                         check=True).stdout
    mod = importlib.util.module_from_spec(importlib.util.spec_from_loader(f'kaggle_distill._retokenize_{rev}', loader=None))
    mod.__package__ = 'kaggle_distill'
    sys.modules[mod.__name__] = mod                                           # dataclasses look their module up there
    exec(compile(src, f'{rev}:kaggle_distill/retokenize.py', 'exec'), mod.__dict__)
    return mod


def vocab_bytes(fn, widths: dict) -> dict:
    "Bytes `fn()` moves over tensors whose last dimension is one of `widths` ({name: width}), counted per operator."
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves
    count = dict.fromkeys(widths, 0)
    by_width = {w: k for k, w in widths.items()}
    touch_only = {'scatter_', 'scatter_add_'}
    def add(t, factor=1):
        if torch.is_tensor(t) and t.dim() and t.shape[-1] in by_width: count[by_width[t.shape[-1]]] += factor * t.numel() * t.element_size()
    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            name = func.overloadpacket.__name__
            if func.is_view or name in ('detach', 'alias', 'empty', 'zeros', 'new_zeros', 'empty_like', 'zeros_like'): return out
            if name == 'gather': add(out, 2)                                   # reads and writes the picked elements
            elif name in touch_only:                                           # in place: the source's elements only
                for a in tree_leaves((args[3:] if len(args) > 3 else args[2:], kwargs)): add(a)
            else:
                for a in tree_leaves((args, kwargs)): add(a)
                for o in tree_leaves(out): add(o)
            return out
    with Count(): fn()
    return count


def bench_retok(a) -> dict:
    "`RetokKD` forward + backward at the reference shapes: this tree against `--before`, interleaved; bytes per aligned pair."
    from kaggle_distill.assets import load_tokenizer
    from kaggle_distill.retokenize import RetokKD, retok_map
    s_tok, t_tok = load_tokenizer('smollm'), load_tokenizer('qwen')
    rmap = retok_map(s_tok, t_tok)
    Vs, Vt, P, dev = len(s_tok), len(t_tok), 1344, torch.device(a.device)
    g = torch.Generator().manual_seed(0)
    s0, t0 = (torch.randn(P, Vs, generator=g) * 2).to(dev), (torch.randn(P, Vt, generator=g) * 2).to(dev)
    s_next = torch.randint(0, Vs, (P,), generator=g)
    t_next = torch.tensor([int(torch.nonzero(rmap.t_group == rmap.s_group[i]).flatten()[0]) if (rmap.t_group == rmap.s_group[i]).any()
                           else -1 for i in s_next.tolist()])                  # a teacher token of the same group: the cell applies
    s_next, t_next, keep = s_next.to(dev), t_next.to(dev), (-torch.rand(P, generator=g)).to(dev)
    mods = {'after': RetokKD(rmap, Vs, Vt).to(dev)}
    if a.before: mods['before'] = load_before(a.before).RetokKD(rmap, Vs, Vt).to(dev)
    res = {}
    for case, nxt in (('groups', None), ('cells', (s_next, t_next, keep))):
        def arm(kd):
            def go():
                s = s0.clone().requires_grad_()
                kd(s, t0, temperature=1.0, next_ids=nxt).backward()
                return s.grad
            return go
        arms = {n: arm(m) for n, m in mods.items()}
        if 'before' in arms:                                                   # the same numbers, loss and gradient
            sa, sb = s0.clone().requires_grad_(), s0.clone().requires_grad_()
            la, lb = mods['after'](sa, t0, next_ids=nxt), mods['before'](sb, t0, next_ids=nxt)
            la.backward(); lb.backward()
            diff = {'loss': abs(float(la) - float(lb)), 'grad': float((sa.grad - sb.grad).abs().max())}
            print(f"retok {case}: |loss after - before| {diff['loss']:.2e}, max |grad after - before| {diff['grad']:.2e}")
        else: diff = None
        s = summary(interleave(arms, dev, a.repeats))
        G = rmap.n_groups
        moved = {n: {k: v / P for k, v in vocab_bytes(f, {'teacher': Vt, 'student': Vs, 'groups': G, 'cells': G + 1}).items()}
                 for n, f in arms.items()}
        print_table(f'retok KD ({case}), {P} pairs x {Vs:,} -> {Vt:,} ({G:,} groups), float32, forward + backward', s)
        for n, m in moved.items():
            m['group space'] = m.pop('groups') + m.pop('cells')
            print(f"  {n}: per aligned pair {m['teacher'] / 1e6:.2f} MB over the teacher's rows, {m['student'] / 1e6:.2f} MB over the "
                  f"student's, {m['group space'] / 1e6:.2f} MB in group space ({m['teacher'] / (Vt * 4):.1f}, {m['student'] / (Vs * 4):.1f} "
                  f"and {m['group space'] / (G * 4):.1f} row passes); {sum(m.values()) / 1e6:.2f} MB in all")
        r = ratios(s, {'after / before': (['after'], ['before'])}) if 'before' in arms else {}
        for label, v in r.items(): print(f"  {label}: cpu {v['cpu']:.3f}, wall {v['wall']:.3f}")
        res[case] = {'summary': s, 'bytes_per_pair': moved, 'ratios': r, 'equal': diff}
    return res
def bench_cache(a, shape: str = 'demo') -> dict:
    """The library's own `optimizer_step` three ways on the same blocks, interleaved: LM only (`--lm-only`'s weights),
    KD from the teacher cache (`kaggle-distill teach` first, the teacher not loaded), and KD online (the default:
    LM + retok KD, the teacher's forward at every step). The cache's cost over LM only is the target (<= 1.15)."""
    from kaggle_distill.config import load_config, LOSS_NAMES
    from kaggle_distill.teach import teach
    from kaggle_distill.trainer import build_run, make_optimizer, optimizer_step
    tmp = Path(tempfile.gettempdir()) / f'step_overhead_cache_{shape}'
    base = [f'run_dir={tmp}', f'train.device={a.device}', 'train.steps=3', *SHAPES[shape]]  # 3 steps x 4 blocks: what the arms read
    teach(load_config('cpu-demo', overrides=base), progress=False)
    built = {}
    for name, extra in (('lm_only', [f'loss.weights.{n}=0' for n in LOSS_NAMES if n != 'lm'] + ['train.teacher_cache=online']),
                        ('kd_cache', []), ('kd_online', ['train.teacher_cache=online'])):
        run = build_run(load_config('cpu-demo', overrides=[*base, *extra]))
        opt, sched = make_optimizer(run.student, run.learnable(), run.cfg.train)
        it = iter(run.train_loader)
        built[name] = (run, opt, sched, torch.amp.GradScaler(run.device.type, enabled=run.autocast == torch.float16), [next(it) for _ in range(3)])
    assert built['kd_cache'][0].teacher is None and built['kd_cache'][0].signal is not None
    def arm(name):
        run, opt, sched, scaler, batches = built[name]; k = iter(range(10 ** 9))
        def go():
            r = optimizer_step(run, opt, sched, scaler, [batches[next(k) % 3]], 1)
            assert r.skipped is None, r.skipped
        return go
    s = summary(interleave({n: arm(n) for n in built}, torch.device(a.device), a.repeats))
    r = ratios(s, {'KD from the cache / LM only': (['kd_cache'], ['lm_only']), 'KD online / LM only': (['kd_online'], ['lm_only']),
                   'KD from the cache / KD online': (['kd_cache'], ['kd_online'])})
    print_table(f'a step from the teacher cache ({shape} shapes: LM + retok KD, batch of 4 blocks)', s)
    for label, v in r.items(): print(f"  {label}: cpu {v['cpu']:.3f}, wall {v['wall']:.3f}")
    return {'summary': s, 'ratios': r}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split('\n', 1)[1])
    p.add_argument('--shapes', nargs='+', default=['demo', 'p100', 'kd', 'lengths'], choices=['demo', 'p100', 'kd', 'lengths', 'retok', 'cache'])
    p.add_argument('--before', help="with --shapes retok: a commit whose retokenize.py is the 'before' arm")
    p.add_argument('--device', default='cpu', help="'cpu' or 'cuda' (prints achieved FLOP/s as a share of the fp16 peak)")
    p.add_argument('--repeats', type=int, default=5, help='timed runs per arm (after one warm-up run each)')
    p.add_argument('--threads', type=int, default=1, help='torch CPU threads (1: steadier on a shared machine)')
    p.add_argument('--json', type=Path, help='also write the results here')
    a = p.parse_args(argv)
    if a.device.startswith('cuda') and not torch.cuda.is_available(): p.error('--device cuda but no CUDA GPU is visible')
    torch.set_num_threads(a.threads)
    try: import os; load = os.getloadavg()
    except OSError: load = None
    print(f'torch {torch.__version__}, device {a.device}, threads {a.threads}, load average {load}')
    res = {}
    for sh in a.shapes:
        res[sh] = (bench_lengths(a) if sh == 'lengths' else bench_kd(a) if sh == 'kd' else bench_retok(a) if sh == 'retok'
                   else bench_cache(a) if sh == 'cache'
                   else bench_shape(sh, a))
    if a.json: a.json.write_text(json.dumps(res, indent=1))
    return res


if __name__ == '__main__':
    main()
