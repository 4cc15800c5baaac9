"""One saved run predicted by two versions of the code in one process, alternating (issue 19:
"PatchCore at least 2x faster per image than today at equal maps").

    .venv/bin/python benchmarks/speedup_alternating.py RUN --data DIR --baseline-src OLD/src --threads 1,2 [--set KEY=VALUE]
    .venv/bin/python benchmarks/speedup_alternating.py NBS_RUN --data DIR --baseline-src OLD/src --part loss_profile
    .venv/bin/python benchmarks/speedup_alternating.py --from-results benchmarks/results/speedup_alternating-DATE.jsonl

The baseline code is imported first (OLD/src first on the path) and loads RUN; its modules are then
dropped and this checkout's `src` is imported and loads RUN again, so both models live in one
process. The first `--images` test images of DIR are decoded once; at each thread count and batch
size the two predict every image in turn, `--rounds` times, and the fastest round of each is kept:
both see the same load, which on a shared host moves absolute times by up to 2x between minutes
while the ratio holds. Also reported: the largest difference of the two versions' raw maps over the
map's range (equal maps: under 1e-3), and of this code's maps of a batch of 8 and of the same images one
by one (bf16 kernels can depend on the batch). `--part loss_profile` times an NBS run's loss profile
(`NBSModel.loss_profile`) instead of the whole predict, and compares profiles instead of maps. RUN must
be loadable by both versions (fit it with the older).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import _common  # noqa: E402

TITLE = "This code vs the baseline code, one saved run, alternating in one process (issue 19)"
THIS_SRC = Path(__file__).resolve().parents[1] / "src"


def load_with(src: Path, run: str, overrides: list[str] | None = None):
    """The run's model as the code under `src` loads it (any rlad imported before is dropped), with
    `overrides` of its settings (this code only: older code's `load_run` takes none)."""
    for name in [m for m in sys.modules if m == "rlad" or m.startswith("rlad.")]:
        del sys.modules[name]
    sys.path.insert(0, str(src))
    try:
        from rlad.workflows.detection import load_run

        return (load_run(run, overrides) if overrides else load_run(run)).model
    finally:
        sys.path.remove(str(src))


def measure(args, results: _common.Results) -> None:
    import torch

    baseline = load_with(Path(args.baseline_src), args.run)
    this = load_with(THIS_SRC, args.run, args.set)
    from rlad.data.folder import discover
    from rlad.data.transforms import load_samples

    results.note(method=this.name, part=args.part, this_overrides=list(args.set))
    baseline, this = Part(baseline, args.part), Part(this, args.part)
    samples = discover(Path(args.data)).test[: args.images]
    images, _ = load_samples(samples, this.model.config.image_size, desc="loading")
    pixels = torch.from_numpy(images).float() / 255
    with torch.no_grad():
        old_maps, new_maps = baseline.output(pixels[:8]), this.output(pixels[:8])
        one_by_one = np.concatenate([this.output(pixels[i : i + 1]) for i in range(len(new_maps))])
    span = float(old_maps.max() - old_maps.min()) or 1.0
    map_diff = float(np.abs(old_maps - new_maps).max()) / span
    batch_diff = float(np.abs(one_by_one - new_maps).max()) / span
    for threads in args.threads:
        torch.set_num_threads(threads)
        for batch in args.batches:
            batches = [pixels[i : i + batch] for i in range(0, len(pixels), batch)]
            best = {name: wall for name, (_, wall) in
                    _common.fastest_alternating({"baseline": baseline, "this": this}, batches, args.rounds).items()}
            results.add({"threads": threads, "batch": batch,
                         "baseline_ms": round(1000 * best["baseline"] / len(pixels), 2),
                         "this_ms": round(1000 * best["this"] / len(pixels), 2),
                         "speedup": round(best["baseline"] / best["this"], 3),
                         "max_map_diff_over_range": float(f"{map_diff:.2e}"),
                         "this_batch8_vs_one_by_one_over_range": float(f"{batch_diff:.2e}")})


class Part:
    """What is timed of a loaded model: its whole `predict`, or one of its parts (same call shape)."""

    def __init__(self, model, part: str):
        if not hasattr(model, part):
            raise SystemExit(f"--part {part}: a {model.name} run has no {part}")
        self.model, self.part = model, part
        self.predict = getattr(model, part)

    def output(self, pixels):
        """The compared values: the raw maps, or the part's tensor."""
        out = self.predict(pixels)
        return out.maps if self.part == "predict" else out.float().numpy()


DIFFS = ("max_map_diff_over_range", "this_batch8_vs_one_by_one_over_range")


def render(results: _common.Results) -> str:
    from rlad.tables import markdown_table

    meta = results.meta
    return (f"Run: {meta.get('run')} (its method: {meta.get('method', '?')}; timed: {meta.get('part', 'predict')}); "
            f"baseline code: {meta.get('baseline_src')}; "
            + (f"this code's settings changed with `--set {' '.join(meta['this_overrides'])}`; " if meta.get("this_overrides") else "")
            + f"the first {meta.get('images')} test images of {meta.get('data')}, decoded beforehand; wall ms per image, "
            f"the fastest of {meta.get('rounds')} alternating rounds; load average {meta.get('load_1min_before')} before, "
            f"{meta.get('load_1min_after')} after.\n\n"
            + markdown_table([{**row, **{key: f"{row[key]:.1e}" for key in DIFFS if key in row}}
                              for row in _common.ok_rows(results.rows)], floatfmt="{:.2f}")
            + _common.failures_text(results.rows))


def main(argv=None) -> int:
    import os

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", nargs="?")
    parser.add_argument("--data")
    parser.add_argument("--baseline-src")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--threads", type=_common.int_list, default="1,2",
                        help="torch thread counts, comma-separated (default 1,2)")
    parser.add_argument("--batches", type=_common.int_list, default="1,8", help="batch sizes, comma-separated (default 1,8)")
    parser.add_argument("--part", choices=("predict", "loss_profile"), default="predict",
                        help="what is timed: the whole predict (default) or an NBS run's loss profile")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting of this code's copy of RUN that does not touch what was learned "
                             "(e.g. model.knn_chunk_mb=0: the block size of this code's default, not the one RUN saved)")
    parser.add_argument("--no-append", action="store_true")
    parser.add_argument("--from-results", metavar="FILE", help="render an earlier run's results file again (no measuring)")
    args = parser.parse_args(argv)
    if args.from_results:
        results = _common.Results("speedup_alternating", path=args.from_results)
    else:
        if not (args.run and args.data and args.baseline_src):
            parser.error("give RUN, --data and --baseline-src (or --from-results FILE)")
        if not (Path(args.baseline_src) / "rlad").is_dir():
            parser.error(f"--baseline-src {args.baseline_src}: no rlad package there")
        results = _common.Results("speedup_alternating")
        results.note(run=_common.portable(str(Path(args.run).resolve())), data=_common.portable(args.data),
                     baseline_src=_common.portable(str(Path(args.baseline_src).resolve())), images=args.images,
                     rounds=args.rounds, load_1min_before=round(os.getloadavg()[0], 1))
        measure(args, results)
        results.note(load_1min_after=round(os.getloadavg()[0], 1))
    return _common.finish(TITLE, render(results), results, append=not args.no_append)


if __name__ == "__main__":
    raise SystemExit(main())
