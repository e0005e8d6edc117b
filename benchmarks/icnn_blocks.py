"""Cost per point of an ICNN's derivatives against the number of points evaluated at once (CPU).

:meth:`wgfinfer.nn.icnn.DenseICNN.derivatives` keeps ``(n, d, h)`` Jacobians for the Hessians (the
maps' log-determinants); beyond a few hundred points they fall out of the caches, so on a CPU the
points are evaluated in blocks of :data:`wgfinfer.nn.icnn.CPU_BLOCK_SIZE`.  This script times the
block sizes, calling the private one-block method so that the block size is the one asked for,
for the gradient (order 1: pushing particles) and the Hessian (order 2: densities), with the
default widths (64, 64), in process CPU seconds (median of repeats) per 1000 points.

Results go to ``--out`` (default: the current directory) as ``icnn_blocks.json`` and
``icnn_blocks.md``; nothing tracked is written unless ``--docs`` names a file.

    OMP_NUM_THREADS=1 python benchmarks/icnn_blocks.py --dims 8 32 --points 8192
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import add_output_arguments, machine, markdown_table, publish  # noqa: E402

from wgfinfer.nn.icnn import CPU_BLOCK_SIZE, DenseICNN  # noqa: E402

BLOCKS = (128, 256, 512, 1024, 2048, 8192)


def time_blocks(dim: int, n_points: int, block: int, order: int, repeats: int) -> float:
    """Median process CPU milliseconds per 1000 points of ``order`` derivatives in blocks of ``block``."""
    net = DenseICNN(dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = torch.randn(n_points, dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            start = time.process_time()
            for part in x.split(block):
                net._derivatives(part, order)
            times.append(time.process_time() - start)
    return 1000.0 * statistics.median(times) * 1000.0 / n_points


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dims", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--points", type=int, default=8192)
    parser.add_argument("--blocks", type=int, nargs="+", default=list(BLOCKS))
    parser.add_argument("--repeats", type=int, default=3)
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    rows = []
    for dim in args.dims:
        for order in (1, 2):
            for block in args.blocks:
                ms = time_blocks(dim, args.points, block, order, args.repeats)
                rows.append({"dim": dim, "order": order, "block": block, "cpu_ms_per_1000": ms})
                print(f"d={dim} order={order} block={block}: {ms:.2f} ms CPU per 1000 points", flush=True)
    header = ["d", "derivatives", "block", "CPU ms / 1000 points"]
    kinds = {1: "gradient", 2: "Hessian"}
    table = markdown_table(
        header, [[r["dim"], kinds[r["order"]], r["block"], f"{r['cpu_ms_per_1000']:.2f}"] for r in rows]
    )
    body = (
        "### ICNN derivatives by block size (`benchmarks/icnn_blocks.py`)\n\n"
        f"Machine: {machine('cpu')}.  {args.points} points, widths (64, 64), float64, median of "
        f"{args.repeats}; the library's block is {CPU_BLOCK_SIZE}.\n\n" + table
    )
    print(body)
    if not args.no_write:
        args.out.mkdir(parents=True, exist_ok=True)
        saved = {"rows": rows, "machine": machine("cpu")}
        (args.out / "icnn_blocks.json").write_text(json.dumps(saved, indent=1))
        publish("icnn_blocks", body, args.out, args.docs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
