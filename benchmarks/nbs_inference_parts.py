"""Where an NBS or refiner run's inference time goes: loss profile (snapshot bank; NBS only), backbone,
PatchCore prior (nearest-neighbour search), the rest of the context (features resized to the grid)
and the predictor head (maps, smoothing), in ms per image, next to the whole `predict` on the same
batches.

    .venv/bin/python benchmarks/nbs_inference_parts.py RUN --data ../shared/data/magnetic_tile
    .venv/bin/python benchmarks/nbs_inference_parts.py --from-results benchmarks/results/nbs_inference_parts-DATE.jsonl

The parts are timed one after another on the same batches (batch 8, `--threads` torch threads) of
the first `--images` test images, already decoded; their sum is close to the whole predict, which is
what `rlad test` reports as ms_per_image less the image loading. Raw rows go to
benchmarks/results/nbs_inference_parts-DATE.jsonl, the table to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import _common  # noqa: E402
from benchmarks._common import append_section  # noqa: E402

WHOLE = "whole predict (for comparison)"


def measure(args, results: _common.Results, parser: argparse.ArgumentParser) -> None:
    import torch

    from rlad.data.folder import discover
    from rlad.data.transforms import load_samples
    from rlad.errors import ConfigError, DataError
    from rlad.models.base import FitData
    from rlad.models.nbs.profiles import resize
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
    encoder, bank = model.encoder, getattr(model, "bank", None)
    results.note(run=_common.portable(str(Path(args.run).resolve())), method=model.name, data=args.data.name,
                 images=len(images), threads=args.threads, load_1min_before=round(os.getloadavg()[0], 1))
    seconds: dict[str, float] = {}

    def timed(name, work):
        started = time.perf_counter()
        out = work()
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started
        return out

    with torch.no_grad():
        model.predict(FitData.to_tensor(images[:8]))  # warm-up: allocations, primitive caches
        for i in range(0, len(images), 8):
            batch = FitData.to_tensor(images[i : i + 8]).float()
            size = tuple(batch.shape[-2:])
            parts = []
            if bank is not None:
                small = resize(batch, model.config.profile_size)
                parts.append(timed("loss profile (snapshot bank)", lambda: model.profile_input(bank.profile(small))))
            levels = timed("backbone", lambda: encoder._levels(batch))
            timed("PatchCore prior (nearest neighbours)", lambda: encoder._prior_maps(levels, size))
            # The context channels again, prior included; the prior's share is taken off below.
            parts.append(timed("context assembly", lambda: encoder._assemble(levels, size)))
            timed("predictor head (maps, smoothing)", lambda: model.head(torch.cat(parts, 1), size))
            timed(WHOLE, lambda: model.predict(batch))
    seconds["context assembly"] -= seconds["PatchCore prior (nearest neighbours)"]
    seconds["rest of the context (features to the grid)"] = seconds.pop("context assembly")
    for name, value in seconds.items():
        if name != WHOLE:
            results.add({"part": name, "ms_per_image": round(1000 * value / len(images), 2)})
    results.add({"part": "sum of the parts", "ms_per_image": round(1000 * sum(v for k, v in seconds.items() if k != WHOLE) / len(images), 2)})
    results.add({"part": WHOLE, "ms_per_image": round(1000 * seconds[WHOLE] / len(images), 2),
                 "load_1min_after": round(os.getloadavg()[0], 1)})


def render(results: _common.Results) -> str:
    from rlad.tables import markdown_table

    meta = results.meta
    return (
        f"Run: {meta['run']} ({meta['method']}); first {meta['images']} test images of {meta['data']}, decoded beforehand; "
        f"batch 8, {meta['threads']} torch threads; load average {meta['load_1min_before']} before (2 cores shared with "
        "other work: absolute times are noisy, the shares are the figures).\n\n"
        + markdown_table(_common.ok_rows(results.rows), ["part", "ms_per_image"], floatfmt="{:.1f}")
        + _common.failures_text(results.rows)
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", nargs="?")
    parser.add_argument("--data", type=Path)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--no-append", action="store_true")
    parser.add_argument("--from-results", metavar="FILE", help="render an earlier run's results file again (no measuring)")
    args = parser.parse_args(argv)
    if args.from_results:
        results = _common.Results("nbs_inference_parts", path=args.from_results)
    else:
        if not (args.run and args.data):
            parser.error("RUN and --data are required")
        if args.images < 8:
            parser.error("--images must be at least 8 (one batch)")
        results = _common.Results("nbs_inference_parts")
        measure(args, results, parser)
    text = render(results)
    print(text)
    if not args.no_append:
        append_section("NBS: where inference time goes", text, results=results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
