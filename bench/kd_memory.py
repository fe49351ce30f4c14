"""Peak memory of `kaggle_distill.divergence.divergence`: unchunked vs chunked, forward and forward+backward.

    python bench/kd_memory.py --positions 2048 --vocab 151936            # the P100 preset's scale, CPU
    python bench/kd_memory.py --positions 2048 --vocab 151936 --device cuda

Runs in a fresh process. On CPU the measure is the peak resident memory above what the process held once
the inputs existed (VmHWM after resetting it through /proc/self/clear_refs, minus VmRSS at that moment;
glibc is told to return freed buffers at once, which also makes the CPU timings pessimistic); on CUDA it is
torch.cuda.max_memory_allocated above the allocated memory at that moment. Forward-only runs under
torch.no_grad (evaluation); forward+backward gives the student logits a gradient (training).
"""
from __future__ import annotations
import argparse, json, os, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _kib(field: str) -> int:
    "A memory field of /proc/self/status, in KiB."
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(field + ':'): return int(line.split()[1])
    raise RuntimeError(f'{field} not in /proc/self/status (this measure needs Linux)')


def _reset_peak():
    "Reset VmHWM to the current RSS (Linux >= 4.0)."
    Path('/proc/self/clear_refs').write_text('5')


def _measure(a, mode: str, phase: str) -> dict:
    "Peak memory above the inputs of one (mode, phase) setting, in this process."
    import torch
    from kaggle_distill.divergence import divergence
    torch.manual_seed(0)
    dev, dt = torch.device(a.device), getattr(torch, a.dtype)
    s = torch.empty(a.positions, a.vocab, dtype=dt, device=dev)
    t = torch.empty_like(s)
    for i in range(0, a.positions, 64):  # fill without a full-size float32 temporary
        s[i:i + 64] = torch.randn(min(64, a.positions - i), a.vocab, device=dev) * 3
        t[i:i + 64] = torch.randn(min(64, a.positions - i), a.vocab, device=dev) * 3
    s.requires_grad_(phase == 'backward')
    chunk = None if mode == 'naive' else a.chunk
    if dev.type == 'cuda':
        torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
    else:
        _reset_peak(); base = _kib('VmRSS') * 1024
    t0 = time.perf_counter()
    if phase == 'backward':
        loss = divergence(s, t, a.kind, a.T, top_k=a.top_k, chunk_size=chunk)
        loss.backward()
    else:
        with torch.no_grad(): loss = divergence(s, t, a.kind, a.T, top_k=a.top_k, chunk_size=chunk)
    if dev.type == 'cuda': torch.cuda.synchronize(); peak = torch.cuda.max_memory_allocated()
    else: peak = _kib('VmHWM') * 1024
    return {'mib': round((peak - base) / 2**20, 1), 'seconds': round(time.perf_counter() - t0, 2), 'loss': loss.item()}


def child(a) -> dict:
    "Every (mode, phase) setting, one after the other in this process (the peak is reset before each)."
    sys.path.insert(0, str(ROOT))
    out = {}
    for mode in ('naive', 'chunked'):
        res = {}
        for phase in ('forward', 'backward'):
            r = _measure(a, mode, phase)
            res[f'{phase}_mib'], res[f'{phase}_s'], res['loss'] = r['mib'], r['seconds'], r['loss']
        out[mode] = res
    return out


def run(a) -> dict:
    "Run `child` in a fresh process whose allocator returns freed buffers to the OS at once."
    settings = {k: v for k, v in vars(a).items() if k not in ('child', 'json')}
    args = [f'--{k.replace("_", "-")}={v}' for k, v in settings.items()]
    # a fixed mmap threshold makes glibc hand every large buffer back to the OS when it is freed, so the
    # resident-memory peak follows what is really alive instead of what the heap keeps for reuse
    env = {**os.environ, 'MALLOC_MMAP_THRESHOLD_': '1048576'}
    p = subprocess.run([sys.executable, __file__, '--child', *args], capture_output=True, text=True, env=env)
    if p.returncode: raise RuntimeError(f'measurement failed:\n{p.stderr}')
    size = {'float16': 2, 'bfloat16': 2, 'float32': 4}[a.dtype]
    return {'settings': settings, 'input_mib': round(a.positions * a.vocab * size / 2**20, 1),
            'fp32_copy_mib': round(a.positions * a.vocab * 4 / 2**20, 1), **json.loads(p.stdout)}


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="The defaults (2,048 positions x 151,936 vocabulary, float16 logits, chunk 256, forward_kl at T=2, CPU)\n"
               "reproduce the README's row 'KD peak memory': unchunked 6,235 MiB, chunked 1,406 MiB forward+backward,\n"
               "779 MiB forward only. The vocabulary is the reference teacher's (Qwen3, 151,936 rows); the logits are\n"
               "random, so no model, tokenizer or corpus is involved.")
    p.add_argument('--positions', type=int, default=2048, help='aligned positions (rows)')
    p.add_argument('--vocab', type=int, default=151936, help='vocabulary size (columns)')
    p.add_argument('--chunk', type=int, default=256, help='chunk_size of the chunked run')
    p.add_argument('--dtype', default='float16', choices=('float16', 'bfloat16', 'float32'), help='dtype of the logits')
    p.add_argument('--kind', default='forward_kl', help='divergence kind')
    p.add_argument('--T', type=float, default=2.0, help='temperature')
    p.add_argument('--top-k', type=int, default=0, help='top-k with tail bucket; 0 = full vocabulary')
    p.add_argument('--device', default='cpu', help="'cpu' or 'cuda'")
    p.add_argument('--json', action='store_true', help='print only the JSON result')
    p.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child: print(json.dumps(child(a))); return
    r = run(a)
    if a.json: print(json.dumps(r)); return
    print(f"{a.positions} x {a.vocab} {a.dtype} logits ({r['input_mib']} MiB each; one float32 copy = {r['fp32_copy_mib']} MiB), "
          f"{a.kind}, T={a.T}, top_k={a.top_k}, device={a.device}")
    print(f"{'':>22} {'forward MiB':>12} {'fwd+bwd MiB':>12} {'forward s':>10} {'fwd+bwd s':>10}")
    for mode, lab in (('naive', 'unchunked'), ('chunked', f'chunk_size={a.chunk}')):
        m = r[mode]
        print(f"{lab:>22} {m['forward_mib']:>12} {m['backward_mib']:>12} {m['forward_s']:>10} {m['backward_s']:>10}")


if __name__ == '__main__':
    main()
