"""Run the reference DM code (Zhao & Bilen, WACV 2023) unmodified and snapshot its synthetic set.

This file contains none of the reference's code. It imports ``main_DM.py`` from a copy of the
reference repository (https://github.com/VICO-UoE/DatasetCondensation; ``main_DM.py``,
``utils.py``, ``networks.py``) given by ``--ref`` and calls its ``main()`` as is. The only hook is
a wrapper around the ``get_network`` name inside ``main_DM``: the training loop calls it once at
the start of every iteration ``it`` (after ``it`` updates of ``image_syn``); the wrapper reads
``it``, ``image_syn`` and ``label_syn`` from the caller's frame, saves them (safetensors, the
reference's normalised space ``(x - mean) / std``) at the requested iterations, records the wall
time since iteration 0 started (saving time excluded), and stops the run after the last snapshot.

Compatibility shim (values unchanged): on current PyTorch (checked with 2.14) the reference
crashes at its first ``crop`` augmentation on 1-channel data: ``DiffAugment``'s crop returns a
``[N, 1, H, W]`` tensor with strides ``(HW, 1, W, 1)``, which is both contiguous and
channels-last, convolutions then return channels-last activations and ``ConvNet.embed``'s
``out.view(N, -1)`` raises "view size is not compatible with input tensor's size and stride".
The runner therefore wraps the ``DiffAugment`` name inside ``main_DM`` and re-strides such an
output to the standard layout (a copy of ~50 k floats, only when the strides are not standard).

The reference's own evaluation is switched off with ``--num_eval 0`` (no models are trained
inside the timed loop; snapshots are scored afterwards by ``side_by_side_reference.py``); all
other flags are main_DM.py's, passed after ``--``.

Usage (from a temp dir, never inside this repository):
    python benchmarks/reference_runner.py --ref /tmp/refdm --out /tmp/refdm/snaps \\
        --snapshots 200 500 1000 --threads 2 -- --dataset FashionMNIST --model ConvNet --ipc 10 \\
        --init real --Iteration 1000 --batch_real 64 --num_exp 1 --num_eval 0 \\
        --data_path /tmp/refdm/data --save_path /tmp/refdm/result

Writes ``OUT/ref-<it>.safetensors`` (``image_syn``, ``label_syn``) and ``OUT/timings.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file


class _Done(Exception):
    pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ref", required=True, help="directory holding the reference's main_DM.py, utils.py, networks.py")
    ap.add_argument("--ref-commit", default="", help="commit of the reference copy (recorded only)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--snapshots", type=int, nargs="+", default=[200, 500, 1000])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("main_dm_args", nargs=argparse.REMAINDER, help="after --: main_DM.py's own flags")
    args = ap.parse_args()
    dm_args = args.main_dm_args[1:] if args.main_dm_args[:1] == ["--"] else args.main_dm_args
    if "--num_eval" not in dm_args:
        dm_args += ["--num_eval", "0"]
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(Path(args.ref).resolve()))
    import main_DM  # noqa: PLC0415  (the reference's script, imported unmodified)

    original = main_DM.get_network
    wanted, last = set(args.snapshots), max(args.snapshots)
    state = {"t0": None, "excluded": 0.0}
    rows: list[dict] = []

    def get_network(*a, **kw):
        caller = sys._getframe(1).f_locals
        it = caller["it"]
        now = time.perf_counter()
        if state["t0"] is None:
            state["t0"] = now
        if it in wanted:
            secs = now - state["t0"] - state["excluded"]
            path = out / f"ref-{it}.safetensors"
            save_file({"image_syn": caller["image_syn"].detach().cpu().contiguous(),
                       "label_syn": caller["label_syn"].detach().cpu().contiguous()}, str(path))
            rows.append({"iterations": it, "seconds": secs, "file": path.name})
            print(f"[runner] reference it {it}: {secs:.1f} s", flush=True)
            state["excluded"] += time.perf_counter() - now
            if it == last:
                raise _Done
        return original(*a, **kw)

    original_aug = main_DM.DiffAugment

    def diff_augment(*a, **kw):
        y = original_aug(*a, **kw)
        standard = torch.empty(0).new_empty(y.shape).stride() if y.dim() else ()
        return y if y.stride() == standard else y.clone(memory_format=torch.contiguous_format)

    main_DM.get_network = get_network
    main_DM.DiffAugment = diff_augment
    sys.argv = ["main_DM.py", *dm_args]
    t_start = time.perf_counter()
    try:
        main_DM.main()
    except _Done:
        pass
    (out / "timings.json").write_text(json.dumps({
        "reference": "VICO-UoE/DatasetCondensation main_DM.py", "commit": args.ref_commit,
        "main_dm_args": dm_args, "threads": args.threads, "torch": torch.__version__,
        "machine": f"{platform.machine()}, {args.threads} threads, {platform.processor() or 'cpu'}",
        "clock": "wall seconds from the start of iteration 0 (after data loading and real-image init); "
                 "snapshot saving excluded",
        "total_process_seconds": time.perf_counter() - t_start,
        "shims": ["DiffAugment output re-strided to the standard NCHW layout when its strides are not "
                  "standard (1-channel crop on current PyTorch; values unchanged)"],
        "snapshots": rows,
    }, indent=2))


if __name__ == "__main__":
    main()
