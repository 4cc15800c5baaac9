"""Where an NBS or refiner run's inference time goes: loss profile (snapshot bank; NBS only), backbone,
PatchCore prior (nearest-neighbour search), the rest of the context and the predictor head (the
projection per context part, the resize to the grid, maps, smoothing), in ms per image, next to the
whole `predict` on the same batches; optionally next to a PatchCore run's whole predict.

    .venv/bin/python benchmarks/nbs_inference_parts.py RUN --data ../shared/data/magnetic_tile
    .venv/bin/python benchmarks/nbs_inference_parts.py RUN --data DIR --patchcore PATCHCORE_RUN   # plus the ratio
    PYTHONPATH=OLD/src .venv/bin/python benchmarks/nbs_inference_parts.py RUN --data DIR --patchcore PATCHCORE_RUN --no-parts
    .venv/bin/python benchmarks/nbs_inference_parts.py --from-results benchmarks/results/nbs_inference_parts-DATE.jsonl

The parts are timed one after another on the same batches (batch 1 and 8 by default, `--batches`;
`--threads` torch threads, default 1) of the first `--images` test images, already decoded, in CPU
time of the process (robust to other work on a busy host) and wall time; their sum is close to the
whole predict, which is what `rlad test` reports as ms_per_image less the image loading. With
`--patchcore`, the run's whole predict and the PatchCore run's are timed alternating in this one
process (the same load for both; the fastest of `--rounds` rounds kept) and their ratio reported;
`--no-parts` times only those, for code without the parts' API (the baseline of a change). Raw rows
go to benchmarks/results/nbs_inference_parts-DATE.jsonl, the table to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import _common  # noqa: E402

WHOLE = "whole predict (for comparison)"
SUM = "sum of the parts"
PROFILE = "loss profile (snapshot bank)"
PRIOR = "PatchCore prior (nearest neighbours)"
CONTEXT = "context assembly"
REST = "rest of the context (prior standardised)"
HEAD = "predictor head (projection per part, resize to the grid, maps, smoothing)"
PATCHCORE = "PatchCore run's whole predict (alternating with the next row)"
WHOLE_ALTERNATING = "this run's whole predict (alternating with PatchCore)"
RATIO = "ratio: this run / PatchCore (the fastest rounds; not ms)"


def measure(args, results: _common.Results, parser: argparse.ArgumentParser) -> None:
    import torch

    from rlad.data.folder import discover
    from rlad.data.transforms import load_samples
    from rlad.errors import ConfigError, DataError
    from rlad.models.base import FitData
    from rlad.workflows.detection import load_run

    torch.set_num_threads(args.threads)
    try:
        model = load_run(args.run).model
        samples = list(discover(args.data).test)[: args.images]
    except (ConfigError, DataError) as exc:
        parser.error(str(exc))
    if getattr(model, "head", None) is None or getattr(model, "encoder", None) is None:
        parser.error(f"{args.run}: not an nbs or refine run")
    images, _ = load_samples(samples, model.config.image_size, desc="loading")
    encoder = model.encoder
    has_profile = getattr(model, "bank", None) is not None
    if args.profile_precision:
        if not has_profile:
            parser.error(f"--profile-precision: {args.run} has no loss profile (not an nbs run)")
        model.config.profile_precision = args.profile_precision
        results.note(profile=str(model.profile_dtype()).removeprefix("torch."))
    import rlad

    results.note(code=_common.portable(str(Path(rlad.__file__).resolve().parents[1])),  # which src ran (a baseline's?)
                 run=_common.portable(str(Path(args.run).resolve())), method=model.name, data=args.data.name,
                 images=len(images), threads=args.threads, batches=args.batches,
                 load_1min_before=round(os.getloadavg()[0], 1))
    for batch_size in args.batches if args.parts else []:
        cpu: dict[str, float] = {}
        wall: dict[str, float] = {}

        def timed(name, work):
            started, started_cpu = time.perf_counter(), time.process_time()
            out = work()
            wall[name] = wall.get(name, 0.0) + time.perf_counter() - started
            cpu[name] = cpu.get(name, 0.0) + time.process_time() - started_cpu
            return out

        with torch.no_grad():
            model.predict(FitData.to_tensor(images[:batch_size]))  # warm-up: allocations, primitive caches
            for i in range(0, len(images), batch_size):
                batch = FitData.to_tensor(images[i : i + batch_size]).float()
                size = tuple(batch.shape[-2:])
                parts = []
                if has_profile:
                    parts.append(timed(PROFILE, lambda: model.loss_profile(batch)))
                levels = timed("backbone", lambda: encoder._levels(batch))
                timed(PRIOR, lambda: encoder._prior_maps(levels, size))
                # The context parts again, prior included; the prior's share is taken off below.
                parts += timed(CONTEXT, lambda: encoder._parts(levels, size))
                timed(HEAD, lambda: model.head.from_parts(parts, size))
                timed(WHOLE, lambda: model.predict(batch))
        for seconds in (cpu, wall):
            seconds[CONTEXT] -= seconds[PRIOR]
            seconds[REST] = seconds.pop(CONTEXT)
            seconds[SUM] = sum(v for k, v in seconds.items() if k != WHOLE)
        for name in [n for n in cpu if n not in (WHOLE, SUM)] + [SUM, WHOLE]:
            results.add({"batch": batch_size, "part": name,
                         "cpu_ms_per_image": round(1000 * cpu[name] / len(images), 2),
                         "ms_per_image": round(1000 * wall[name] / len(images), 2)})
    if args.patchcore:
        try:
            patchcore = load_run(args.patchcore).model
        except (ConfigError, DataError) as exc:
            parser.error(str(exc))
        results.note(patchcore_run=_common.portable(str(Path(args.patchcore).resolve())))
        side_by_side(model, patchcore, images, args, results)
    results.note(load_1min_after=round(os.getloadavg()[0], 1))


def side_by_side(model, patchcore, images, args, results: _common.Results) -> None:
    """Whole predict of the run and of a PatchCore run on the same decoded images, alternating in
    `--rounds` rounds in this one process (both see the same load), the fastest round of each kept;
    their ratio is the figure robust to a busy host."""
    from rlad.models.base import FitData

    for batch_size in args.batches:
        batches = [FitData.to_tensor(images[i : i + batch_size]).float() for i in range(0, len(images), batch_size)]
        best = _common.fastest_alternating({"patchcore": patchcore, "run": model}, batches, args.rounds)
        for name, label in (("patchcore", PATCHCORE), ("run", WHOLE_ALTERNATING)):
            results.add({"batch": batch_size, "part": label, "cpu_ms_per_image": round(1000 * best[name][0] / len(images), 2),
                         "ms_per_image": round(1000 * best[name][1] / len(images), 2)})
        results.add({"batch": batch_size, "part": RATIO, "cpu_ms_per_image": round(best["run"][0] / best["patchcore"][0], 3),
                     "ms_per_image": round(best["run"][1] / best["patchcore"][1], 3)})


def render(results: _common.Results) -> str:
    from rlad.tables import markdown_table

    meta = results.meta
    rows = _common.ok_rows(results.rows)
    batches = sorted({row.get("batch", 8) for row in rows})
    table = []
    for part in dict.fromkeys(row["part"] for row in rows):
        line = {"part": part}
        for batch in batches:
            for row in rows:
                if row["part"] == part and row.get("batch", 8) == batch:
                    ratio = part == RATIO  # shown to two decimals, not as milliseconds
                    line[f"cpu_ms_b{batch}"] = f"{row['cpu_ms_per_image']:.2f}" if ratio else row.get("cpu_ms_per_image")
                    line[f"ms_b{batch}"] = f"{row['ms_per_image']:.2f}" if ratio else row["ms_per_image"]
        table.append(line)
    columns = ["part"] + [f"cpu_ms_b{b}" for b in batches] + [f"ms_b{b}" for b in batches]
    against = (f" PatchCore: {meta['patchcore_run']}, timed in the same process alternating with the run's whole predict, "
               "the fastest of the rounds kept." if meta.get("patchcore_run") else "")
    load = f"load average {meta['load_1min_before']} before"
    if "load_1min_after" in meta:
        load += f", {meta['load_1min_after']} after"
    return (
        (f"Code: rlad from {meta['code']}. " if meta.get("code") else "")
        + f"Run: {meta['run']} ({meta['method']}"
        + (f", loss profile in {meta['profile']}" if meta.get("profile") else "") + f"); first {meta['images']} test images of {meta['data']}, decoded beforehand; "
        f"batch {' and '.join(str(b) for b in batches)}, {meta['threads']} torch threads; ms per image, cpu_ms = CPU time "
        f"of the process (robust to other work on the host), ms = wall time; {load} (2 cores shared with other work: "
        "absolute times are noisy, the shares are the figures)." + against + "\n\n"
        + markdown_table(table, columns, floatfmt="{:.1f}")
        + _common.failures_text(results.rows)
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", nargs="?")
    parser.add_argument("--data", type=Path)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--batches", type=_common.int_list, default="1,8", help="batch sizes to time, comma-separated (default 1,8)")
    parser.add_argument("--patchcore", metavar="RUN", help="a PatchCore run on the same data: its whole predict timed "
                        "next to this run's, alternating in one process (the ratio robust to a busy host)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds with --patchcore (default 3)")
    parser.add_argument("--no-parts", dest="parts", action="store_false",
                        help="only the whole predicts with --patchcore (code without the parts' API: an older checkout)")
    parser.add_argument("--profile-precision", choices=("auto", "bf16", "fp32"),
                        help="model.profile_precision for this timing (default: the run's own)")
    parser.add_argument("--no-append", action="store_true")
    parser.add_argument("--from-results", metavar="FILE", help="render an earlier run's results file again (no measuring)")
    args = parser.parse_args(argv)
    if args.from_results:
        results = _common.Results("nbs_inference_parts", path=args.from_results)
    else:
        if not (args.run and args.data):
            parser.error("RUN and --data are required")
        if min(args.batches) < 1 or args.images < max(args.batches):
            parser.error(f"--images must be at least the largest batch ({max(args.batches)}), batches at least 1")
        if args.rounds < 1:
            parser.error("--rounds must be at least 1")
        if not args.parts and not args.patchcore:
            parser.error("--no-parts leaves nothing to time without --patchcore")
        results = _common.Results("nbs_inference_parts")
        measure(args, results, parser)
    return _common.finish("NBS: where inference time goes", render(results), results, append=not args.no_append)


if __name__ == "__main__":
    raise SystemExit(main())
