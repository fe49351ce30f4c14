"""Per-step time of this package against TRL's `GKDTrainer` on the same models and batches (same tokenizer).

    pip install --no-deps --target /tmp/trl_site trl==1.16.0 accelerate     # TRL is an optional extra, never a core dependency
    python bench/vs_trl.py --trl-path /tmp/trl_site                           # CPU, 1 thread, interleaved arms
    python bench/vs_trl.py --trl-path /tmp/trl_site --device cuda             # also FLOP/s as a share of the fp16 peak

Same tokenizer: the cpu-demo teacher (SmolLM2-135M) and a tiny Llama student on the SmolLM tokenizer, 4 x 96 tokens.
TRL: `GKDTrainer` with lmbda=0 (no on-policy generation), beta=0 (forward KL), temperature 1, float32; one step is
what its training loop does per optimizer step: `training_step` (forward, loss, backward), gradient clipping, AdamW,
scheduler, zero_grad. Project: `kaggle_distill.trainer.optimizer_step` with kd_method same_tokenizer, forward KL, T = 1,
the KD term alone (LM weight 0, as GKD has no LM term). Both arms train the same student architecture from the same
weights on the same batches, interleaved; CPU time and wall, medians and min-max.

Cross tokenizer (`GOLDTrainer`, `trl.experimental.gold`): not measured by this script. GOLD's cross-tokenizer (ULD)
path re-tokenizes prompt/completion texts inside its ChatML collator and needs chat-formatted datasets; wiring that to
the same batches is left open (the script says so when asked with --cross).
"""
from __future__ import annotations
import argparse, copy, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'bench'))

import torch


def import_trl(path: str | None):
    "TRL from `path` (a --target install) or the environment; None with a message when it is not installed."
    if path: sys.path.insert(0, path)
    try:
        from trl.experimental.gkd import GKDConfig, GKDTrainer
        return GKDConfig, GKDTrainer
    except ImportError as e:
        print(f"TRL is not importable ({e}); install it apart from the project, e.g. "
              f"`pip install --no-deps --target /tmp/trl_site trl==1.16.0 accelerate`, and pass --trl-path /tmp/trl_site. Skipped.")
        return None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split('\n', 1)[1])
    p.add_argument('--trl-path', help='folder of a separate TRL install (pip install --target); default: the environment')
    p.add_argument('--device', default='cpu')
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--cross', action='store_true', help='also the cross-tokenizer case against GOLDTrainer (not wired yet)')
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    trl = import_trl(a.trl_path)
    if trl is None: return None
    GKDConfig, GKDTrainer = trl
    from datasets import Dataset
    from step_overhead import build, interleave, summary, ratios, print_table, project_step, fp16_peak, step_flops
    import os
    print(f'torch {torch.__version__}, device {a.device}, threads {a.threads}, load average {os.getloadavg()}')
    run, opt, sched, scaler, batches = build('demo', a.device, ['student.tokenizer=smollm', 'loss.weights.lm=0', 'loss.weights.kd=1',
                                                                'loss.temperature.start=1', 'loss.temperature.end=1'],
                                             kd_method='same_tokenizer')
    dev = run.device
    student2 = copy.deepcopy(run.student)                 # TRL trains its own copy: same weights, same architecture
    out = Path(tempfile.mkdtemp(prefix='vs_trl_'))
    args = GKDConfig(output_dir=str(out), lmbda=0.0, beta=0.0, temperature=1.0, per_device_train_batch_size=len(batches[0]['s_ids']),
                     learning_rate=run.cfg.train.lr, max_grad_norm=run.cfg.train.grad_clip, report_to=[], use_cpu=dev.type == 'cpu',
                     bf16=False, fp16=False, max_length=batches[0]['s_ids'].shape[1], logging_steps=10 ** 9, save_strategy='no')
    tr = GKDTrainer(model=student2, teacher_model=run.teacher, args=args, processing_class=run.s_tok,
                    data_collator=lambda x: x,
                    train_dataset=Dataset.from_dict({'messages': [[{'role': 'user', 'content': 'x'}]]}))  # not read: batches are given
    tr.create_optimizer_and_scheduler(num_training_steps=run.total)
    tr.current_gradient_accumulation_steps = 1          # what Trainer's own loop sets before training_step
    def gkd_inputs(b):
        ids, mask = b['s_ids'].to(dev), b['s_mask'].to(dev)
        return {'input_ids': ids, 'attention_mask': mask, 'labels': ids.masked_fill(mask == 0, -100)}
    def gkd_step(b):
        tr.model.train()
        tr.training_step(tr.model, gkd_inputs(b))
        torch.nn.utils.clip_grad_norm_(tr.model.parameters(), args.max_grad_norm)
        tr.optimizer.step(); tr.lr_scheduler.step(); tr.optimizer.zero_grad(set_to_none=True)
    k = iter(range(10 ** 9)); pick = lambda: batches[next(k) % len(batches)]
    arms = {'project': lambda: project_step(run, opt, sched, scaler, pick()), 'trl_gkd': lambda: gkd_step(pick())}
    s = summary(interleave(arms, dev, a.repeats))
    r = ratios(s, {'project / TRL GKD': (['project'], ['trl_gkd'])})
    print_table(f"same tokenizer, {tuple(batches[0]['s_ids'].shape)} tokens, vocab {len(run.s_tok)}", s)
    for label, v in r.items(): print(f"  {label}: cpu {v['cpu']:.3f}, wall {v['wall']:.3f}")
    if (peak := fp16_peak(dev)):
        fl = step_flops(run, batches[0]) / s['project']['wall']['median']
        print(f"  project: {fl / 1e12:.2f} TFLOP/s = {100 * fl / peak:.1f}% of the fp16 peak")
    if a.cross: print('cross tokenizer vs GOLDTrainer: not wired in this script yet (see the module docstring)')
    return {'summary': s, 'ratios': r}


if __name__ == '__main__':
    main()
