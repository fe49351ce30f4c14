"""Per-step time of this package against TRL's `GKDTrainer` (same tokenizer) and `GOLDTrainer` (cross tokenizer).

    pip install --no-deps --target /tmp/trl_site trl==1.16.0 accelerate     # TRL is an optional extra, never a core dependency
    python bench/vs_trl.py --trl-path /tmp/trl_site                           # same tokenizer; CPU, 1 thread, interleaved arms
    python bench/vs_trl.py --trl-path /tmp/trl_site --cases cross --warmup 2 --repeats 10   # cross tokenizer vs GOLD
    python bench/vs_trl.py --trl-path /tmp/trl_site --cases cross --warmup 2 --repeats 10 --kd-method shared_vocab
    python bench/vs_trl.py --trl-path /tmp/trl_site --device cuda             # also FLOP/s as a share of the fp16 peak

Both cases: the two arms train the same student architecture from the same weights (TRL gets a deep copy) on the same
texts, interleaved round-robin; CPU time and wall per optimizer step, medians and min-max. TRL's trainer is built but
its `train()` loop is not run: the script calls, per step, what that loop calls, so data loading is outside both arms
(the project's batches are pre-tokenized too) and `Trainer.train()`'s set-up (e.g. SFTConfig's default gradient
checkpointing, which only `train()` switches on) is not applied: the TRL student runs without checkpointing, as the
project's does.

Same tokenizer (`--cases same`): the cpu-demo teacher (SmolLM2-135M) and a tiny Llama student on the SmolLM tokenizer,
4 x 96 tokens. TRL: `GKDTrainer` with lmbda=0 (no on-policy generation), beta=0 (forward KL), temperature 1, float32;
one step is `training_step` (forward, loss, backward), gradient clipping, AdamW, scheduler, zero_grad. Project:
`kaggle_distill.trainer.optimizer_step` with kd_method same_tokenizer, forward KL, T = 1, the KD term alone (LM weight
0, as GKD has no LM term). Printed: project / TRL GKD.

Cross tokenizer (`--cases cross`): the cpu-demo pair as the preset builds it: teacher SmolLM2-135M (real weights,
SmolLM tokenizer, 49,152 ids), student the tiny Llama on the GPT-2 tokenizer (50,257 ids); the project's batches
(4 blocks of 96 student tokens) are decoded back to text and both arms train on those texts.
- Project: `optimizer_step` with the library's default cross-tokenizer method (`LossConfig().kd_method`, now `retok`:
  forward KL at T = 1 over re-tokenization groups at aligned positions; `--kd-method` picks another), its KD term alone
  (LM weight 0, auxiliary terms off), as GOLD's defaults have no cross-entropy term (`uld_crossentropy_weight=0`).
- TRL: `GOLDTrainer` with `use_uld_loss=True` and its other ULD defaults (extended ULD: byte-offset alignment with
  "observed" merging of split tokens; no hybrid JSD term; student and teacher temperature 1; EOS skipped on both
  sides), lmbda=0 (off-policy, no generation), float32. GOLD loads the teacher tokenizer itself, from a local copy
  (`teacher_tokenizer_name_or_path`): no hub access is needed. GOLD's ChatML collator is bypassed: `gold_batch`
  builds the batch it would emit (student ids and completion-relative byte offsets from TRL's own
  `encode_with_byte_offsets`, labels, prompts, the original prompt/completion texts) once, outside the timing, as a
  data loader would. The prompt is each text's first student token, the completion the rest plus the student's EOS
  (the texts have no chat template), so a GOLD student row is one token longer than the project's (97 vs 96 here).
  One GOLD step, timed: `training_step` (GOLD's `_prepare_inputs`, i.e. its off-policy buffer, then `compute_loss`:
  teacher tokenization of the prompt and completion texts with byte offsets, teacher forward on the teacher tokens,
  student forward, the ULD loss: per sequence byte-offset alignment, probability merging, a sort of each
  full-vocabulary probability row on both sides, L1; then the backward), gradient clipping, AdamW, scheduler,
  zero_grad. Not in the GOLD arm: the student-side tokenization (its collator's work) and `Trainer.train()`'s
  logging, callbacks and checkpointing. The project arm is `optimizer_step` whole (its one host sync of the loss
  values and gradient norm and its non-finite-step check included).
- The losses differ by design (exact forward KL over re-tokenization groups vs ULD's L1 between sorted probability
  vectors): the comparison is of the cost of a training step, not of equal arithmetic. Printed: TRL GOLD / project.
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


def import_gold(path: str | None):
    "TRL's `GOLDConfig`, `GOLDTrainer` and the byte-offset helpers its ChatML collator uses; None with the reason when not importable."
    if path and path not in sys.path: sys.path.insert(0, path)
    try:
        from trl.experimental.gold import GOLDConfig, GOLDTrainer
        from trl.experimental.utils import encode_with_byte_offsets, pad_byte_offsets
    except ImportError as e:
        print(f"cross tokenizer vs GOLDTrainer: skipped, `trl.experimental.gold` is not importable ({e}); it needs TRL >= 1.16 "
              f"installed apart from the project (`pip install --no-deps --target /tmp/trl_site trl==1.16.0 accelerate`, then --trl-path).")
        return None
    return GOLDConfig, GOLDTrainer, encode_with_byte_offsets, pad_byte_offsets


def block_texts(batch, s_tok) -> list[str]:
    "The text of each student block of a project batch (GPT-2-style byte-level decoding, no clean-up): the texts both arms train on."
    return [s_tok.decode(ids[m.bool()].tolist(), skip_special_tokens=False, clean_up_tokenization_spaces=False)
            for ids, m in zip(batch['s_ids'], batch['s_mask'])]


def gold_batch(texts: list[str], s_tok, encode_with_byte_offsets, pad_byte_offsets, dev) -> dict:
    """The student batch GOLD's `DataCollatorForChatML` emits for prompt/completion pairs, built from plain `texts`
    (no chat template: the student tokenizer has none): prompt = the text's first student token, completion = the rest,
    the student's EOS appended; ids and byte offsets from TRL's own `encode_with_byte_offsets`, offsets
    completion-relative, prompt positions labelled -100, left padding, and the original prompt/completion texts."""
    rows = []
    for text in texts:
        [(ids, offs)] = encode_with_byte_offsets(s_tok.backend_tokenizer, [text], add_special_tokens=False)
        b, n = text.encode('utf-8'), offs[0][1]                # the first token is the prompt
        ids = ids + [s_tok.eos_token_id]
        offs = [(0, 0)] + [(x - n, y - n) for x, y in offs[1:]] + [(len(b) - n, len(b) - n)]
        rows.append((ids, offs, b[:n].decode('utf-8'), b[n:].decode('utf-8')))
    L = max(len(r[0]) for r in rows)
    pad = lambda xs, v: [v] * (L - len(xs)) + list(xs)
    return {'input_ids': torch.tensor([pad(r[0], s_tok.pad_token_id) for r in rows], device=dev),
            'attention_mask': torch.tensor([pad([1] * len(r[0]), 0) for r in rows], device=dev),
            'labels': torch.tensor([pad([-100] + r[0][1:], -100) for r in rows], device=dev),
            'prompts': torch.tensor([r[0][:1] for r in rows], device=dev),
            'prompt_attention_mask': torch.ones(len(rows), 1, dtype=torch.long, device=dev),
            'byte_offsets': torch.stack([pad_byte_offsets(r[1], L, padding_side='left') for r in rows]).to(dev),
            'original_prompt_text': [r[2] for r in rows], 'original_completion_text': [r[3] for r in rows]}


def bench_cross(a, gold) -> dict:
    "Cross tokenizer: the project's default KD method against `GOLDTrainer`'s ULD loss, same student weights and texts."
    GOLDConfig, GOLDTrainer, encode_with_byte_offsets, pad_byte_offsets = gold
    from datasets import Dataset
    from kaggle_distill.config import LossConfig
    from step_overhead import build, interleave, summary, ratios, print_table, project_step
    method = a.kd_method or LossConfig().kd_method
    extra = ['loss.weights.lm=0', 'loss.weights.kd=1', 'loss.temperature.start=1', 'loss.temperature.end=1']
    run, opt, sched, scaler, batches = build('demo', a.device, extra, kd_method=method)
    dev = run.device
    student2 = copy.deepcopy(run.student)                 # GOLD trains its own copy: same weights, same architecture
    out = Path(tempfile.mkdtemp(prefix='vs_gold_'))
    run.t_tok.save_pretrained(out / 'teacher_tokenizer')  # GOLD loads the teacher tokenizer by name or path: a local copy
    if run.s_tok.pad_token is None: run.s_tok.pad_token = run.s_tok.eos_token
    args = GOLDConfig(output_dir=str(out), use_uld_loss=True, teacher_tokenizer_name_or_path=str(out / 'teacher_tokenizer'),
                      lmbda=0.0, uld_student_temperature=1.0, uld_teacher_temperature=1.0,
                      per_device_train_batch_size=len(batches[0]['s_ids']), learning_rate=run.cfg.train.lr,
                      max_grad_norm=run.cfg.train.grad_clip, report_to=[], use_cpu=dev.type == 'cpu', bf16=False, fp16=False,
                      max_length=None, logging_steps=10 ** 9, save_strategy='no', dataset_kwargs={'skip_prepare_dataset': True})
    tr = GOLDTrainer(model=student2, teacher_model=run.teacher, args=args, processing_class=run.s_tok, data_collator=lambda x: x,
                     train_dataset=Dataset.from_dict({'text': ['x']}))  # not read: batches are given
    assert not getattr(tr.model, 'is_activation_checkpointing', False)  # SFTConfig's default is applied only by Trainer.train()
    tr.create_optimizer_and_scheduler(num_training_steps=run.total)
    tr.current_gradient_accumulation_steps = 1          # what Trainer's own loop sets before training_step
    texts = [block_texts(b, run.s_tok) for b in batches]
    gold_batches = [gold_batch(t, run.s_tok, encode_with_byte_offsets, pad_byte_offsets, dev) for t in texts]
    def gold_step(b):
        tr.model.train()
        tr.training_step(tr.model, dict(b))               # GOLD's _prepare_inputs (off-policy buffer) + compute_loss + backward
        torch.nn.utils.clip_grad_norm_(tr.model.parameters(), args.max_grad_norm)
        tr.optimizer.step(); tr.lr_scheduler.step(); tr.optimizer.zero_grad(set_to_none=True)
    k = iter(range(10 ** 9)); j = iter(range(10 ** 9))
    arms = {'project': lambda: project_step(run, opt, sched, scaler, batches[next(k) % len(batches)]),
            'trl_gold': lambda: gold_step(gold_batches[next(j) % len(gold_batches)])}
    s = summary(interleave(arms, dev, a.repeats, a.warmup))
    r = ratios(s, {'TRL GOLD / project': (['trl_gold'], ['project'])})
    g = gold_batches[0]
    print_table(f"cross tokenizer ({method} vs GOLD ULD), student {tuple(batches[0]['s_ids'].shape)} project / "
                f"{tuple(g['input_ids'].shape)} GOLD, teacher {tuple(batches[0]['t_ids'].shape)}, vocab {len(run.s_tok)} -> {len(run.t_tok)}", s)
    for label, v in r.items(): print(f"  {label}: cpu {v['cpu']:.3f}, wall {v['wall']:.3f}")
    return {'summary': s, 'ratios': r, 'kd_method': method}


def bench_same(a, gkd) -> dict:
    "Same tokenizer: the project's `same_tokenizer` KD against `GKDTrainer`, same student weights and batches."
    GKDConfig, GKDTrainer = gkd
    from datasets import Dataset
    from step_overhead import build, interleave, summary, ratios, print_table, project_step, fp16_peak, step_flops
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
    s = summary(interleave(arms, dev, a.repeats, a.warmup))
    r = ratios(s, {'project / TRL GKD': (['project'], ['trl_gkd'])})
    print_table(f"same tokenizer, {tuple(batches[0]['s_ids'].shape)} tokens, vocab {len(run.s_tok)}", s)
    for label, v in r.items(): print(f"  {label}: cpu {v['cpu']:.3f}, wall {v['wall']:.3f}")
    if (peak := fp16_peak(dev)):
        fl = step_flops(run, batches[0]) / s['project']['wall']['median']
        print(f"  project: {fl / 1e12:.2f} TFLOP/s = {100 * fl / peak:.1f}% of the fp16 peak")
    return {'summary': s, 'ratios': r}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split('\n', 1)[1])
    p.add_argument('--trl-path', help='folder of a separate TRL install (pip install --target); default: the environment')
    p.add_argument('--device', default='cpu')
    p.add_argument('--cases', nargs='+', default=['same'], choices=['same', 'cross'],
                   help="'same': vs GKDTrainer, same tokenizer; 'cross': vs GOLDTrainer, cross tokenizer")
    p.add_argument('--kd-method', help="cross case: the project's KD method (default: the library's default, LossConfig().kd_method)")
    p.add_argument('--repeats', type=int, default=5, help='timed steps per arm')
    p.add_argument('--warmup', type=int, default=1, help='untimed steps per arm before the timed ones')
    p.add_argument('--threads', type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    import os
    print(f'torch {torch.__version__}, device {a.device}, threads {a.threads}, load average {os.getloadavg()}')
    res = {}
    if 'same' in a.cases and (gkd := import_trl(a.trl_path)) is not None: res['same'] = bench_same(a, gkd)
    if 'cross' in a.cases and (gold := import_gold(a.trl_path)) is not None: res['cross'] = bench_cross(a, gold)
    return res or None


if __name__ == '__main__':
    main()
