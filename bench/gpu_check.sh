#!/usr/bin/env bash
# The first GPU machine's checks, prepared: one script, under 8 minutes on one GPU, nothing from the hub.
#
#   bash bench/gpu_check.sh [OUT.json]          # default gpu_check.json
#   GPU_CHECK_DRY_RUN=1 bash bench/gpu_check.sh # print the commands and their time limits, run nothing
#
# 1. the `#| cuda` cells of the notebooks (nbdev_test --flags cuda on the notebooks that have one): the dtype policy on
#    the real card, the fp16 teacher guard under real CUDA autocast, CUDA checkpoints, evaluation on the GPU;
# 2. the rehearsal of the `t4` preset at its real shapes (bench/rehearse.py: random weights of the reference pair, fp16
#    teacher and autocast as on a T4), memory capped at 15 GB with torch.cuda.set_per_process_memory_fraction as a T4
#    stand-in: its step time, tokens/s, peak memory against the memory model (kaggle_distill.budget);
# 3. bench/step_overhead.py --device cuda: the step machinery's overhead, the achieved share of the fp16 peak, the KD term.
# It writes one JSON of figures (each part's exit status, seconds and results) and exits non-zero if a part failed.
# Without a CUDA GPU it stops at once (exit 2), saying so.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu_check.json}
PY=${PYTHON:-python}
export HF_HUB_OFFLINE=1 TQDM_DISABLE=1
NOTEBOOKS=$(grep -l '#| cuda' nbs/*.ipynb | xargs -n1 basename | paste -sd'|')     # e.g. 02_models.ipynb|21_checkpoint.ipynb
# part: name, time limit (s), command. Limits sum to 450 s, under the 8 minutes with the start-up.
PARTS=(
  "notebooks|150|nbdev_test --path nbs --flags cuda --n_workers 1 --file_re"
  "rehearsal|200|$PY bench/rehearse.py --preset t4 --device cuda --memory-cap-gb 15 --steps 2 --json"
  "step_overhead|100|$PY bench/step_overhead.py --device cuda --shapes demo p100 kd retok --repeats 3 --json"
)
if [[ -n "${GPU_CHECK_DRY_RUN:-}" ]]; then
  for p in "${PARTS[@]}"; do IFS='|' read -r name limit cmd <<<"$p"; echo "$name (limit ${limit} s): $cmd"; done
  echo "notebooks with cuda cells: $NOTEBOOKS"; exit 0
fi
if ! $PY -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu_check: no CUDA GPU is visible to torch ($($PY -c 'import torch; print(torch.__version__)' 2>&1 | tail -1)); run it on a GPU machine. Nothing was run." >&2
  exit 2
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
t_all=$(date +%s)
for p in "${PARTS[@]}"; do
  IFS='|' read -r name limit cmd <<<"$p"
  t0=$(date +%s)
  case $name in
    notebooks) timeout "$limit" $cmd "^($NOTEBOOKS)\$" >"$tmp/$name.log" 2>&1 ;;
    *) timeout "$limit" $cmd "$tmp/$name.json" >"$tmp/$name.log" 2>&1 ;;
  esac
  echo "$? $(( $(date +%s) - t0 ))" >"$tmp/$name.rc"
  echo "gpu_check: $name exit $(cut -d' ' -f1 "$tmp/$name.rc") in $(cut -d' ' -f2 "$tmp/$name.rc") s" >&2
done
$PY - "$tmp" "$OUT" "$t_all" <<'EOF'
import json, sys, time, torch
from pathlib import Path
tmp, out, t_all = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
res = {'gpu': torch.cuda.get_device_name(0), 'capability': list(torch.cuda.get_device_capability(0)), 'torch': torch.__version__,
       'total_memory_gb': round(torch.cuda.get_device_properties(0).total_memory / 1e9, 2), 'parts': {}}
for name in ('notebooks', 'rehearsal', 'step_overhead'):
    rc, s = (tmp / f'{name}.rc').read_text().split()
    part = {'exit': int(rc), 's': int(s), 'timed_out': int(rc) == 124, 'log_tail': (tmp / f'{name}.log').read_text()[-3000:]}
    if (tmp / f'{name}.json').exists(): part['result'] = json.loads((tmp / f'{name}.json').read_text())
    res['parts'][name] = part
r = res['parts']['rehearsal'].get('result', {})
res['figures'] = {k: r.get(k) for k in ('ok', 'step_s', 'tokens_per_s', 'peak_memory_gb', 'predicted_here_gb', 'memory_model_error',
                                        'predicted_t4_peak_gb')}
res['ok'] = all(p['exit'] == 0 for p in res['parts'].values())
res['wall_s'] = round(time.time() - t_all, 1)
out.write_text(json.dumps(res, indent=1, default=str))
print(json.dumps({'ok': res['ok'], 'wall_s': res['wall_s'], **res['figures']}, indent=1))
sys.exit(0 if res['ok'] else 1)
EOF
