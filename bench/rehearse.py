"""The real job, rehearsed at its real shapes: a preset's own training path on random-weight models of the reference pair.

    python bench/rehearse.py --preset t4 --device cpu --micro 1 --steps 1 --json r.json   # this CPU: about 10 minutes, 11+ GB
    python bench/rehearse.py --preset t4 --device cuda --memory-cap-gb 15 --json r.json  # a GPU as a T4 stand-in (bench/gpu_check.sh)
    python bench/rehearse.py --preset cpu-demo --steps 2 --json r.json                   # the demo pair: seconds (what the tests run)

What it runs, through the library's public names, with the preset's batch, lengths, KD method, loss weights, gradient
checkpointing and the dtypes the device allows (a CPU runs everything in float32):
- the models: for the Kaggle presets, `reference-teacher` / `reference-student` (random weights of exactly
  Huihui-MoE-1.2B-A0.6B and SmolLM-135M, kaggle_distill/reference/*.json) with the real offline tokenizers (`qwen`,
  `smollm`) and the shipped Shakespeare as text (the presets' hub data needs the network);
- `build_run` (data, both models, the fp16 guard on the teacher, the KD method and auxiliary heads), the optimizer;
- `--steps` optimizer steps of `--micro` micro-batches each (`optimizer_step`): the first at the run's first step (LM
  and KD), every other at its last step, where every loss the preset turns on at some point is on (feature,
  attention, contrastive); with `--steps 1` that one step is the last-step one, so every term runs once;
- one checkpoint save (`save_run`), one resume from it (`resume_point`, `resume_run`: the state is read back into the
  run, as the next session does), one evaluation on a few held-out blocks (`evaluate_run`).
Each phase's wall time and peak memory are printed (CPU: the resident set, sampled every 20 ms; CUDA:
`torch.cuda.max_memory_allocated`), with the memory model of `kaggle_distill.budget` for the device it ran on (its
error against the measurement) and for one T4 (`predicted_t4_peak_gb`: per process, as a T4 would run the preset;
`predicted_t4_peak_gb_by_mode` adds `kaggle-distill teach` and training from its cache, modelled only).

On a CPU it sets glibc's allocator variables itself (`MALLOC_MMAP_THRESHOLD_=131072 MALLOC_ARENA_MAX=2`, by
re-executing itself once; a value already in the environment is kept): without them the many short-lived buffers of 100-600 MB that a step allocates leave the
heap fragmented, and the resident set grew past 18 GB in the second step while the allocator held 3.9 GB live (the
issue that asked for this script). Everything is written to a fresh temporary run folder, removed at the end
(`--keep` keeps it). Exit status 0 when `ok`: every step finite and not skipped, the resume back at the saved step,
a finite evaluation.
"""
from __future__ import annotations
import argparse, json, math, os, shutil, sys, tempfile, threading, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MALLOC_ENV = {'MALLOC_MMAP_THRESHOLD_': '131072', 'MALLOC_ARENA_MAX': '2'}
REFERENCE = {'teacher.name=reference-teacher', 'teacher.tokenizer=qwen', 'student.name=reference-student', 'student.tokenizer=smollm',
             'student.scratch={}'}


def reexec_with_allocator_settings(device: str):
    "On a CPU, run this script again with glibc's allocator variables set (a value the caller set is kept), unless they are set."
    if device != 'cpu' or all(k in os.environ for k in MALLOC_ENV): return
    os.execve(sys.executable, [sys.executable, *sys.argv], {**MALLOC_ENV, **os.environ})


def rehearsal_config(preset: str, device: str, micro: int | None, run_dir: Path, max_docs: int, eval_blocks: int, extra=()):
    "The preset's config with the offline models and text, the device, `micro` micro-batches per step and a fresh run folder."
    from kaggle_distill.config import load_config, REFERENCE_TEACHER_ID, REFERENCE_STUDENT_ID
    base = load_config(preset)
    over = [f'run_dir={run_dir}', f'train.device={device}', 'train.resume_from=[]', 'train.time_budget_s=0']
    if (base.teacher.name, base.student.name) == (REFERENCE_TEACHER_ID, REFERENCE_STUDENT_ID): over += sorted(REFERENCE)
    if base.data.source.startswith('hf:'): over += ['data.source=shakespeare', 'data.text_column=text']
    over += [f'data.max_docs={max_docs}', f'data.eval_max_blocks={eval_blocks}']
    if device == 'cpu': over += ['teacher.dtype=auto', 'student.dtype=auto']      # float32: what a CPU computes in
    if micro: over.append(f'train.grad_accum={micro}')
    return load_config(preset, overrides=[*over, *extra])


class Memory:
    "Peak memory per phase: the process's resident set sampled every `every` s on a CPU, `max_memory_allocated` on CUDA."
    def __init__(self, device, every: float = 0.02):
        import torch
        self.torch, self.cuda, self.every, self.peak = torch, device.type == 'cuda', every, 0
        self.page = os.sysconf('SC_PAGE_SIZE')
        if not self.cuda:
            self.stop = threading.Event()
            threading.Thread(target=self._sample, daemon=True).start()

    def rss(self) -> int:
        with open('/proc/self/statm') as f: return int(f.read().split()[1]) * self.page

    def _sample(self):
        while not self.stop.wait(self.every): self.peak = max(self.peak, self.rss())

    def start(self):
        if self.cuda: self.torch.cuda.synchronize(); self.torch.cuda.reset_peak_memory_stats()
        else: self.peak = self.rss()

    def now(self) -> int:
        "Bytes held now."
        if self.cuda: self.torch.cuda.synchronize(); return self.torch.cuda.memory_allocated()
        return self.rss()

    def read(self) -> int:
        "Peak bytes since `start`."
        if self.cuda: self.torch.cuda.synchronize(); return self.torch.cuda.max_memory_allocated()
        return max(self.peak, self.rss())


def terms_on(run, step: int) -> list[str]:
    "The loss terms with a non-zero weight at optimizer `step`."
    w = run.curriculum.weights(step, run.total)
    return [k for k, v in w.items() if v > 0]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split('\n', 1)[1])
    p.add_argument('--preset', default='t4')
    p.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    p.add_argument('--steps', type=int, default=2, help='optimizer steps (first: the run\'s first step; others: its last step)')
    p.add_argument('--micro', type=int, help="micro-batches per optimizer step (default: the preset's train.grad_accum)")
    p.add_argument('--json', type=Path, help='write the figures here')
    p.add_argument('--memory-cap-gb', type=float, help='CUDA: cap this process at this many GB (a T4 stand-in on a larger GPU)')
    p.add_argument('--max-docs', type=int, default=60, help='documents of the shipped text to pack (enough for a few steps)')
    p.add_argument('--eval-blocks', type=int, help='held-out blocks of the evaluation (default: one micro-batch)')
    p.add_argument('--keep', type=Path, help='run in this new folder and keep it (default: a temporary folder, removed)')
    p.add_argument('--compare', type=Path, help="no run: this tree's memory model against a saved CPU rehearsal's JSON (--json writes the update)")
    p.add_argument('overrides', nargs='*', help='key=value settings over the rehearsal config')
    a = p.parse_args(argv)
    if a.compare: return compare_saved(a.compare, a.json) or 0
    if a.steps < 1: p.error('--steps must be >= 1')
    reexec_with_allocator_settings(a.device)
    import torch
    if a.device == 'cuda' and not torch.cuda.is_available(): p.error('--device cuda but no CUDA GPU is visible')
    if a.keep and a.keep.exists(): p.error(f'--keep {a.keep}: exists; name a new folder')
    from kaggle_distill.config import load_config
    from kaggle_distill.trainer import build_run, optimizer_step, evaluate_run
    from kaggle_distill.optim import make_optimizer, TrainState
    from kaggle_distill.rundir import save_run, resume_point, resume_folders, resume_run
    from kaggle_distill.budget import memory_table, StepShapes, GB
    from kaggle_distill.config import ConfigError
    try: load_config(a.preset, overrides=a.overrides)                          # bad input fails here, before anything loads
    except ConfigError as e: p.error(str(e))
    dev = torch.device(a.device)
    if a.memory_cap_gb and dev.type == 'cuda':
        total = torch.cuda.get_device_properties(dev).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, a.memory_cap_gb * GB / total), dev)
    run_dir = a.keep or Path(tempfile.mkdtemp(prefix='rehearse-'))
    mem, phases, steps, out = Memory(dev), {}, [], {'ok': False, 'preset': a.preset, 'device': a.device}
    baseline = mem.rss()
    t_all = time.perf_counter()

    def phase(name, fn):
        mem.start(); t0, c0, m0 = time.perf_counter(), time.process_time(), mem.now()
        r = fn()
        if dev.type == 'cuda': torch.cuda.synchronize()
        phases[name] = {'s': round(time.perf_counter() - t0, 2), 'cpu_s': round(time.process_time() - c0, 2), 'peak_gb': round(mem.read() / GB, 3),
                        'start_gb': round(m0 / GB, 3)}
        print(f"{name}: {phases[name]['s']:.1f} s ({phases[name]['cpu_s']:.1f} s of CPU), peak {phases[name]['peak_gb']:.2f} GB", flush=True)
        return r
    try:
        eval_blocks = a.eval_blocks or load_config(a.preset).train.batch_size
        cfg = rehearsal_config(a.preset, a.device, a.micro, run_dir, a.max_docs, eval_blocks, a.overrides)
        print(f"rehearsing {a.preset} on {a.device}: teacher {cfg.teacher.name}, student {cfg.student.name}, "
              f"{cfg.train.batch_size} x {cfg.data.max_length} tokens x {cfg.train.grad_accum} micro-batches per step, "
              f"kd {cfg.loss.kd_method}, checkpointing {cfg.train.gradient_checkpointing}; torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads; allocator {({k: os.environ.get(k) for k in MALLOC_ENV})}", flush=True)
        run = phase('build', lambda: build_run(cfg))
        run.progress = False
        opt, sched = make_optimizer(run.student, run.learnable(), cfg.train)
        scaler = torch.amp.GradScaler(dev.type, enabled=run.autocast == torch.float16)
        it, st = run.train_loader.forever(), TrainState()
        last = run.total - 1
        for i in range(a.steps):
            at = 0 if (i == 0 and a.steps > 1) else last
            batches = [next(it) for _ in range(cfg.train.grad_accum)]
            r = phase(f'step {i + 1} (at step {at})', lambda: optimizer_step(run, opt, sched, scaler, batches, at))
            tok = sum(int(b['s_mask'].sum()) for b in batches)
            steps.append({'at': at, 'terms': terms_on(run, at), 's': phases[f'step {i + 1} (at step {at})']['s'], 'tokens': tok,
                          'skipped': r.skipped, 'loss': {k: v['raw'] for k, v in r.loss.items() if k != 'total'}, 'total': r.loss.get('total'),
                          't_len': max(b['t_ids'].shape[1] for b in batches), 'pairs': max(len(b['pair_b']) for b in batches)})
            if r.skipped is None: st.step += 1; st.tokens += r.tokens
        ck = phase('save', lambda: save_run(run, opt, sched, scaler, run.train_loader, st))
        found = resume_point(cfg)
        st2, resumed = phase('resume', lambda: resume_run(run, opt, sched, scaler, found, resume_folders(cfg)))
        ev = phase('evaluate', lambda: evaluate_run(run, st.step))
    finally:
        if not a.keep: shutil.rmtree(run_dir, ignore_errors=True)             # the temporary folder this run made
    s = steps[-1]
    shapes = StepShapes(cfg.train.batch_size, cfg.data.max_length, s['t_len'], s['pairs'], cfg.train.grad_accum)
    here_dev = 'cpu' if dev.type == 'cpu' else _gpu_device(dev)
    out.update(ok=all(x['skipped'] is None and math.isfinite(x['total'] or math.nan) for x in steps) and resumed and st2.step == st.step
                   and math.isfinite(ev['student']['bpb']),
               step_s=sorted(x['s'] for x in steps)[len(steps) // 2],
               tokens_per_s=round(sum(x['tokens'] for x in steps) / sum(x['s'] for x in steps), 2),
               baseline_gb=round(baseline / GB, 3) if dev.type == 'cpu' else 0.0, n_groups=getattr(run.kd, 'n_groups', None),
               vocab_rows={r: getattr(run, r).get_input_embeddings().num_embeddings for r in ('teacher', 'student')},
               phases=phases, steps=steps, eval={'s': phases['evaluate']['s'], 'blocks': ev.get('n_batches', 0) * cfg.train.batch_size,
                                                  'student_bpb': ev['student']['bpb'], 'teacher_bpb': ev['teacher']['bpb']},
               teacher_precision=vars(run.teacher_check) if getattr(run, 'teacher_check', None) else None, checkpoint=str(ck.name) if ck else None,
               shapes=vars(shapes), wall_s=round(time.perf_counter() - t_all, 1), threads=torch.get_num_threads(), torch=torch.__version__,
               allocator={k: os.environ.get(k) for k in MALLOC_ENV} if dev.type == 'cpu' else None,
               gpu=torch.cuda.get_device_name(dev) if dev.type == 'cuda' else None, memory_cap_gb=a.memory_cap_gb)
    here, t4 = memory_check(out, cfg, here_dev)
    print(f"\nsteps: " + '; '.join(f"{x['s']:.1f} s at step {x['at']} ({', '.join(x['terms'])})" for x in steps))
    print(f"tokens/s {out['tokens_per_s']:.1f}")
    print('\n'.join(['memory model, here:', *memory_table(here), '', 'memory model, one T4:', *memory_table(t4)]))
    print_memory_check(out)
    print(f"ok: {out['ok']}")
    if a.json: a.json.write_text(json.dumps(out, indent=1, default=str))
    return 0 if out['ok'] else 1


def memory_check(out: dict, cfg, here_dev) -> tuple[dict, dict]:
    """The memory model against a rehearsal's measurements (`out`: its figures so far), per phase and for the whole run, on the
    device it ran on (a CPU adds the process's resident set before anything was built), and for one T4; `out` gets them."""
    from kaggle_distill.budget import memory_model, StepShapes, model_dicts, GB
    from kaggle_distill.config import load_config
    shapes, phases, base = StepShapes(**out['shapes']), out['phases'], out['baseline_gb'] * GB
    t_dict, s_dict = model_dicts(cfg)
    rows = out.get('vocab_rows') or {}                                        # the models' real embedding rows, when recorded
    t_dict, s_dict = {**t_dict, 'vocab_size': rows.get('teacher', t_dict['vocab_size'])}, {**s_dict, 'vocab_size': rows.get('student', s_dict['vocab_size'])}
    here = memory_model(cfg, here_dev, t_dict, s_dict, shapes, out.get('n_groups'))
    kaggle = load_config(out['preset'])
    t4 = memory_model(kaggle, 't4x2' if kaggle.train.ddp else 't4', t_dict, s_dict, shapes, out.get('n_groups'))
    t4_modes = {m: memory_model(kaggle, 't4x2' if kaggle.train.ddp else 't4', t_dict, s_dict, shapes, out.get('n_groups'), mode=m)
                for m in ('teach', 'cache')}                                # teach once, then train without the teacher: modelled only
    measured = max(v['peak_gb'] for v in phases.values()) * GB
    step_peak = max(v['peak_gb'] for k, v in phases.items() if k.startswith('step')) * GB
    compare = {'steps': (max(here['moments']['forward'], here['moments']['backward']) + base, step_peak),
               'resume': (here['moments']['resume'] + base, phases['resume']['peak_gb'] * GB),
               'evaluate': (max(here['moments']['eval'], here['moments'].get('heldout', 0)) + base,   # the first one computes the held-out side
                            phases['evaluate']['peak_gb'] * GB),
               'whole run': (here['peak'] + base, measured)}
    out.update(peak_memory_gb=round(measured / GB, 3), predicted_t4_peak_gb=round(t4['peak'] / GB, 3),
               predicted_t4_peak_gb_by_mode={'online': round(t4['peak'] / GB, 3), **{m: round(v['peak'] / GB, 3) for m, v in t4_modes.items()}},
               predicted_here_gb=round((here['peak'] + base) / GB, 3), memory_model_error=round((here['peak'] + base - measured) / measured, 3),
               memory_model_by_phase={k: {'predicted_gb': round(p_ / GB, 3), 'measured_gb': round(m_ / GB, 3), 'error': round((p_ - m_) / m_, 3)}
                                      for k, (p_, m_) in compare.items()},
               memory_model_here={k: here[k] for k in ('static', *here['parts'], 'moments', 'phase')},
               memory_model_t4={k: t4[k] for k in ('static', *t4['parts'], 'moments', 'phase')})
    return here, t4


def print_memory_check(out: dict):
    print(f"peak {out['peak_memory_gb']:.2f} GB measured, {out['predicted_here_gb']:.2f} GB predicted here "
          f"({'baseline ' + format(out['baseline_gb'], '.2f') + ' GB + ' if out['baseline_gb'] else ''}model), "
          f"error {100 * out['memory_model_error']:+.1f} %")
    for k, v in out['memory_model_by_phase'].items():
        print(f"  {k:<10} predicted {v['predicted_gb']:6.2f} GB, measured {v['measured_gb']:6.2f} GB, error {100 * v['error']:+.1f} %")
    print(f"predicted T4 peak {out['predicted_t4_peak_gb']:.2f} GB per process"
          + (' (' + ', '.join(f'{k} {v:.2f}' for k, v in out['predicted_t4_peak_gb_by_mode'].items()) + ')' if 'predicted_t4_peak_gb_by_mode' in out else ''))


def compare_saved(path: Path, write: Path | None):
    "The memory model of this tree against the measurements of a saved rehearsal (its JSON): no run."
    out = json.loads(path.read_text())
    if out.get('device') != 'cpu': raise SystemExit(f'{path}: --compare reads a CPU rehearsal (this one ran on {out.get("device")})')
    cfg = rehearsal_config(out['preset'], 'cpu', out['shapes']['micro'], Path(tempfile.gettempdir()) / 'rehearse-compare', 1, 1)
    if out.get('n_groups') is None and cfg.loss.kd_method == 'retok':       # a JSON written before it recorded the groups
        from kaggle_distill.assets import load_tokenizer
        from kaggle_distill.retokenize import retok_map
        out['n_groups'] = retok_map(*(load_tokenizer(getattr(cfg, r).tokenizer or getattr(cfg, r).name) for r in ('student', 'teacher'))).n_groups
    memory_check(out, cfg, 'cpu')
    print_memory_check(out)
    if write: write.write_text(json.dumps(out, indent=1, default=str))


def _gpu_device(dev):
    "A budget `Device` for the GPU this runs on: its capability, its memory, nominal speeds (unused by the memory model)."
    import torch
    from kaggle_distill.budget import Device
    p = torch.cuda.get_device_properties(dev)
    return Device(p.name, torch.cuda.get_device_capability(dev), p.total_memory / 1e9, math.nan, math.nan)


if __name__ == '__main__':
    sys.exit(main())
