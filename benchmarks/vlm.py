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

Besides one process per (family, engine) for peak memory, a "paired" job per family runs both engines in
one process, rlad / TRL / rlad, so that their ratio is measured under the same load (on a shared machine
the separate jobs' absolute figures move with whatever else runs; load_1min is recorded with each row).

Usage:
    .venv/bin/python benchmarks/vlm.py                        # tiny + small on CPU, both engines, 3 families
    .venv/bin/python benchmarks/vlm.py --shapes tiny --steps 2 --repeats 1 --no-docs   # smoke test
    .venv/bin/python benchmarks/vlm.py --shapes 2b --device cuda --dtype bfloat16 --families qwen2_vl
    .venv/bin/python benchmarks/vlm.py --from-results benchmarks/results/vlm-DATE.jsonl   # render again
Raw rows: benchmarks/results/vlm-DATE.jsonl (written as each job ends; a failed job is a failed row); the
section goes to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from benchmarks._common import (Results, failures_text, finish, hold_work, ok_rows, peak_rss_mb, run_child,  # noqa: E402
                                spawn, work_dir)

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
ENGINES = ("rlad", "trl")


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


def _setup(spec: dict):
    """The job's policy (random weights of the chosen shape), task and pair records."""
    import math

    from rlad.policies.hf_vlm.config import HFVLMConfig
    from rlad.policies.hf_vlm.policy import HFVLMPolicy
    from rlad.policies.hf_vlm.tiny import write_tiny_vlm
    from rlad.tasks.grounding import GroundingTask, prompt_corpus

    work, shape = Path(spec["work"]), _shape(spec["shape"])
    model = write_tiny_vlm(spec["family"], work / f"{spec['family']}_{spec['shape']}", size=shape,
                           corpus=prompt_corpus())
    side = int(math.isqrt(shape.image_pixels))
    records = _pairs(work / f"pairs_{side}", max(spec["prompts"], 6), side)
    policy = HFVLMPolicy(HFVLMConfig(model=str(model), lora=spec["lora"], max_new_tokens=spec["tokens"],
                                     device=spec["device"], dtype=spec["dtype"],
                                     gradient_checkpointing=spec["device"] != "cpu"))
    return policy, GroundingTask(), records


def _sync(policy) -> None:
    import torch

    if policy.device.type == "cuda":
        torch.cuda.synchronize()


def _count_generated(policy) -> list:
    """Wrap policy.sample so each call's generated tokens are appended to the returned list."""
    counts, sample = [], policy.sample

    def counting(prompts, n, **kwargs):
        groups = sample(prompts, n, **kwargs)
        counts.append(sum(len(c.token_ids) for g in groups for c in g))
        return groups

    policy.sample = counting
    return counts


def measure_sample(policy, task, records, spec: dict) -> dict:
    """Completions/s and generated tokens/s of policy.sample (median of `repeats` calls after a warm-up)."""
    import torch

    prompts = [task.prompt(r) for r in records[:spec["prompts"]]]
    generator = torch.Generator().manual_seed(0)
    policy.sample(prompts, spec["group"], generator=generator)  # warm-up
    seconds, tokens = [], []
    for _ in range(spec["repeats"]):
        _sync(policy)
        started = time.perf_counter()
        groups = policy.sample(prompts, spec["group"], generator=generator)
        _sync(policy)
        seconds.append(time.perf_counter() - started)
        tokens.append(sum(len(c.token_ids) for g in groups for c in g))
    completions = len(prompts) * spec["group"]
    return {"sample_s": round(statistics.median(seconds), 4),
            "sample_completions_per_s": round(completions / statistics.median(seconds), 2),
            "sample_tokens_per_s": round(statistics.median(t / s for t, s in zip(tokens, seconds)), 1)}


def measure_steps(policy, task, records, spec: dict, engine: str, out: Path) -> dict:
    """`steps` GRPO steps through `engine`: median seconds per step (the first, which builds the optimizer or
    the trainer, excluded), completions/s and generated tokens/s of a step."""
    from rlad.rl.loop import GRPOConfig, train_grpo

    cfg = GRPOConfig(steps=spec["steps"], group_size=spec["group"], prompts_per_step=spec["prompts"], lr=1e-5,
                     resampling=False, checkpoint_every=10 ** 6)
    stamps = []
    callback = lambda line: stamps.append((time.perf_counter(), line))  # noqa: E731
    started = time.perf_counter()
    if engine == "rlad":
        counts = _count_generated(policy)
        try:
            train_grpo(policy, task, records, cfg, callback=callback)
        finally:
            del policy.sample  # back to the class's method
        tokens = counts
    else:
        from rlad.engine import RunDir
        from rlad.integrations.trl import TRLEngineConfig, train_trl

        train_trl(policy, task, records, cfg, TRLEngineConfig(), RunDir(out).create(), callback=callback)
        stamps = [s for s in stamps if "loss" in s[1]]
        completions = spec["prompts"] * spec["group"]
        tokens = [line.get("completions/mean_length", 0.0) * completions for _, line in stamps]
    _sync(policy)
    times = [started] + [t for t, _ in stamps]
    per_step = [b - a for a, b in zip(times, times[1:])]
    steady = per_step[1:] or per_step
    step = statistics.median(steady)
    step_tokens = statistics.median(tokens[1:] or tokens) if tokens else 0.0
    return {"step_s": round(step, 4), "step_completions_per_s": round(spec["prompts"] * spec["group"] / step, 2),
            "step_tokens_per_s": round(step_tokens / step, 1), "steps_timed": len(steady)}


def _peak_memory(policy) -> dict:
    import torch

    if policy.device.type == "cuda":
        return {"peak_mb": round(torch.cuda.max_memory_allocated() / 2 ** 20, 1), "memory": "cuda peak allocated"}
    return {"peak_mb": peak_rss_mb(), "memory": "peak RSS"}


def job_engine(spec: dict) -> dict:
    """One family through one engine in a fresh process: sample, GRPO steps, peak memory."""
    policy, task, records = _setup(spec)
    result = measure_sample(policy, task, records, spec)
    result.update(measure_steps(policy, task, records, spec, spec["engine"],
                                Path(spec["work"]) / f"trl_{spec['family']}_{spec['shape']}"))
    result["params_m"] = round(sum(p.numel() for p in policy.model.parameters()) / 1e6, 2)
    result["trainable_m"] = round(sum(p.numel() for p in policy.trainable_parameters()) / 1e6, 3)
    result.update(_peak_memory(policy))
    return result


def job_paired(spec: dict) -> dict:
    """rlad / TRL / rlad GRPO steps in one process (fresh policies from the same checkpoint): the TRL route's
    step time over the mean of the two rlad runs around it, under the same load."""
    import os

    rlad_first = measure_steps(*_setup(spec), spec, "rlad", Path())
    trl = measure_steps(*_setup(spec), spec, "trl", Path(spec["work"]) / f"paired_trl_{spec['family']}_{spec['shape']}")
    rlad_last = measure_steps(*_setup(spec), spec, "rlad", Path())
    rlad_step = (rlad_first["step_s"] + rlad_last["step_s"]) / 2
    return {"rlad_step_s": round(rlad_step, 4), "trl_step_s": trl["step_s"],
            "rlad_step_s_spread": f"{rlad_first['step_s']:.3g}-{rlad_last['step_s']:.3g}",
            "trl_over_rlad": round(trl["step_s"] / rlad_step, 2), "load_during": f"{os.getloadavg()[0]:.1f}"}


JOBS = {"engine": job_engine, "paired": job_paired}


def measure(args, results: Results) -> None:
    work, holder = work_dir(args.work, "rlad_vlm_bench_")
    base = {"work": str(work), "prompts": args.prompts, "group": args.group, "tokens": args.tokens,
            "steps": args.steps, "repeats": args.repeats, "lora": args.lora, "device": args.device,
            "dtype": args.dtype}
    for shape in args.shapes:
        for family in args.families:
            for engine in args.engines:
                keys = {"kind": "engine", "shape": shape, "family": family, "engine": engine}
                results.add({**keys, **spawn(__file__, {**base, **keys}, args.threads or None, tag="vlm")})
            if not args.no_paired and set(ENGINES) <= set(args.engines):
                keys = {"kind": "paired", "shape": shape, "family": family}
                results.add({**keys, **spawn(__file__, {**base, **keys}, args.threads or None, tag="vlm")})
    if holder is not None:
        holder.cleanup()


def render(results: Results) -> str:
    from rlad.tables import markdown_table

    meta, rows = results.meta, results.rows
    engine_rows = ok_rows([r for r in rows if r.get("kind") == "engine"])
    paired = ok_rows([r for r in rows if r.get("kind") == "paired"])
    setting = (f"B={meta.get('prompts')} prompts x G={meta.get('group')} completions, up to {meta.get('tokens')} new "
               f"tokens, {'LoRA' if meta.get('lora') else 'full fine-tuning'}, {meta.get('device')} {meta.get('dtype')}, "
               f"{meta.get('steps')} GRPO steps per job (the first excluded from step_s), torch threads per job: "
               f"{meta.get('threads') or 'torch default'}. Random weights: completions run to the token limit.")
    body = [
        setting,
        "",
        "One process per row. sample = `policy.sample` of one step's completions (median of the repeats); "
        "step = one whole GRPO step (sampling, rewards, reference and policy log-probs, backward, optimizer), "
        "rlad's own loop or the TRL route; tokens/s counts generated tokens. peak_mb is the process's peak RSS "
        "on CPU (interpreter, libraries and model included) or peak CUDA memory allocated. load_1min = the "
        "machine's 1-minute load before-after the job: above the core count other work was competing and "
        "absolute times are inflated.",
        "",
        markdown_table(engine_rows, ["shape", "family", "engine", "params_m", "trainable_m", "sample_completions_per_s",
                                     "sample_tokens_per_s", "step_s", "step_completions_per_s", "step_tokens_per_s",
                                     "peak_mb", "load_1min"], floatfmt="{:.3g}"),
    ]
    if paired:
        body += ["", "Side by side in one process (rlad / TRL / rlad, fresh policies from the same checkpoint): "
                 "the comparable ratio of the two engines' step times.", "",
                 markdown_table(paired, ["shape", "family", "rlad_step_s", "rlad_step_s_spread", "trl_step_s",
                                         "trl_over_rlad", "load_1min"], floatfmt="{:.3g}")]
    body.append(failures_text(rows))
    return "\n".join(body)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        run_child(sys.argv[2], JOBS)
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
    parser.add_argument("--no-paired", action="store_true", help="skip the one-process rlad/TRL/rlad ratio jobs")
    parser.add_argument("--work", help="scratch folder (default: a temporary one)")
    parser.add_argument("--no-docs", action="store_true", help="do not append a section to docs/benchmarks.md")
    parser.add_argument("--from-results", metavar="FILE", help="render the section again from a results file")
    args = parser.parse_args()

    if args.from_results:
        results = Results("vlm", path=args.from_results)
    else:
        hold_work(args.work)
        results = Results("vlm")
        results.note(**{k: getattr(args, k) for k in ("shapes", "families", "engines", "prompts", "group", "tokens",
                                                       "steps", "repeats", "lora", "device", "dtype", "threads")})
        measure(args, results)
    finish("VLM policy: sample and GRPO step, rlad loop vs TRL", render(results), results,
           append=not args.no_docs and bool(results.rows))


if __name__ == "__main__":
    main()
