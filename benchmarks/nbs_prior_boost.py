"""The NBS / supervised-control inference settings, read off the *development* split, never the test
split: how much of the unsupervised PatchCore prior to add back to the predictor (`model.prior_boost`),
the Gaussian smoothing of the maps (`model.blur_sigma`), the image-score pooling (`model.score_pool`)
and the arithmetic of NBS's loss profile (`model.profile_precision`, fp32 or bf16).

    # runs fitted with a development split, e.g.
    rlad fit nbs --data ../shared/data/magnetic_tile --out runs/mt_dev --set protocol.dev_fraction=0.3
    .venv/bin/python benchmarks/nbs_prior_boost.py --data ../shared/data/magnetic_tile runs/mt_dev [RUN ...]
    .venv/bin/python benchmarks/nbs_prior_boost.py --data ... --boosts 1 --blurs 0,2,4,6 --score-pools 1,3 RUN ...
    .venv/bin/python benchmarks/nbs_prior_boost.py --data ... --boosts 1 --profile-precisions fp32,bf16 NBS_RUN ...
    .venv/bin/python benchmarks/nbs_prior_boost.py --from-results benchmarks/results/nbs_prior_boost-DATE.jsonl

For each run and combination of the listed values (a list left out keeps the run's own value): the
metrics on the run's development split, pooled and per defect type (a type's pixel AUROC / AUPRO pit
its defect pixels against the normal pixels of its own images and of the normal images), plus the
prior alone. These settings only change inference, so one fitted run serves every value. Rows go to
benchmarks/results/nbs_prior_boost-DATE.jsonl as they are measured; a run that cannot be scored is a
failed row.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import _common  # noqa: E402
from rlad.tables import markdown_table  # noqa: E402

BOOSTS = (0.0, 0.5, 1.0, 2.0, 4.0)
SETTING_KEYS = ("boost", "blur", "score_pool", "profile")


def scores_by_type(maps, scores, samples, masks) -> dict:
    from rlad.metrics.pixel import evaluate

    labels = np.array([s.label for s in samples])
    types = np.array([s.defect_type if s.label else "good" for s in samples])
    pooled = evaluate(scores, labels, maps, masks)
    row = {k: pooled[k] for k in ("image_auroc", "pixel_auroc", "aupro", "pixel_f1_max")}
    for name in sorted(set(types) - {"good"}):
        keep = (types == name) | (types == "good")
        part = evaluate(scores[keep], labels[keep], maps[keep], masks[keep])
        row[f"{name} px AUROC/AUPRO"] = f"{part['pixel_auroc']:.3f}/{part['aupro']:.3f}"
    return row


def load_dev(run_path: str, data: Path):
    """An nbs/refine run with a PatchCore prior, and its development split of `data` as arrays:
    (loaded run, samples, uint8 images, boolean masks). Exits with a one-line message otherwise."""
    from rlad.data.folder import discover
    from rlad.data.transforms import load_samples
    from rlad.errors import ConfigError, DataError
    from rlad.data.split import evaluation_samples
    from rlad.workflows.detection import load_run

    def fail(message: str):  # a user mistake: one line, exit 2 (as the CLI)
        print(f"{Path(sys.argv[0]).stem}: {message}", file=sys.stderr)
        raise SystemExit(2)

    try:
        loaded = load_run(run_path)
        if getattr(loaded.model.config, "prior_boost", None) is None or not loaded.model.encoder.has_prior:
            fail(f"{run_path}: not an nbs/refine run with a PatchCore prior")
        samples = evaluation_samples(loaded.split, discover(data), split="dev", run_name=str(run_path)).samples
    except (ConfigError, DataError) as exc:
        fail(str(exc))
    images, masks = load_samples(samples, loaded.cfg.image_size, desc="loading dev")
    return loaded, samples, images, masks.astype(bool)


@torch.no_grad()
def prior_alone(encoder, images: np.ndarray) -> torch.Tensor:
    """The raw PatchCore prior on the predictor grid, as the predictor sees it (before standardising)."""
    parts = []
    for i in range(0, len(images), 8):
        x = torch.from_numpy(images[i : i + 8]).float() / 255
        parts.append(encoder._prior_maps(encoder._levels(x), tuple(x.shape[-2:])))
    return torch.cat(parts)


def render(results: _common.Results) -> str:
    rows = _common.ok_rows(results.rows)
    means = []
    keys = [k for k in SETTING_KEYS if any(k in r for r in rows)]  # files from before a key existed lack it
    settings = list(dict.fromkeys(tuple(r.get(k) for k in keys) for r in rows if r["boost"] != "prior alone"))
    for setting in settings:
        chosen = [r for r in rows if tuple(r.get(k) for k in keys) == setting and r["boost"] != "prior alone"]
        means.append({**dict(zip(keys, setting)),
                      **{k: statistics.fmean(r[k] for r in chosen) for k in ("image_auroc", "pixel_auroc", "aupro", "pixel_f1_max")}})
    runs = results.meta.get("runs", [])
    return "\n".join([
        f"Development split of {results.meta.get('data', '?')} ({len(runs)} run(s): {', '.join(runs)}); the test split is not read.",
        "", "Mean over the runs:", "", markdown_table(means, floatfmt="{:.3f}"),
        "", "Per run and defect type:", "", markdown_table(rows, floatfmt="{:.3f}"),
        _common.failures_text(results.rows),
    ])


def dev_runs(args, results: _common.Results):
    """Each of `args.runs` that can be scored, on its development split of `args.data`: (label, loaded
    run, samples, uint8 images, boolean masks). A run that cannot is a failed row; the others still count."""
    results.note(data=_common.portable(str(args.data)), runs=[_common.portable(r) for r in args.runs])
    for run_path in args.runs:
        try:
            loaded, samples, images, masks = load_dev(run_path, args.data)
        except SystemExit as exc:
            results.add(_common.failed_row({"run": _common.portable(run_path)}, f"cannot score it (exit {exc.code}); see stderr"))
            continue
        yield f"{loaded.cfg.method} seed {loaded.cfg.seed}", loaded, samples, images, masks


def measure(args, parser: argparse.ArgumentParser) -> _common.Results:
    from rlad.workflows.detection import predict_arrays
    from rlad.errors import ConfigError
    from rlad.models.nbs.head import image_score

    def values(text, cast):
        try:
            return [cast(v) for v in text.split(",")] if text else [None]
        except ValueError:
            parser.error(f"not a comma-separated list of numbers: {text!r}")

    grid = list(itertools.product(values(args.boosts, float), values(args.blurs, float), values(args.score_pools, int),
                                  values(args.profile_precisions, str)))

    def setting(model, boost, blur, pool, precision) -> dict:
        for key, value in (("prior_boost", boost), ("blur_sigma", blur), ("score_pool", pool),
                           ("profile_precision", precision)):
            if value is not None:
                setattr(model.config, key, value)
        cfg = model.config
        try:
            cfg.validate()
        except ConfigError as exc:
            parser.error(str(exc))
        profile = str(model.profile_dtype()).removeprefix("torch.") if getattr(model, "bank", None) else "-"
        return {"boost": f"{cfg.prior_boost:g}", "blur": f"{cfg.blur_sigma:g}", "score_pool": str(cfg.score_pool),
                "profile": profile}

    results = _common.Results("nbs_prior_boost")  # only once the lists parse: a usage error leaves no file
    for label, loaded, samples, images, masks in dev_runs(args, results):
        model = loaded.model
        for boost, blur, pool, precision in grid:
            keys = setting(model, boost, blur, pool, precision)
            pred = predict_arrays(model, images, loaded.cfg.batch_size, desc=" ".join(f"{k} {v}" for k, v in keys.items()))
            results.add({"run": label, **keys, **scores_by_type(pred.maps, pred.scores, samples, masks)})
        prior = prior_alone(model.encoder, images)
        maps = torch.nn.functional.interpolate(prior, size=images.shape[-2:], mode="bilinear", align_corners=False)
        results.add({"run": label, "boost": "prior alone", "blur": "0", "score_pool": "1", "profile": "-",
                     **scores_by_type(maps[:, 0].numpy(), image_score(prior, 1).numpy(), samples, masks)})
    return results


def dev_parser(description: str) -> argparse.ArgumentParser:
    """The options of a script that scores fitted runs on their development split (this one,
    nbs_uneven.py): RUN ..., --data, --from-results, --no-append."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", metavar="RUN")
    parser.add_argument("--data", type=Path)
    parser.add_argument("--from-results", metavar="FILE", help="render the section again from a results file")
    parser.add_argument("--no-append", action="store_true")
    return parser


def parse_dev_args(parser: argparse.ArgumentParser, argv) -> argparse.Namespace:
    """`dev_parser`'s options parsed: RUN ... and --data unless --from-results (a usage error otherwise)."""
    args = parser.parse_args(argv)
    if not args.from_results and (not args.runs or args.data is None):
        parser.error("give --data and at least one RUN (or --from-results FILE)")
    return args


def main(argv=None) -> int:
    parser = dev_parser(__doc__)
    parser.add_argument("--boosts", default=",".join(str(b) for b in BOOSTS))
    parser.add_argument("--blurs", default=None, help="model.blur_sigma values (default: each run's own)")
    parser.add_argument("--score-pools", default=None, help="model.score_pool values (default: each run's own)")
    parser.add_argument("--profile-precisions", default=None,
                        help="model.profile_precision values, fp32 and/or bf16 (default: each run's own; NBS runs only)")
    args = parse_dev_args(parser, argv)
    if args.from_results:
        results = _common.Results("nbs_prior_boost", path=args.from_results)
    else:
        results = measure(args, parser)
    return _common.finish("NBS: inference settings (prior boost, blur, score pool, profile precision) on the development split (issues 3, 19)",
                          render(results), results, append=not args.no_append)


if __name__ == "__main__":
    raise SystemExit(main())
