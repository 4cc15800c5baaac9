"""Does fine-tuning the backbone on the labelled images help? The supervised control (same labelled
images, augmentation, normal examples, PatchCore prior, predictor and schedule) with the MobileNetV2
stages from `FROM` up trained together with the predictor, scored on the *development* split.

    .venv/bin/python benchmarks/nbs_finetune.py --data ../shared/data/magnetic_tile \\
        --variants frozen,3:1e-4,4:1e-4 --seeds 0,1 --jobs 2 --threads 1
    .venv/bin/python benchmarks/nbs_finetune.py --from-results benchmarks/results/nbs_finetune-DATE.jsonl

A variant is `frozen` (the control as rlad ships it) or `FROM:LR`: backbone stages FROM..4 trainable
at learning rate LR (Adam; the predictor keeps model.predictor_lr), the earlier stages frozen. The
BatchNorm layers stay folded into the convolutions (ImageNet statistics), as in the frozen backbone.
Rows: mean over seeds of the development-split metrics, pooled and per defect type, and fit time.
Raw rows (one per variant and seed, a failed run as a failed row) go to
benchmarks/results/nbs_finetune-DATE.jsonl as they arrive.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import _common  # noqa: E402
from benchmarks._common import SHARED_DATA, SHARED_WEIGHTS  # noqa: E402
from rlad.tables import markdown_table  # noqa: E402

TRAINABLE_FROM = (1, 2, 3, 4)


def parse_variant(text: str) -> tuple[int, float] | None:
    """`frozen` -> None; `FROM:LR` -> (FROM, LR). ValueError with a readable message otherwise."""
    if text == "frozen":
        return None
    try:
        first, lr = text.split(":")
        first, lr = int(first), float(lr)
    except ValueError:
        raise ValueError(f"variant {text!r}: write frozen or FROM:LR, e.g. 3:1e-4") from None
    if first not in TRAINABLE_FROM or not lr > 0:
        raise ValueError(f"variant {text!r}: FROM must be one of {TRAINABLE_FROM} and LR > 0")
    return first, lr


def run_variant(spec: dict) -> dict:
    """One seed of one variant, in its own process: fit, then score the development split."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from benchmarks.nbs_prior_boost import scores_by_type
    from rlad.data.folder import discover
    from rlad.data.transforms import load_samples
    from rlad.data.split import make_split
    from rlad.workflows.detection import build_config
    from rlad.models.backbones import STAGE_LAST_FEATURE
    from rlad.models.base import FitData
    from rlad.models.nbs.refiner import train_rounds
    from rlad.models.nbs.head import new_predictor, probability_maps
    from rlad.models.nbs.labelled import augment_labeled, draw_negative_ids, fit_context, masks_at

    seed, variant = spec["seed"], parse_variant(spec["variant"])
    overrides = [f"model.context.backbone.weights={SHARED_WEIGHTS}", f"protocol.dev_fraction={spec['dev_fraction']}", f"seed={seed}"]
    cfg = build_config("refine", overrides=overrides + spec["set"])
    mc = cfg.model
    folder = discover(spec["data"])
    split = make_split(folder, cfg.protocol, seed)
    size, grid = cfg.image_size, mc.predictor_grid
    normal, _ = load_samples(split.train, size, desc="train")
    labelled, labelled_masks = load_samples(split.labeled, size, desc="labelled")

    started = time.perf_counter()
    encoder, _ = fit_context(mc, FitData(normal, labelled, labelled_masks, seed), seed)
    extractor = encoder.extractor
    modules = list(extractor.features)
    split_at = STAGE_LAST_FEATURE[variant[0] - 1] + 1 if variant else len(modules)
    trainable = copy.deepcopy(torch.nn.Sequential(*modules[split_at:]))
    context_taps = {STAGE_LAST_FEATURE[s]: s for s in encoder.config.backbone.stages}
    level_taps = {STAGE_LAST_FEATURE[s]: s for s in extractor.stages}
    for param in trainable.parameters():
        param.requires_grad_(True)

    def to_grid(x):
        return F.interpolate(x, size=(grid, grid), mode="bilinear", align_corners=False)

    @torch.no_grad()
    def frozen_inputs(images_uint8):
        """Per image: (activation where the trainable part starts, frozen context taps, standardised prior),
        from one pass of the frozen network (its levels also feed the prior)."""
        out = []
        for i in range(0, len(images_uint8), 8):
            images = FitData.to_tensor(images_uint8[i : i + 8])
            x, start, taps, levels = extractor.normalise(images), None, [], {}
            for index, module in enumerate(modules):
                if index == split_at:
                    start = x
                x = module(x)
                if index in level_taps:
                    levels[level_taps[index]] = x
                if index in context_taps and index < split_at:
                    taps.append(to_grid(x))
            start = x if start is None else start
            prior = (encoder._prior_maps(levels, tuple(images.shape[-2:])) - encoder.prior_mean) / encoder.prior_std
            fixed = torch.cat(taps + [prior], 1)
            out += [(start[j].half(), fixed[j].half()) for j in range(len(images))]
        return out

    def encode(start, fixed):
        x, taps = start.contiguous(memory_format=torch.channels_last), []
        for index, module in enumerate(trainable, start=split_at):
            x = module(x)
            if index in context_taps:
                taps.append(to_grid(x))
        # frozen taps, trainable taps, prior: the frozen control's channel order (prior last)
        return torch.cat([fixed[:, :-1], *taps, fixed[:, -1:]], 1)

    augmented, augmented_masks = augment_labeled(labelled, labelled_masks, mc.augment_copies, seed)
    negatives = normal[draw_negative_ids(mc, len(normal), seed)]
    inputs = frozen_inputs(np.concatenate([augmented, negatives]))
    masks = torch.cat([masks_at(augmented_masks, grid), torch.zeros(len(negatives), 1, grid, grid)])
    examples = [(inputs[i], masks[i]) for i in range(len(inputs))]

    with torch.random.fork_rng():
        torch.manual_seed(seed + 29)
        predictor = new_predictor(mc, encoder, 0)
    groups = [{"params": predictor.parameters(), "lr": mc.predictor_lr, "weight_decay": mc.predictor_weight_decay}]
    if variant:
        groups.append({"params": trainable.parameters(), "lr": variant[1], "weight_decay": 0.0})
    optimizer = torch.optim.Adam(groups)
    train_rounds(mc, predictor, optimizer, examples, seed, encode=encode)  # the supervised control's schedule
    fit_seconds = time.perf_counter() - started

    dev_images, dev_masks = load_samples(split.dev, size, desc="dev")
    maps, scores = [], []
    with torch.no_grad():
        for i in range(0, len(dev_images), 8):
            batch = frozen_inputs(dev_images[i : i + 8])
            features = encode(*(torch.stack(part).float() for part in zip(*batch)))
            logits = predictor(features) + mc.prior_boost * features[:, -1:]
            result = probability_maps(logits, (size, size), mc.score_pool, mc.blur_sigma)
            maps.append(result.maps)
            scores.append(result.scores)
    row = scores_by_type(np.concatenate(maps), np.concatenate(scores), split.dev, dev_masks.astype(bool))
    return {"variant": spec["variant"], "seed": seed, "fit_s": round(fit_seconds, 1), **row}


def summarise(results: list[dict], variants: list[str]) -> list[dict]:
    rows = []
    for variant in variants:
        mine = [r for r in _common.ok_rows(results) if r["variant"] == variant]
        if not mine:
            continue
        row = {"variant": variant, "seeds": ",".join(str(r["seed"]) for r in mine)}
        for key, value in mine[0].items():
            if key in ("variant", "seed", "load_1min", "status"):
                continue
            if isinstance(value, float):
                row[key] = statistics.fmean(r[key] for r in mine)
            else:  # "px AUROC/AUPRO" pairs: mean of each half
                pairs = [[float(v) for v in r[key].split("/")] for r in mine]
                row[key] = "/".join(f"{statistics.fmean(p[k] for p in pairs):.3f}" for k in range(2))
        rows.append(row)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "magnetic_tile")
    parser.add_argument("--variants", default="frozen,3:1e-4,4:1e-4")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--dev-fraction", type=float, default=0.3)
    parser.add_argument("--jobs", type=int, default=1, help="runs side by side (each in its own process)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (default: torch's own)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override for every run, as rlad fit --set")
    parser.add_argument("--no-append", action="store_true")
    parser.add_argument("--from-results", metavar="FILE", help="render the section again from a results file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _common.run_child(args.child, {"finetune": run_variant})
        return 0
    if args.from_results:
        return report(_common.Results("nbs_finetune", path=args.from_results), args.no_append)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    try:
        for variant in variants:
            parse_variant(variant)
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError as exc:
        parser.error(str(exc).replace("invalid literal for int() with base 10", "--seeds: not an integer"))
    if not 0 < args.dev_fraction < 1:
        parser.error("--dev-fraction must be between 0 and 1 (settings are read off the development split)")
    if not args.data.is_dir():
        parser.error(f"--data {args.data}: no such folder")
    from rlad.errors import ConfigError
    from rlad.workflows.detection import build_config

    try:
        build_config("refine", overrides=args.set)
    except ConfigError as exc:
        parser.error(str(exc))
    if not SHARED_WEIGHTS.is_file():
        parser.error(f"ImageNet MobileNetV2 weights not found at {SHARED_WEIGHTS}")

    from concurrent.futures import ThreadPoolExecutor

    results = _common.Results("nbs_finetune")
    results.note(data=_common.portable(str(args.data)), variants=variants, seeds=seeds, dev_fraction=args.dev_fraction,
                 overrides=args.set)
    specs = [{"kind": "finetune", "variant": v, "seed": s, "data": str(args.data), "dev_fraction": args.dev_fraction, "set": args.set} for v in variants for s in seeds]

    def one(spec):
        row = _common.spawn(__file__, spec, args.threads, tag="finetune")
        return results.add({"variant": spec["variant"], "seed": spec["seed"], **row})

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        rows = list(pool.map(one, specs))
    report(results, args.no_append)
    return 0 if len(_common.ok_rows(rows)) == len(specs) else 1


def report(results: _common.Results, no_append: bool) -> int:
    meta = results.meta
    table = markdown_table(summarise(results.rows, meta.get("variants", [])), floatfmt="{:.3f}")
    text = (f"Data: {meta.get('data', '?')}, development split ({meta.get('dev_fraction', 0):.0%} of the test split), mean over "
            f"seeds {','.join(str(s) for s in meta.get('seeds', []))}; overrides: {'; '.join(meta.get('overrides') or []) or 'none'}."
            f"\n\n{table}\n{_common.failures_text(results.rows)}")
    return _common.finish("NBS: fine-tuning the backbone in the prior refiner, on the development split", text, results,
                          append=not no_append)


if __name__ == "__main__":
    raise SystemExit(main())
