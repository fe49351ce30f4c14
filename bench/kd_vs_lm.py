"""Does distillation pay? The same student, from the same seed, on the same batches: LM only vs each KD method.

    python bench/kd_vs_lm.py                                   # cpu-demo pair, Shakespeare, 100 steps, seeds 0 1 2
    python bench/kd_vs_lm.py --steps 300 --seeds 0 --arms lm retok
    python bench/kd_vs_lm.py --report a.json b.json            # the tables of saved results (e.g. seeds run in parallel)
    python bench/kd_vs_lm.py --seeds 0 --arms lm gold --trl-path /tmp/trl_site   # TRL's GOLDTrainer on the same student (docs/bench_peers.md)

Per arm and seed: held-out bits/byte before and after training with a 95 % bootstrap interval over held-out blocks,
the difference to the LM-only arm of the same seed on the same blocks (paired interval), the share of the
before -> teacher gap closed, training wall time, tokens/s, and the teacher-free agreement measures of
`kaggle_distill.evaluate` (`kd_shared`, `top1_confident`). Across seeds: the mean difference to LM only, the
interval of the per-block paired differences pooled over seeds, and how many seeds the arm wins.

Equal steps: every arm runs `--steps` optimizer steps. Equal wall time (`--equal-wall ARM`): one more LM-only run
whose step count is chosen so that it trains as long as ARM did (teacher time included).

Peers (`docs/bench_peers.md`): the `gold*` arms train the same student (same seed, so the same initial weights) on the
same batches, decoded to text, with TRL 1.16's `GOLDTrainer` itself: its `training_step` (its teacher tokenization and
forward, its ULD loss, the backward) inside this script's loop of the project's optimizer and schedule
(`make_optimizer`, handed to GOLD as its `optimizers`) and clipping; then the project's evaluator on the same held-out
blocks. TRL is a bench-only extra: `pip install --no-deps --target /tmp/trl_site trl==1.16.0 accelerate`, then
`--trl-path /tmp/trl_site`. The `xtoken` arms are this library's implementation of X-Token (`kaggle_distill.xtoken`).
`--report` adds "Against other trainers": each peer against the default arm (`DEFAULT_ARM`), seed for seed on the same
blocks, on all held-out blocks and on the numerals slice (the held-out blocks with the highest share of digits).

Speed: every arm of a seed sees the same batches in the same order (the loader is seeded by the run's seed), so the
teacher's last hidden states at the aligned pairs are computed once per batch and reused; the logits are recomputed
from them by the teacher's head exactly as `kaggle_distill.trainer.teacher_at_pairs` does (the same operation on the
same tensor: bit-identical). Terms that need more of the teacher (feature, attention) call it directly. The time the
teacher took on a batch is charged to every arm that used it, so wall times are those of uncached runs.
"""
from __future__ import annotations
import argparse, hashlib, json, math, os, sys, tempfile, time
from pathlib import Path

import numpy as np
import torch

AUX_OFF = ['loss.weights.feature=0', 'loss.weights.attention=0', 'loss.weights.contrastive=0']
AUX_ON = ['loss.weights.feature={start: 0.01, end: 0.1, ramp_from: 0.3, ramp_to: 0.5, active_from: 0.3}',
          'loss.weights.attention={start: 0.01, end: 0.1, ramp_from: 0.3, ramp_to: 0.5, active_from: 0.3}',
          'loss.weights.contrastive={start: 0.01, end: 0.05, ramp_from: 0.6, ramp_to: 0.8, active_from: 0.6}']
T1 = ['loss.temperature.start=1', 'loss.temperature.end=1']
ARMS = {  # name -> overrides on top of the preset (and --set)
    'lm': ['loss.weights.kd=0', *AUX_OFF],
    'default': [],                                           # the library's defaults as they are (LM + retok KD since issue 29)
    'retok_aux': ['loss.kd_method=retok', *AUX_ON],          # the default before issue 29: retok + feature, attention, contrastive
    'cache': [],                                             # the default, trained from the teacher cache (`kaggle-distill teach` first)
    'shared_vocab': ['loss.kd_method=shared_vocab', *AUX_OFF],
    'hybrid': ['loss.kd_method=hybrid', *AUX_OFF],
    'uld': ['loss.kd_method=uld', *AUX_OFF],
    'projector': ['loss.kd_method=projector', *AUX_OFF],
    'retok': ['loss.kd_method=retok', *AUX_OFF],
    'retok_T1': ['loss.kd_method=retok', 'loss.weights.kd=1', *T1, *AUX_OFF],
    'retok_kd_only': ['loss.kd_method=retok', 'loss.weights.lm=0', 'loss.weights.kd=1', *T1, *AUX_OFF],
    'shared_vocab_kd_only': ['loss.kd_method=shared_vocab', 'loss.weights.lm=0', 'loss.weights.kd=1', *T1, *AUX_OFF],
    'xtoken': ['loss.kd_method=xtoken', 'loss.top_k=8192', *AUX_OFF],        # P-KL on the batch's top 8192 teacher tokens (X-Token's value)
    'xtoken_full': ['loss.kd_method=xtoken', 'loss.top_k=0', *AUX_OFF],      # P-KL on the whole teacher vocabulary
    'xtoken_hkl': ['loss.kd_method=xtoken_hkl', 'loss.top_k=8192', *AUX_OFF],
    'gold': ['loss.weights.kd=0', *AUX_OFF],        # GOLD arms: the student is built as LM only's; GOLDTrainer trains it
    'gold_hybrid': ['loss.weights.kd=0', *AUX_OFF],
    'gold_ce': ['loss.weights.kd=0', *AUX_OFF],
}
GOLD_ARMS = {  # GOLD arm -> GOLDConfig fields besides its ULD defaults (all: use_uld_loss=True, lmbda=0, float32)
    'gold': {},                                                   # ULD alone (GOLD's default: no cross-entropy term)
    'gold_hybrid': {'uld_use_hybrid_loss': True},                 # hybrid ULD, adaptive weights (its default)
    'gold_ce': {'uld_crossentropy_weight': 1.0},                  # ULD + the student's cross-entropy at weight 1, like LM + KD here
}
DEFAULT_ARM = 'retok'   # "the default" of the peer comparison: LM + retok KD, auxiliary terms off: the library default since
                        # issue 29 (the `default` arm's config; recorded as `default_arm` in the result files)
TARGET_SEEDS = 3          # the issue's targets are claims over 3 seeds; fewer: the table says how many ran
PEER_TARGETS = {'gold': 0.05, 'gold_hybrid': 0.05, 'gold_ce': 0.05, 'xtoken': 0.02, 'xtoken_full': 0.02, 'xtoken_hkl': 0.02,
                'xt_first_full': 0.02}   # X-Token's part that differs from retok on the teacher's side alone (bench/xtoken_why.py)


def batch_key(b: dict) -> str:
    "A content hash of the teacher's side of a batch (ids, mask, pairs)."
    h = hashlib.blake2b(digest_size=16)
    for k in ('t_ids', 't_mask', 'pair_b', 'pair_t'): h.update(k.encode()); h.update(b[k].cpu().numpy().tobytes())
    return h.hexdigest()


class TeacherCache:
    "The teacher's hidden states at the pairs per training batch, and its evaluation rows per held-out batch."
    def __init__(self, folder: str | None = None):
        self.train, self.train_s, self.eval = {}, {}, {}
        self.charged = 0.0          # teacher seconds charged to the current arm
        self.folder = Path(folder) if folder else None   # optional: entries kept on disk for later runs

    def _load(self, kind: str, key: str):
        f = self.folder / f'{kind}-{key}.pt' if self.folder else None
        return torch.load(f) if f is not None and f.exists() else None

    def _save(self, kind: str, key: str, value):
        if self.folder:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.folder / f'.{kind}-{key}.{os.getpid()}.tmp'; torch.save(value, tmp); tmp.replace(self.folder / f'{kind}-{key}.pt')   # own name: lanes share the folder

    def install(self):
        "Route `kaggle_distill.trainer.teacher_at_pairs` through the cache."
        import kaggle_distill.trainer as tr
        from kaggle_distill.models import real_logits
        orig = self.orig = tr.__dict__.get('_uncached_teacher_at_pairs', tr.teacher_at_pairs)
        tr._uncached_teacher_at_pairs = orig

        def cached(run, b, hidden=False, attentions=False):
            if hidden or attentions:
                t0 = time.perf_counter(); out = orig(run, b, hidden, attentions); self.charged_direct += time.perf_counter() - t0
                return out
            key = batch_key(b)
            if key not in self.train and (hit := self._load('train', key)) is not None:
                self.train[key], self.train_s[key] = hit['h'], hit['s']
                self.charged += hit['s']
            elif key not in self.train:
                t0 = time.perf_counter()
                _, h, _ = orig(run, b)
                self.train[key], self.train_s[key] = h.detach().clone(), time.perf_counter() - t0
                self._save('train', key, {'h': self.train[key], 's': self.train_s[key]})
            else: self.charged += self.train_s[key]                # the time the teacher forward would have taken
            h = self.train[key]
            with torch.no_grad():
                logits = real_logits(run.teacher.get_output_embeddings()(h), len(run.t_tok)).float()
            return logits, h, None
        tr.teacher_at_pairs = cached
        self.charged_direct = 0.0

    def teacher_fn(self, teacher, t_prefix, t_vocab):
        "An `evaluate(teacher_fn=...)`: per-row NLL, token count and logits at the pairs, the forward pass run once per batch."
        from kaggle_distill.evaluate import row_nll
        head = teacher.get_output_embeddings()

        @torch.no_grad()
        def fn(b):
            key = batch_key(b)
            if key not in self.eval and (hit := self._load('eval', key)) is not None: self.eval[key] = hit
            if key not in self.eval:
                ids, mask = b['t_ids'], b['t_mask']
                if t_prefix is not None:
                    ids = torch.cat([ids.new_full((len(ids), 1), t_prefix), ids], 1)
                    mask = torch.cat([mask.new_ones((len(mask), 1)), mask], 1)
                hid = teacher.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
                rows, n = row_nll(head(hid), b['t_ids'], b['t_mask'], t_prefix, t_vocab)
                self.eval[key] = (rows, n, hid[b['pair_b'], b['pair_t'] + (t_prefix is not None)].clone())
                self._save('eval', key, self.eval[key])
            rows, n, h = self.eval[key]
            return rows, n, head(h)[:, :t_vocab].float()
        return fn


def block_digits(batches, s_tok) -> list[int]:
    "Digit characters in the text of each held-out block, in `evaluate`'s order (batch by batch, row by row)."
    return [sum(c.isdigit() for c in s_tok.decode(ids[m.bool()].tolist())) for b in batches for ids, m in zip(b['s_ids'], b['s_mask'])]


def corpus_record(corpus: str) -> dict:
    "The corpus as a result records it: the name given, and a file's SHA-256 (two files of one name are told apart)."
    p = Path(corpus)
    return {'corpus': corpus, **({'corpus_sha256': hashlib.sha256(p.read_bytes()).hexdigest()} if p.is_file() else {})}


def arm_overrides(overrides: list, args, seed: int, steps: int) -> list:
    "The overrides of one arm: seed, steps, data, evaluation blocks, a run folder of the bench's own (never the demo's), CPU."
    root = Path(args.cache_dir or tempfile.gettempdir()) / 'kd_vs_lm_runs'
    return [f'run_dir={root}', f'train.seed={seed}', f'train.steps={steps}', f'data.source={args.corpus}',
            f'data.eval_max_blocks={args.eval_blocks}', 'train.device=cpu', 'train.teacher_cache=online', *args.set, *overrides]


def teach_for(overrides: list, args, seed: int, steps: int) -> tuple[Path, float]:
    """The teacher cache of an arm (`kaggle-distill teach` of its config), taught once and kept under --cache-dir; the
    seconds its training shards took when they were written (the held-out pass, an evaluation cost, excluded)."""
    from kaggle_distill.config import load_config
    from kaggle_distill.teach import teach
    from kaggle_distill.teacher_cache import CACHE_FORMAT
    ov = arm_overrides(overrides, args, seed, steps)
    probe = load_config(args.preset, overrides=ov)            # the teach settings in force (library defaults change)
    tag = hashlib.blake2b(json.dumps([args.preset, ov, probe.teach.k, probe.teach.exact, CACHE_FORMAT]).encode(), digest_size=6).hexdigest()
    folder = Path(args.cache_dir or tempfile.gettempdir()) / 'teach' / tag
    timing = folder / 'bench_teach_s.json'
    cfg = load_config(args.preset, overrides=[*ov, f'run_dir={folder}', 'train.teacher_cache=auto'])
    s = teach(cfg, progress=False)
    if s['status'] != 'finished': raise SystemExit(f'teach did not finish: {s}')
    if not timing.exists():                               # the first pass wrote every shard: its time is the teach cost
        timing.write_text(json.dumps({'teach_s': s['teacher_s'] - s['heldout_s'], 'heldout_s': s['heldout_s'],
                                      'teach_cpu_s': s['cpu_s']['setup_and_shards'], 'heldout_cpu_s': s['cpu_s']['heldout'],
                                      'bytes_per_position': s['bytes_per_position'], 'blocks': s['blocks']}))
    return folder / 'teacher_cache', json.loads(timing.read_text())


def run_arm(name: str, overrides: list, args, cache: TeacherCache, seed: int, steps: int, want_before: bool) -> dict:
    "Train one arm for `steps` optimizer steps from seed `seed`; evaluate before (optionally) and after."
    from kaggle_distill.config import load_config
    from kaggle_distill.trainer import build_run, make_optimizer, optimizer_step
    from kaggle_distill.evaluate import evaluate, eval_kwargs
    from kaggle_distill.models import load_model_spec
    taught = None
    if name.split('@')[0].startswith('cache'):            # KD from the teacher cache: teach first (once per config and seed)
        folder, taught = teach_for(overrides, args, seed, steps)
        overrides = [*overrides, f'train.teacher_cache={folder}']
    cfg = load_config(args.preset, overrides=arm_overrides(overrides, args, seed, steps))
    run = build_run(cfg)
    ekw = eval_kwargs(run.s_tok, run.t_tok)
    teacher = run.teacher if run.teacher is not None else load_model_spec(cfg.teacher, 'teacher', 'cpu', run.t_tok, seed=seed)   # to evaluate only
    tfn = cache.teacher_fn(teacher, ekw['t_prefix'], ekw['t_vocab'])
    ev = lambda: evaluate(teacher, run.student, run.eval_batches, teacher_fn=tfn, **ekw)
    before = ev() if want_before else None
    common = dict(arm=name, seed=seed, steps=steps, **corpus_record(args.corpus), preset=args.preset, overrides=overrides,
                  default_arm=DEFAULT_ARM, eval_digits=block_digits(run.eval_batches, run.s_tok))
    if name in GOLD_ARMS:
        res = train_gold(name, run, teacher, args, steps)
        after = ev()
        return common | res | dict(before=before, after=after, eval_blocks=len(after['blocks']['bytes']), threads=torch.get_num_threads())
    opt, sched = make_optimizer(run.student, run.learnable(), cfg.train)
    scaler = torch.amp.GradScaler('cpu', enabled=False)
    stream = run.train_loader.forever()
    cache.charged = cache.charged_direct = 0.0
    t0, c0, tokens, step, skipped = time.perf_counter(), time.process_time(), 0, 0, 0
    while step < steps:
        r = optimizer_step(run, opt, sched, scaler, [next(stream) for _ in range(cfg.train.grad_accum)], step)
        if r.skipped: skipped += 1; continue
        step += 1; tokens += r.tokens
    wall = time.perf_counter() - t0 + cache.charged
    cpu = time.process_time() - c0 + cache.charged
    after = ev()
    out = common | dict(wall_s=wall, tokens=tokens, tok_per_s=tokens / wall, skipped=skipped, before=before, after=after,
                        kd_method=cfg.loss.kd_method, eval_blocks=len(after['blocks']['bytes']), cpu_s=cpu, threads=torch.get_num_threads())
    if taught is not None: out.update(teach_s=taught['teach_s'], teach_cpu_s=taught.get('teach_cpu_s'), heldout_s=taught['heldout_s'],
                                      bytes_per_position=taught['bytes_per_position'], teach_k=cfg.teach.k, teach_exact=cfg.teach.exact)
    return out


def train_gold(name: str, run, teacher, args, steps: int) -> dict:
    """Train `run.student` for `steps` optimizer steps with TRL's `GOLDTrainer` (its ULD defaults, off-policy, float32,
    plus `GOLD_ARMS[name]`) on the batches every arm of the seed sees, decoded to text; the project's optimizer, schedule
    and clipping. Returns the result fields of the training (the caller evaluates)."""
    import tempfile, trl
    from datasets import Dataset
    from kaggle_distill.trainer import make_optimizer
    from vs_trl import import_gold, block_texts, gold_batch
    GOLDConfig, GOLDTrainer, encode_with_byte_offsets, pad_byte_offsets = import_gold(args.trl_path)
    tc, s_tok, student = run.cfg.train, run.s_tok, run.student
    if s_tok.pad_token is None: s_tok.pad_token = s_tok.eos_token          # GOLD's batches are padded
    loss_fields = dict(use_uld_loss=True, lmbda=0.0, **GOLD_ARMS[name])           # the rest of its loss: GOLD's defaults
    opt, sched = make_optimizer(student, {}, tc)                                # the project's AdamW groups and warm-up + cosine
    with tempfile.TemporaryDirectory(prefix='gold_') as out:                    # GOLD's output_dir and the teacher tokenizer copy
        run.t_tok.save_pretrained(Path(out) / 'teacher_tokenizer')             # GOLD loads it by path: no hub access
        cfg = GOLDConfig(output_dir=out, teacher_tokenizer_name_or_path=str(Path(out) / 'teacher_tokenizer'), report_to=[], use_cpu=True,
                         bf16=False, fp16=False, max_length=None, logging_steps=10 ** 9, save_strategy='no',
                         dataset_kwargs={'skip_prepare_dataset': True}, per_device_train_batch_size=tc.batch_size,
                         gradient_accumulation_steps=tc.grad_accum, learning_rate=tc.lr, max_grad_norm=tc.grad_clip, seed=tc.seed,
                         **loss_fields)
        tr = GOLDTrainer(model=student, teacher_model=teacher, args=cfg, processing_class=s_tok, data_collator=lambda x: x,
                         train_dataset=Dataset.from_dict({'text': ['x']}), optimizers=(opt, sched))   # the dataset is not read
        assert not getattr(tr.model, 'is_activation_checkpointing', False)    # SFTConfig's checkpointing applies in train() only
        tr.current_gradient_accumulation_steps = tc.grad_accum               # what Trainer's own loop sets before training_step
        stream = run.train_loader.forever()
        t0, tokens, step, skipped, losses = time.perf_counter(), 0, 0, 0, []
        while step < steps:
            micro = [next(stream) for _ in range(tc.grad_accum)]
            tokens_i = sum(int(b['s_mask'].sum()) for b in micro)
            gb = gold_batch([t for b in micro for t in block_texts(b, s_tok)], s_tok, encode_with_byte_offsets, pad_byte_offsets, run.device)
            opt.zero_grad(set_to_none=True)
            loss = sum(float(tr.training_step(tr.model, dict(gb))) for _ in range(tc.grad_accum))  # GOLD fills its buffer on the first
            norm = torch.nn.utils.clip_grad_norm_(student.parameters(), tc.grad_clip)
            if not (math.isfinite(loss) and math.isfinite(float(norm))): skipped += 1; continue
            opt.step(); sched.step(); step += 1; tokens += tokens_i; losses.append(loss)
        wall = time.perf_counter() - t0
    return dict(wall_s=wall, tokens=tokens, tok_per_s=tokens / wall, skipped=skipped, kd_method=name,
                trainer=f'trl {trl.__version__} GOLDTrainer', gold_config=loss_fields, gold_loss=losses)


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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog='Arms: ' + '; '.join(f"{k}: {' '.join(v) or '(library defaults)'}" for k, v in ARMS.items()))
    ap.add_argument('--corpus', default='shakespeare', help='data.source: an asset corpus key or a local file/folder (default shakespeare)')
    ap.add_argument('--preset', default='cpu-demo', help='the preset every arm starts from (default cpu-demo)')
    ap.add_argument('--steps', type=int, default=100, help='optimizer steps per arm (default 100, the cpu-demo budget)')
    ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2], help='seeds (default 0 1 2)')
    ap.add_argument('--arms', nargs='+', default=['lm', 'shared_vocab', 'hybrid', 'uld', 'projector', 'retok', 'retok_kd_only'],
                    help=f'arms to run, in this order, interleaved per seed; known: {", ".join(ARMS)}; or NAME:key=v,key=v')
    ap.add_argument('--set', nargs='*', default=[], help='overrides for every arm, e.g. loss.temperature.start=1')
    ap.add_argument('--eval-blocks', type=int, default=128, help='held-out blocks evaluated (default 128)')
    ap.add_argument('--equal-wall', default=None, help='also run LM only for as long as this arm trained (equal wall time)')
    ap.add_argument('--threads', type=int, default=1, help='torch threads (default 1)')
    ap.add_argument('--trl-path', default=None, help='gold arms: folder of a separate TRL install (pip install --target); default: the environment')
    ap.add_argument('--cache-dir', default=None, help="keep the teacher's cached outputs here for later runs (keyed by batch content)")
    ap.add_argument('--out', default=None, help='write all results (JSON) here, updated after every arm')
    ap.add_argument('--report', nargs='+', default=None, help='only print the tables of these saved result files')
    args = ap.parse_args(argv)
    if args.report:
        results = dedup([r for f in args.report for r in json.loads(Path(f).read_text())])
        corpora = list(dict.fromkeys(map(corpus_of, results)))
        for c in corpora:
            if len(corpora) > 1: print(f"\n## corpus: {c}")
            print_tables([r for r in results if corpus_of(r) == c])
        print_peers(results)
        return results
    torch.set_num_threads(args.threads)
    arms = {}
    for a in args.arms:
        name, _, extra = a.partition(':')
        if name not in ARMS and not extra: ap.error(f"unknown arm {name!r}; known: {', '.join(ARMS)} (or NAME:key=v,key=v)")
        arms[name] = ARMS.get(name, []) + [x for x in extra.split(',') if x]
    if set(arms) & set(GOLD_ARMS):                    # refused before any model loads: TRL is a bench-only extra
        from vs_trl import import_gold
        if import_gold(args.trl_path) is None: ap.error(f"arms {', '.join(sorted(set(arms) & set(GOLD_ARMS)))} need TRL >= 1.16 (see above)")
    cache, results, t_all = TeacherCache(args.cache_dir), [], time.perf_counter()
    cache.install()
    for seed in args.seeds:
        cache.train.clear(); cache.train_s.clear()
        for i, (name, ov) in enumerate(arms.items()):
            r = run_arm(name, ov, args, cache, seed, args.steps, want_before=i == 0)
            results.append(r)
            print(f"seed {seed} {name}: {bpb_of(r['after']):.3f} bits/byte after {r['steps']} steps, {r['wall_s']:.0f} s", flush=True)
            if args.out: Path(args.out).write_text(json.dumps(results))
        if args.equal_wall:
            ref = next(r for r in results if r['seed'] == seed and r['arm'] == args.equal_wall)
            lm = next(r for r in results if r['seed'] == seed and r['arm'] == 'lm')
            ref_s = ref['wall_s'] + ref.get('teach_s', 0.0)     # a cache arm: its teach pass counted once (one run)
            n = max(1, round(args.steps * ref_s / lm['wall_s']))
            r = run_arm(f'lm@wall({args.equal_wall})', ARMS['lm'], args, cache, seed, n, want_before=False)
            r['wall_of'] = dict(arm=args.equal_wall, steps=args.steps)     # the run whose wall time it was given
            results.append(r)
            print(f"seed {seed} LM only for {n} steps ({r['wall_s']:.0f} s, as long as {args.equal_wall}): {bpb_of(r['after']):.3f}", flush=True)
            if args.out: Path(args.out).write_text(json.dumps(results))
    print_tables(results)
    print(f"\nbench wall time: {time.perf_counter() - t_all:.0f} s")
    return results


if __name__ == '__main__':
    main()
