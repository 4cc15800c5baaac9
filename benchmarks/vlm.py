"""Speed and memory of the VLM policy: `sample` and one full GRPO step, rlad's own loop vs the TRL route,
for each Qwen-VL family, in one run.

Every (family, engine) job runs in a fresh interpreter (benchmarks/_common.spawn) so its peak memory is its
own. A job builds a random-weight checkpoint of the chosen shape (rlad.policies.hf_vlm.tiny, no download),
writes square-defect pairs at the shape's image size, then measures:

  sample     policy.sample(prompts_per_step prompts, group_size each): completions/s and generated tokens/s
             (median over --repeats calls after one warm-up call)
  grpo step  --steps GRPO steps (format + DCLR rewards, difficulty weights on, resampling off so that every
             step samples once: random weights never write a box, so resampling would always double it);
             seconds per step (median, first step excluded), completions/s and tokens/s
  memory     peak resident memory of the process (CPU) or peak CUDA memory allocated (GPU)

Shapes: tiny (0.2 M parameters, 56 px images: what the tests use), small (3.5 M, 224 px), 2b (the real
Qwen2-VL-2B shape with random weights, 448 px images: for a GPU).

Usage:
    .venv/bin/python benchmarks/vlm.py                        # tiny + small on CPU, both engines, 3 families
    .venv/bin/python benchmarks/vlm.py --shapes tiny --steps 2 --repeats 1 --no-docs   # smoke test
    .venv/bin/python benchmarks/vlm.py --shapes 2b --device cuda --dtype bfloat16 --families qwen2_vl
Raw results: benchmarks/results/vlm.jsonl (one line per job, appended); a table goes to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from benchmarks._common import append_section, peak_rss_mb, run_child, spawn, work_dir  # noqa: E402

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
ENGINES = ("rlad", "trl")
RESULTS = Path(__file__).resolve().parent / "results" / "vlm.jsonl"


def _shape(name: str):
    from rlad.policies.hf_vlm.tiny import QWEN2_VL_2B, TinySize

    return {"tiny": TinySize(), "small": TinySize(hidden=256, layers=4, heads=4, vision_hidden=128, vision_depth=4,
                                                  image_pixels=224 * 224),
            "2b": QWEN2_VL_2B}[name]


def _pairs(folder: Path, n: int, side: int) -> list:
    """Flat references; the query has a bright square (a quarter of the side) in one of four corners."""
    import numpy as np
    from PIL import Image

    from rlad.data.pairs.records import PairRecord

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    records, q = [], side // 4
    for i in range(n):
        base = np.clip(115 + rng.normal(0, 8, size=(side, side, 3)), 0, 255).astype(np.uint8)
        x, y = [(q // 4, q // 4), (side - q - q // 4, q // 4), (q // 4, side - q - q // 4)][i % 3]
        query = base.copy()
        query[y:y + q, x:x + q] = 240
        Image.fromarray(base).save(folder / f"{i}r.png")
        Image.fromarray(query).save(folder / f"{i}q.png")
        records.append(PairRecord(f"p{i}", str(folder / f"{i}r.png"), str(folder / f"{i}q.png"), (x, y, x + q, y + q),
                                  (side, side), (side, side), "squares", "square"))
    return records


def job(spec: dict) -> dict:
    import math

    import torch

    from rlad.policies.hf_vlm.config import HFVLMConfig
    from rlad.policies.hf_vlm.policy import HFVLMPolicy
    from rlad.policies.hf_vlm.tiny import write_tiny_vlm
    from rlad.rl.loop import GRPOConfig, train_grpo
    from rlad.tasks.grounding import GroundingTask, prompt_corpus

    work, shape = Path(spec["work"]), _shape(spec["shape"])
    model = write_tiny_vlm(spec["family"], work / f"{spec['family']}_{spec['shape']}", size=shape,
                           corpus=prompt_corpus())
    side = int(math.isqrt(shape.image_pixels))
    records = _pairs(work / f"pairs_{side}", max(spec["prompts"], 6), side)
    policy = HFVLMPolicy(HFVLMConfig(model=str(model), lora=spec["lora"], max_new_tokens=spec["tokens"],
                                     device=spec["device"], dtype=spec["dtype"],
                                     gradient_checkpointing=spec["device"] != "cpu"))
    task = GroundingTask()
    prompts = [task.prompt(r) for r in records[:spec["prompts"]]]
    cuda = policy.device.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    generator = torch.Generator().manual_seed(0)
    policy.sample(prompts, spec["group"], generator=generator)  # warm-up
    seconds, tokens = [], []
    for _ in range(spec["repeats"]):
        sync()
        started = time.perf_counter()
        groups = policy.sample(prompts, spec["group"], generator=generator)
        sync()
        seconds.append(time.perf_counter() - started)
        tokens.append(sum(len(c.token_ids) for g in groups for c in g))
    completions = len(prompts) * spec["group"]

    cfg = GRPOConfig(steps=spec["steps"], group_size=spec["group"], prompts_per_step=spec["prompts"], lr=1e-5,
                     resampling=False, checkpoint_every=10 ** 6)
    stamps = []
    callback = lambda line: stamps.append((time.perf_counter(), line))  # noqa: E731
    started = time.perf_counter()
    if spec["engine"] == "rlad":
        train_grpo(policy, task, records, cfg, callback=callback)
        step_tokens = None
    else:
        from rlad.engine import RunDir
        from rlad.integrations.trl import TRLEngineConfig, train_trl

        train_trl(policy, task, records, cfg, TRLEngineConfig(), RunDir(work / f"trl_{spec['family']}").create(),
                  callback=callback)
        stamps = [s for s in stamps if "loss" in s[1]]
        step_tokens = [s[1].get("num_tokens") for s in stamps]
    sync()
    times = [started] + [t for t, _ in stamps]
    per_step = [b - a for a, b in zip(times, times[1:])][1:] or [times[-1] - times[0]]
    step = statistics.median(per_step)
    result = {
        "sample_s": round(statistics.median(seconds), 4),
        "sample_completions_per_s": round(completions / statistics.median(seconds), 2),
        "sample_tokens_per_s": round(statistics.median(t / s for t, s in zip(tokens, seconds)), 1),
        "step_s": round(step, 4),
        "step_completions_per_s": round(completions / step, 2),
        "params_m": round(sum(p.numel() for p in policy.model.parameters()) / 1e6, 2),
        "trainable_m": round(sum(p.numel() for p in policy.trainable_parameters()) / 1e6, 3),
        "peak_mb": round(torch.cuda.max_memory_allocated() / 2 ** 20, 1) if cuda else peak_rss_mb(),
        "memory": "cuda peak allocated" if cuda else "peak RSS",
    }
    if step_tokens and all(isinstance(v, (int, float)) for v in step_tokens) and len(step_tokens) > 1:
        result["trl_tokens_per_step"] = round((step_tokens[-1] - step_tokens[0]) / (len(step_tokens) - 1), 1)
    return result


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        run_child(sys.argv[2], {"vlm": job})
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["tiny", "small"], choices=["tiny", "small", "2b"])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    parser.add_argument("--prompts", type=int, default=4, help="prompts per step (B)")
    parser.add_argument("--group", type=int, default=4, help="completions per prompt (G)")
    parser.add_argument("--tokens", type=int, default=64, help="max new tokens per completion")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lora", action="store_true", help="LoRA adapters (default: full fine-tuning)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per job (0 = torch's default)")
    parser.add_argument("--work", help="scratch folder (default: a temporary one)")
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--no-docs", action="store_true", help="do not append a section to docs/benchmarks.md")
    args = parser.parse_args()

    work, holder = work_dir(args.work, "rlad_vlm_bench_")
    rows = []
    for shape in args.shapes:
        for family in args.families:
            for engine in args.engines:
                spec = {"kind": "vlm", "work": str(work), "shape": shape, "family": family, "engine": engine,
                        "prompts": args.prompts, "group": args.group, "tokens": args.tokens, "steps": args.steps,
                        "repeats": args.repeats, "lora": args.lora, "device": args.device, "dtype": args.dtype}
                result = spawn(__file__, spec, args.threads or None, tag="vlm")
                if result is None:
                    continue
                row = {"shape": shape, "family": family, "engine": engine, **result}
                rows.append(row)
                Path(args.results).parent.mkdir(parents=True, exist_ok=True)
                with open(args.results, "a") as handle:
                    handle.write(json.dumps({**row, "spec": spec}) + "\n")
    if holder is not None:
        holder.cleanup()
    from rlad.tables import markdown_table

    columns = ["shape", "family", "engine", "params_m", "sample_completions_per_s", "sample_tokens_per_s", "step_s",
               "step_completions_per_s", "peak_mb", "load_1min"]
    table = markdown_table(rows, columns)
    print(table)
    if not args.no_docs and rows:
        setting = (f"B={args.prompts} prompts x G={args.group}, up to {args.tokens} new tokens, "
                   f"{'LoRA' if args.lora else 'full fine-tuning'}, {args.device} {args.dtype}")
        append_section("VLM policy: sample and GRPO step, rlad loop vs TRL", f"{setting}\n\n{table}")


if __name__ == "__main__":
    main()
