#!/usr/bin/env bash
# Full-protocol benchmarks for one GPU call (≤ 8 minutes on an H200), JSON + Markdown into $OUT.
#
# Prepare once here with benchmarks/prepare_gpu.sh, then run on the device machine with
# carry [".whl", ".data"] and the command `bash benchmarks/gpu.sh`. What it measures (issue
# targets; the independent protocol: 3 fresh ConvNet-3 (GroupNorm) × 300 epochs, SGD lr 0.01,
# no augmentation, full Fashion-MNIST test set):
#   1. DP Fashion-MNIST IPC 10 with the statistics bank, ε = 1 and 8 (δ = 1e-5), product
#      defaults (prototype share 0.8 with its DP sub-class centres, q from the calibration rule,
#      uncapped: --batch-real 6000 = a whole class, compute is cheap on the GPU), R = 100, K = 2 000,
#      and a random real subset
#      (dp_bank_fmnist_gpu.{json,md});
#   2. the digits card command `securedc condense --epsilon 8 --adv-eps 8/255` end to end on
#      CUDA (card_digits.log, its report.json).
# Every step has its own timeout so a slow step cannot eat the others' time.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target /tmp/securedc . || exit 1
export PYTHONPATH=/tmp/securedc:${PYTHONPATH}
DATA=.data/fashion-mnist
[ -d "$DATA" ] || DATA=/usr/share/datasets/fashion-mnist
python3 - <<'PY' | tee "$OUT/environment.txt"
import platform, torch, securedc
print(platform.node(), platform.machine(), "torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-", "securedc", securedc.__version__)
PY
start=$(date +%s)
timeout 300 python3 benchmarks/dp_bank_fmnist.py --dataset "idx:$DATA" --epsilons 1 8 --releases 100 \
    --batch-real 6000 --iterations 2000 --eval-models 3 --eval-epochs 300 --random-baseline --device cuda \
    --out "$OUT/dp_bank_fmnist_gpu" 2>&1 | tee "$OUT/dp_bank_fmnist_gpu.log"
echo "dp_bank_fmnist: $(( $(date +%s) - start )) s"
start=$(date +%s)
timeout 150 python3 -m securedc condense --epsilon 8 --adv-eps 8/255 --device cuda --out /tmp/card \
    > "$OUT/card_digits.log" 2>&1
echo "card exit $? in $(( $(date +%s) - start )) s" | tee -a "$OUT/card_digits.log"
cp /tmp/card/*.report/report.json "$OUT/card_digits_report.json" 2>/dev/null || true
ls -la "$OUT"
