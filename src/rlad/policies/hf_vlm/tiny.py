"""Tiny random-weight Qwen2-VL / Qwen2.5-VL / Qwen3-VL checkpoints, built in code (no download).

They have the real architectures, a real (locally trained) tokenizer with the Qwen special tokens, a
chat template and an image processor, saved like a hub checkpoint, so every code path that loads a
real model (`HFVLMPolicy`, the TRL route, `rlad fit hf`) runs on them unchanged. Used by the tests,
`benchmarks/vlm.py`, and anyone who wants to try the VLM commands without a GPU:

    python -m rlad.policies.hf_vlm.tiny qwen2_vl OUT_DIR

Random weights prove the plumbing, not learning: a warm start (`rlad fit hf`) teaches them the
answer format in a few epochs, after which GRPO has a signal.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]
# Ordinary added tokens, as in the real Qwen vocabularies, so answers stay short in tokens.
ANSWER_TOKENS = ["<think>", "</think>", "<answer>", "</answer>"]

# A Qwen-style template written for rlad: system and user turns, images as vision-start/pad/end.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_BASE_CORPUS = (
    "Find the region of the query that differs from the reference. "
    "<think>The query shows a defect.</think><answer>(120,340),(560,780)</answer> "
    "<think>Nothing differs.</think><answer>(0,0),(0,0)</answer> system user assistant "
    "reference image query image abnormal normal scratch crack hole stain lighting viewpoint"
)


@dataclass(frozen=True)
class TinySize:
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    vision_hidden: int = 32
    vision_depth: int = 2
    image_pixels: int = 56 * 56
    """Pixel budget of the image processor (min = max: every image gets the same number of patches)."""
    vocab: int = 700
    """Target vocabulary size of the locally trained byte-level BPE."""
    intermediate: int = 0
    """MLP width of the language model (0 = 2 x hidden)."""
    kv_heads: int = 0
    """Key/value heads (0 = heads / 2)."""
    vision_heads: int = 2
    vision_intermediate: int = 0
    """MLP width of the vision tower (0 = 2 x vision_hidden)."""
    model_vocab: int = 0
    """Rows of the embedding and output layers (0 = the tokenizer's size; a real checkpoint's ~152k for
    speed measurements: the output layer is a large part of a small model's cost)."""


# Random weights of the real Qwen2-VL-2B shape (its config.json), for speed and memory measurements.
QWEN2_VL_2B = TinySize(hidden=1536, layers=28, heads=12, kv_heads=2, intermediate=8960, vision_hidden=1280,
                       vision_depth=32, vision_heads=16, vision_intermediate=5120, model_vocab=151936,
                       image_pixels=448 * 448)


def build_tokenizer(corpus: Sequence[str] = (), vocab: int = 700):
    """A byte-level BPE trained on `corpus` (plus a built-in answer-format text) with the Qwen special
    tokens; digits are split one by one, as in the Qwen tokenizers, so every coordinate is writable."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([_BASE_CORPUS, *corpus], trainer=trainer)
    tok.add_tokens(ANSWER_TOKENS)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=CHAT_TEMPLATE, padding_side="left")


def _rope_sections(head_dim: int) -> list[int]:
    half = head_dim // 2
    t = half // 4
    return [t, (half - t) // 2, half - t - (half - t) // 2]  # sums to head_dim / 2, as mrope requires


def build_model(family: str, tokenizer, size: TinySize = TinySize(), seed: int = 0):
    import torch
    import transformers as T

    if family not in FAMILIES:
        raise ValueError(f"family {family!r} is not one of {FAMILIES}")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    head_dim = size.hidden // size.heads
    text = dict(vocab_size=max(len(tokenizer), size.model_vocab), hidden_size=size.hidden,
                intermediate_size=size.intermediate or 2 * size.hidden, num_hidden_layers=size.layers,
                num_attention_heads=size.heads, num_key_value_heads=size.kv_heads or max(1, size.heads // 2),
                max_position_embeddings=32768,
                bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
                tie_word_embeddings=True,
                rope_parameters={"rope_type": "default", "mrope_section": _rope_sections(head_dim),
                                 "rope_theta": 10000.0})
    common = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                  vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    patch = patch_size(family)
    vision = dict(patch_size=patch, spatial_merge_size=2, temporal_patch_size=2, num_heads=size.vision_heads,
                  depth=size.vision_depth)
    vision_mlp = size.vision_intermediate or 2 * size.vision_hidden
    torch.manual_seed(seed)
    if family == "qwen2_vl":
        cfg = T.Qwen2VLConfig(text_config=text, vision_config=dict(
            vision, embed_dim=size.vision_hidden, hidden_size=size.hidden, mlp_ratio=vision_mlp // size.vision_hidden),
            **common)
        model = T.Qwen2VLForConditionalGeneration(cfg)
    elif family == "qwen2_5_vl":
        cfg = T.Qwen2_5_VLConfig(text_config=text, vision_config=dict(
            vision, hidden_size=size.vision_hidden, intermediate_size=vision_mlp,
            out_hidden_size=size.hidden, window_size=4 * patch, fullatt_block_indexes=[size.vision_depth - 1]),
            **common)
        model = T.Qwen2_5_VLForConditionalGeneration(cfg)
    else:
        text.update(head_dim=head_dim)
        text["rope_parameters"]["mrope_interleaved"] = True
        cfg = T.Qwen3VLConfig(text_config=text, vision_config=dict(
            vision, hidden_size=size.vision_hidden, intermediate_size=vision_mlp,
            out_hidden_size=size.hidden, num_position_embeddings=64, deepstack_visual_indexes=[0]), **common)
        model = T.Qwen3VLForConditionalGeneration(cfg)
    # Near-greedy sampling defaults, as released instruct checkpoints ship them: rlad must override them
    # (the tests would see it if any leaked into sampling).
    model.generation_config.update(eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"], do_sample=True,
                                   top_k=1, top_p=0.001, temperature=0.01, repetition_penalty=1.05)
    return model.eval()


def patch_size(family: str) -> int:
    return 16 if family == "qwen3_vl" else 14  # Qwen3-VL's vision patch is 16 px, the others' 14 px


def build_image_processor(family: str, image_pixels: int):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(patch_size=patch_size(family), merge_size=2, temporal_patch_size=2,
                                    size={"shortest_edge": image_pixels, "longest_edge": image_pixels})


def write_tiny_vlm(family: str, out: str | Path, size: TinySize = TinySize(), corpus: Sequence[str] = (),
                   seed: int = 0) -> Path:
    """Save a tiny random `family` checkpoint (model, tokenizer, image processor, chat template) to `out`.

    An existing `out` is kept as it is; the folder appears at once (written beside it, then renamed),
    so processes that ask for the same folder at the same time all get a complete one.
    """
    import shutil
    import tempfile

    from rlad.policies.hf_vlm.loading import save_processor_parts

    out = Path(out)
    if out.is_dir():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tokenizer = build_tokenizer(corpus, size.vocab)
    build_model(family, tokenizer, size, seed).save_pretrained(scratch)
    save_processor_parts(scratch, tokenizer, build_image_processor(family, size.image_pixels), CHAT_TEMPLATE)
    try:
        scratch.rename(out)
    except OSError:  # another process finished the same folder first
        shutil.rmtree(scratch, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("family", choices=FAMILIES)
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(write_tiny_vlm(args.family, args.out, seed=args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
