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

The arms are defined in `bench/kd_arms.py`; the tables (`--report`) are made by `bench/kd_report.py`.
"""
from __future__ import annotations
import argparse, hashlib, json, math, os, sys, tempfile, time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kd_arms import ARMS, GOLD_ARMS, DEFAULT_ARM
from kd_report import bpb_of, corpus_of, dedup, print_tables, print_peers


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
