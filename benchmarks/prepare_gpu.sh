#!/usr/bin/env bash
# Prepare what benchmarks/gpu.sh needs on the GPU machine, which has no network: run once here, in
# the repository root. Downloads the opacus and torchattacks wheels into .whl/ and copies the
# Fashion-MNIST IDX files into .data/fashion-mnist/; both folders are git-ignored locally
# (.git/info/exclude) and travel to the device with `carry: [".whl", ".data"]`.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .git/info .whl .data/fashion-mnist
for p in /.whl/ /.data/; do grep -qxF "$p" .git/info/exclude 2>/dev/null || echo "$p" >> .git/info/exclude; done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any \
    -d .whl opacus==1.6.0 torchattacks==3.5.1
src=${FMNIST_DIR:-/usr/share/datasets/fashion-mnist}
cp "$src"/*-ubyte.gz .data/fashion-mnist/
ls -la .whl .data/fashion-mnist
