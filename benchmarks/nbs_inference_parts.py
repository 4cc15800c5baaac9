"""Where an NBS run's inference time goes: loss profile (snapshot bank), backbone, PatchCore prior
(nearest-neighbour search) and predictor + maps, in ms per image, on the first test images of DIR.

    .venv/bin/python benchmarks/nbs_inference_parts.py RUN --data ../shared/data/magnetic_tile

The parts are timed one after another on the same batches (batch 8, torch's default threads); their
sum is close to what `rlad test` reports as ms_per_image, less the image loading.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import append_section  # noqa: E402
from rlad.tables import markdown_table  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args(argv)
    if args.images < 8:
        parser.error("--images must be at least 8 (one batch)")

    import torch

    from rlad.data.folder import discover
    from rlad.data.transforms import load_samples
    from rlad.errors import ConfigError, DataError
    from rlad.workflows.detection import load_run
    from rlad.models.base import FitData
    from rlad.models.nbs.profiles import resize
    from rlad.models.nbs.head import predict_maps

    try:
        model = load_run(args.run).model
        samples = list(discover(args.data).test)[: args.images]
    except (ConfigError, DataError) as exc:
        parser.error(str(exc))
    if getattr(model, "bank", None) is None:
        parser.error(f"{args.run}: not an nbs run")
    images, _ = load_samples(samples, model.config.image_size, desc="loading")
    seconds: dict[str, float] = {}

    def timed(name, work):
        started = time.perf_counter()
        out = work()
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started
        return out

    encoder = model.encoder
    with torch.no_grad():
        for i in range(0, len(images), 8):
            batch = FitData.to_tensor(images[i : i + 8]).float()
            small = resize(batch, model.config.profile_size)
            profile = timed("loss profile", lambda: model.profile_input(model.bank.profile(small)))
            levels = timed("backbone", lambda: encoder._levels(batch))
            timed("PatchCore prior (kNN)", lambda: encoder._prior_maps(batch, levels))
            context = encoder(batch)  # the same two parts again, assembled (untimed)
            features = torch.cat([profile, context], 1)
            timed("predictor + maps", lambda: predict_maps(model.config, model.predictor, features, tuple(batch.shape[-2:])))
    rows = [{"part": name, "ms_per_image": 1000 * value / len(images)} for name, value in seconds.items()]
    rows.append({"part": "sum", "ms_per_image": sum(r["ms_per_image"] for r in rows)})
    table = markdown_table(rows, floatfmt="{:.1f}")
    print(table)
    if not args.no_append:
        append_section(
            "NBS: where inference time goes",
            f"Run: {args.run}; first {len(images)} test images of {args.data.name}; batch 8, {torch.get_num_threads()} threads.\n\n" + table,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
