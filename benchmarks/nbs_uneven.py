"""Where a magnetic-tile run's pixel AUROC goes, and whether simple extra channels could help the
"uneven" type, read off the *development* split of NBS / supervised-control runs (never the test split).

    .venv/bin/python benchmarks/nbs_uneven.py --data ../shared/data/magnetic_tile RUN [RUN ...]
    .venv/bin/python benchmarks/nbs_uneven.py --from-results benchmarks/results/nbs_uneven-DATE.jsonl

Per run: each defect type's share of the defect pixels and of its pixels above the 95th / 99th
percentile of the normal pixels' scores, and which images hold the normal pixels above the 99th
percentile. Then candidate channels scored alone (pixel AUROC per type, as in
`benchmarks/nbs_prior_boost.py`): the PatchCore prior, each image's own deviation from itself (feature
distance to the image's median feature, per backbone stage), low-frequency brightness deviation and
local texture-energy deviation from the image's median. Rows go to
benchmarks/results/nbs_uneven-DATE.jsonl (`table`: shares or channels); a run that cannot be scored is
a failed row.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import _common  # noqa: E402
from rlad.tables import markdown_table  # noqa: E402
from benchmarks.nbs_prior_boost import dev_parser, dev_runs, parse_dev_args, scores_by_type  # noqa: E402


def deviation_from_median(maps: torch.Tensor) -> torch.Tensor:
    """|map - the image's median| per pixel, as a norm over channels: (B, C, h, w) -> (B, 1, h, w)."""
    median = maps.flatten(2).median(dim=2).values[:, :, None, None]
    return (maps - median).norm(dim=1, keepdim=True)


@torch.no_grad()
def candidate_maps(encoder, images_uint8: np.ndarray, grid: int = 64) -> dict[str, torch.Tensor]:
    from rlad.models.maps import grey

    maps: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(images_uint8), 8):
        x = torch.from_numpy(images_uint8[start : start + 8]).float() / 255
        levels = encoder._levels(x)
        maps.setdefault("PatchCore prior", []).append(encoder._prior_maps(levels, tuple(x.shape[-2:])))
        for stage, features in levels.items():
            resized = F.interpolate(features, size=(grid, grid), mode="bilinear", align_corners=False)
            maps.setdefault(f"self-deviation, stage {stage}", []).append(deviation_from_median(resized))
        g = grey(x)
        maps.setdefault("low-frequency brightness deviation", []).append(deviation_from_median(F.avg_pool2d(g, 16)))
        mean = F.avg_pool2d(g, 8)
        texture = (F.avg_pool2d(g**2, 8) - mean**2).clamp_min(0).sqrt()
        maps.setdefault("texture-energy deviation", []).append(deviation_from_median(texture))
    return {name: torch.cat(parts) for name, parts in maps.items()}


def render(results: _common.Results) -> str:
    rows = _common.ok_rows(results.rows)
    strip = lambda table: [{k: v for k, v in r.items() if k != "table"} for r in rows if r.get("table") == table]  # noqa: E731
    runs = results.meta.get("runs", [])
    return "\n".join([
        f"Development split of {results.meta.get('data', '?')} ({len(runs)} run(s): {', '.join(runs)}); the test split is not read.",
        "", "The run's maps, per defect type:", "", markdown_table(strip("shares"), floatfmt="{:.3f}"),
        "", "Candidate channels scored alone (not the run's maps):", "", markdown_table(strip("channels"), floatfmt="{:.3f}"),
        _common.failures_text(results.rows),
    ])


def measure(args, results: _common.Results) -> None:
    from rlad.workflows.detection import predict_arrays

    for label, loaded, samples, images, masks in dev_runs(args, results):
        types = np.array([s.defect_type if s.label else "good" for s in samples])
        maps = predict_arrays(loaded.model, images, loaded.cfg.batch_size, desc="dev").maps
        q95, q99 = np.quantile(maps[~masks], [0.95, 0.99])
        high_normal = {t: float((maps[types == t][~masks[types == t]] > q99).sum()) for t in sorted(set(types))}
        total_defect = masks.sum()
        for t in sorted(set(types) - {"good"}):
            pixels = maps[types == t][masks[types == t]]
            results.add({"table": "shares", "run": label, "type": t, "share of defect pixels": float(pixels.size / total_defect),
                         "above normal q95": float((pixels > q95).mean()), "above normal q99": float((pixels > q99).mean()),
                         "share of normal pixels above q99 in its images": high_normal[t] / max(1.0, sum(high_normal.values()))})
        results.add({"table": "shares", "run": label, "type": "good", "share of normal pixels above q99 in its images":
                     high_normal["good"] / max(1.0, sum(high_normal.values()))})
        for name, channel in candidate_maps(loaded.model.encoder, images).items():
            full = F.interpolate(channel, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0].numpy()
            row = scores_by_type(full, full.reshape(len(full), -1).max(1), samples, masks)
            results.add({"table": "channels", "run": label, "channel alone": name, "pixel_auroc": row["pixel_auroc"],
                         **{k: v for k, v in row.items() if k.endswith("px AUROC/AUPRO")}})


def main(argv=None) -> int:
    parser = dev_parser(__doc__)
    args = parse_dev_args(parser, argv)
    if args.from_results:
        results = _common.Results("nbs_uneven", path=args.from_results)
    else:
        results = _common.Results("nbs_uneven")
        measure(args, results)
    return _common.finish("NBS: where magnetic tile's pixel AUROC goes, on the development split (issue 3)", render(results),
                          results, append=not args.no_append)


if __name__ == "__main__":
    raise SystemExit(main())
