"""HFVLMPolicy: a Qwen2-VL / Qwen2.5-VL / Qwen3-VL checkpoint as a GRPO policy (the Policy contract).

* Prompts are rendered with the checkpoint's own chat template (`chat.messages`: system text, then
  the reference and query images, then the instruction) and encoded once per prompt; a group's n
  rows share that encoding (left-padded prompt, images repeated per row).
* `sample` runs `generate` with one logits processor of rlad's own as the whole sampling transform:
  logits / temperature, the vision special tokens masked out (a sampled `<|image_pad|>` would break
  the next forward: the image features would no longer match the image tokens). Generation samples
  from exactly that distribution and the processor keeps the log-prob of each sampled token, so no
  (steps x vocabulary) tensor is ever stored.
* `log_probs` runs one forward over prompt + completion with the image inputs and applies the same
  transform (`_token_logp`), a few rows at a time under activation checkpointing so the
  (tokens x vocabulary) logits are never all in memory. On the same tokens the two agree (a test
  holds them to 1e-4 in fp32).
* Completions end at the first end-of-turn token (kept: the model must learn to stop); one that
  never ends within `max_new_tokens` is marked truncated (the loop leaves it out of the loss).
* Coordinates follow the family: 0..1000 relative (Qwen2-VL, Qwen3-VL), or pixels of the image as
  the processor resizes it (Qwen2.5-VL), with the resize rule taken from the processor itself.
* LoRA (peft): the KL reference is the same model with the adapter disabled. A policy that starts
  from a trained adapter (a warm start) merges it into the base weights when the reference is taken
  and trains a fresh adapter, so "adapter disabled" is the starting policy; merged adapters are
  part of the saved state. Full fine-tuning keeps a frozen copy as the reference.
"""

from __future__ import annotations

import copy
import warnings
from collections import OrderedDict
from contextlib import contextmanager, nullcontext
from typing import Sequence

import torch

from rlad.config import from_dict, to_dict
from rlad.policies.base import Policy
from rlad.policies.hf_vlm.chat import load_images, messages
from rlad.policies.hf_vlm.config import HFVLMConfig
from rlad.policies.hf_vlm.loading import CoordinateFrame, load_model, load_processor, model_family
from rlad.rl.rollout import Completion, Prompt, TokenLogProbs, flatten

_ENCODING_CACHE = 64  # prompts whose encodings are kept (a step's sample + log-prob passes reuse them)
_LOGIT_BUDGET = 2 ** 26  # logits (rows x tokens x vocabulary) computed at once in log_probs


def _resolve_device(name: str) -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        import os

        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def _resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)


class _SamplingTransform:
    """The logits processor that *is* the sampling distribution, and records sampled log-probs."""

    def __init__(self, policy: "HFVLMPolicy"):
        self.policy, self.previous, self.logp = policy, None, []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.previous is not None:
            self.logp.append(self.previous.gather(-1, input_ids[:, -1:])[:, 0])
        scores = self.policy._transform(scores)
        self.previous = torch.log_softmax(scores, dim=-1)
        return scores

    def finish(self, last_tokens: torch.Tensor) -> torch.Tensor:
        """(rows, steps) log-probs of the generated tokens."""
        self.logp.append(self.previous.gather(-1, last_tokens[:, None])[:, 0])
        return torch.stack(self.logp, dim=1)


class _Reference:
    """The KL reference: log-probs of a model that does not train (never saved: it is rebuilt from
    the starting policy, which the run's config and --init describe)."""

    def __init__(self, policy: "HFVLMPolicy", model=None):
        self.policy, self.model = policy, model  # model None: the policy's own, adapter disabled

    def log_probs(self, prompts, groups) -> TokenLogProbs:
        context = self.policy.model.disable_adapter() if self.model is None else nullcontext()
        with torch.no_grad(), context:
            return self.policy.log_probs(prompts, groups, model=self.model)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class HFVLMPolicy(Policy):
    name = "hf"
    Config = HFVLMConfig
    tasks = frozenset({"grounding", "mcq"})
    grpo_defaults = {"lr": 1e-5}
    """GRPO settings that differ from the compact grounder's (a VLM needs a far smaller step)."""
    cpu_threads = 0
    """torch threads for evaluation on a CPU (0 = torch's default, every core: the products are large)."""

    def __init__(self, cfg: HFVLMConfig | None = None):
        self.cfg = (cfg or HFVLMConfig()).validate()
        self.family = model_family(self.cfg.model)
        self.device = _resolve_device(self.cfg.device)
        self.dtype = _resolve_dtype(self.cfg.dtype, self.device)
        self.processor = load_processor(self.cfg.model, self.family, self.cfg.min_pixels, self.cfg.max_pixels)
        self.frame = CoordinateFrame(self.family, self.processor.image_processor)
        self.coordinate_mode = self.frame.coordinate_mode
        self.tokenizer = self.processor.tokenizer
        model = load_model(self.cfg.model, self.family, self.dtype, self.device)
        config = model.config
        self.suppressed = sorted({getattr(config, key) for key in (
            "image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
            if getattr(config, key, None) is not None})
        eos = model.generation_config.eos_token_id
        eos = list(eos) if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else [])
        self.eos_ids = sorted(set(eos) | {self.tokenizer.eos_token_id} - {None})
        self.pad_id = self.tokenizer.pad_token_id
        self.merged: list[dict] = []  # adapters merged into the base weights, oldest first
        self.weights_loaded = False  # trained weights were loaded over the checkpoint's
        self.model = self._prepare(model)
        self._encodings: OrderedDict = OrderedDict()

    # --- model set-up ---------------------------------------------------------------------------
    def _prepare(self, model):
        for param in model.parameters():
            param.requires_grad_(False)
        if self.cfg.lora:
            model = self._new_adapter(model)
        else:
            for name, param in model.named_parameters():
                param.requires_grad_(not (self.cfg.freeze_vision and ".visual." in f".{name}."))
        if self.cfg.gradient_checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        return model

    def _new_adapter(self, base):
        from peft import LoraConfig, get_peft_model

        targets = "|".join(self.cfg.lora_targets)
        config = LoraConfig(r=self.cfg.lora_r, lora_alpha=self.cfg.lora_alpha, lora_dropout=self.cfg.lora_dropout,
                            target_modules=rf".*language_model.*\.({targets})", task_type="CAUSAL_LM")
        state = torch.random.get_rng_state()
        torch.manual_seed(self.cfg.seed)
        try:
            with warnings.catch_warnings():  # peft 0.21 still calls a property transformers 5 renamed
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
                return get_peft_model(base, config)
        finally:
            torch.random.set_rng_state(state)

    def _hf_model(self, model=None):
        """The transformers model (inside peft's wrapper, adapters still in place)."""
        model = self.model if model is None else model
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    def _adapter_trained(self) -> bool:
        return self.cfg.lora and any(bool(p.detach().abs().sum()) for n, p in self.model.named_parameters()
                                     if "lora_B" in n)

    def _merge_adapter(self) -> None:
        """Fold the current adapter into the base weights and start a fresh one (the policy is unchanged)."""
        self.merged.append(self._trainable_state())
        base = self.model.merge_and_unload()
        self.model = self._prepare(base)

    # --- persistence ----------------------------------------------------------------------------
    def _trainable_state(self) -> dict:
        return {n: p.detach().to("cpu", copy=True) for n, p in self.model.named_parameters() if p.requires_grad}

    def state_dict(self) -> dict:
        return {"merged": [dict(m) for m in self.merged], "trainable": self._trainable_state()}

    def load_state_dict(self, state: dict) -> None:
        merged = state.get("merged", [])
        if len(merged) < len(self.merged):  # a resumed run has merged the same starting adapters already
            raise ValueError("the saved policy has fewer merged adapters than this one")
        for adapter in merged[len(self.merged):]:
            self._load_trainable(adapter)
            self._merge_adapter()
        self._load_trainable(state["trainable"])
        self.weights_loaded = True

    def _load_trainable(self, tensors: dict) -> None:
        params = dict(self.model.named_parameters())
        missing = [name for name in tensors if name not in params]
        if missing:
            raise ValueError(f"saved weights do not fit this model ({len(missing)} unknown, e.g. {missing[0]})")
        with torch.no_grad():
            for name, value in tensors.items():
                params[name].copy_(value.to(params[name].device, params[name].dtype))

    def config_dict(self) -> dict:
        return to_dict(self.cfg)

    @classmethod
    def from_payload(cls, payload: dict) -> "HFVLMPolicy":
        policy = cls(from_dict(HFVLMConfig, payload["config"], "policy"))
        policy.load_state_dict(payload["state"])
        return policy

    def export(self, out) -> None:
        """The policy in transformers/peft format (merged adapters folded in; the current adapter as an
        adapter, or the full weights) plus the processor: for tools outside rlad (TRL, verl, vLLM)."""
        from pathlib import Path

        out = Path(out)
        model = self.model
        if self.merged and self.cfg.lora:
            # The base on disk lacks the merged adapters: save the whole merged model instead.
            model = copy.deepcopy(self.model).merge_and_unload()
        model.save_pretrained(out)
        self.processor.save_pretrained(out)

    # --- the Policy contract --------------------------------------------------------------------
    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def frozen_copy(self) -> _Reference:
        if self.cfg.lora:
            if self._adapter_trained():
                self._merge_adapter()
            return _Reference(self)
        twin = copy.deepcopy(self.model).eval()
        for param in twin.parameters():
            param.requires_grad_(False)
        return _Reference(self, twin)

    def prepare_engine_reference(self, folder) -> None:
        """Make the reference an outside trainer (TRL) builds for itself equal this policy as it is now:
        with LoRA, a trained adapter is merged (the trainer disables the new one); with full
        fine-tuning of changed weights, the weights are saved to `folder` and the model's config
        points there (the trainer loads its reference from that path)."""
        if self.cfg.lora:
            if self._adapter_trained():
                self._merge_adapter()
        elif self.weights_loaded:
            self.model.save_pretrained(folder)
            self.model.config._name_or_path = str(folder)

    def train(self, mode: bool = True) -> "HFVLMPolicy":
        self.model.train(mode)
        return self

    def resized_hw(self, size_hw: tuple[int, int]) -> tuple[int, int]:
        return self.frame.resized_hw(size_hw)

    # --- encoding ---------------------------------------------------------------------------------
    def chat_text(self, prompt: Prompt) -> str:
        return self.processor.apply_chat_template(messages(prompt), tokenize=False, add_generation_prompt=True)

    def _encode(self, prompt: Prompt) -> dict:
        key = (prompt.images, prompt.text, prompt.system)
        if key in self._encodings:
            self._encodings.move_to_end(key)
            return self._encodings[key]
        inputs = self.processor(text=[self.chat_text(prompt)], images=load_images(prompt), return_tensors="pt")
        encoded = {"input_ids": inputs["input_ids"][0], "mm_token_type_ids": inputs.get("mm_token_type_ids"),
                   "pixel_values": inputs["pixel_values"], "image_grid_thw": inputs["image_grid_thw"]}
        if encoded["mm_token_type_ids"] is not None:
            encoded["mm_token_type_ids"] = encoded["mm_token_type_ids"][0]
        self._encodings[key] = encoded
        if len(self._encodings) > _ENCODING_CACHE:
            self._encodings.popitem(last=False)
        return encoded

    def _batch(self, encoded: Sequence[dict], completions: Sequence[Sequence[int]] | None = None) -> tuple[dict, int]:
        """Model inputs for rows of (prompt encoding, completion ids): prompts left-padded to one
        width, completions right-padded after them. Returns the inputs and the prompt width."""
        width = max(len(e["input_ids"]) for e in encoded)
        tail = max((len(c) for c in completions), default=0) if completions is not None else 0
        ids, mask, types = [], [], []
        for row, e in enumerate(encoded):
            pad = width - len(e["input_ids"])
            done = list(completions[row]) if completions is not None else []
            fill = tail - len(done)
            ids.append([self.pad_id] * pad + e["input_ids"].tolist() + done + [self.pad_id] * fill)
            mask.append([0] * pad + [1] * len(e["input_ids"]) + [1] * len(done) + [0] * fill)
            mm = e["mm_token_type_ids"]
            types.append([0] * pad + (mm.tolist() if mm is not None else [0] * len(e["input_ids"])) + [0] * tail)
        inputs = {
            "input_ids": torch.tensor(ids, device=self.device),
            "attention_mask": torch.tensor(mask, device=self.device),
            "mm_token_type_ids": torch.tensor(types, device=self.device),
            "pixel_values": torch.cat([e["pixel_values"] for e in encoded]).to(self.device, self.dtype),
            "image_grid_thw": torch.cat([e["image_grid_thw"] for e in encoded]).to(self.device),
        }
        return inputs, width

    # --- the sampling distribution ---------------------------------------------------------------
    def _transform(self, logits: torch.Tensor) -> torch.Tensor:
        """Raw logits -> the logits actually sampled from (fp32)."""
        logits = logits.float() / self.cfg.temperature
        if self.suppressed:
            logits[..., self.suppressed] = float("-inf")
        return logits

    def _token_logp(self, logits: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logp = torch.log_softmax(self._transform(logits), dim=-1)
        probs = logp.exp()
        entropy = -torch.where(probs > 0, probs * logp, torch.zeros_like(probs)).sum(-1)
        return logp.gather(-1, tokens[..., None])[..., 0], entropy

    # --- generation -------------------------------------------------------------------------------
    @contextmanager
    def _seeded(self, generator: torch.Generator | None):
        if generator is None:
            yield
            return
        seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator))
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            yield

    def sample(self, prompts: Sequence[Prompt], n: int, generator: torch.Generator | None = None,
               greedy: bool = False) -> list[list[Completion]]:
        from transformers import GenerationConfig, LogitsProcessorList

        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if not prompts:
            return []
        encoded = [self._encode(p) for p in prompts for _ in range(n)]
        chunk = self.cfg.generation_batch or len(encoded)
        # Every setting that would change the distribution is neutral here (the checkpoint's own
        # generation_config fills only unset fields): `_SamplingTransform` is the whole transform.
        # (Greedy decoding ignores them; transformers' own defaults there keep it from warning about the
        # checkpoint's values.)
        neutral = dict(top_k=0, top_p=1.0, min_p=0.0, typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0,
                       temperature=1.0) if not greedy else dict(top_k=50, top_p=1.0, temperature=1.0)
        config = GenerationConfig(max_new_tokens=self.cfg.max_new_tokens, min_new_tokens=0, do_sample=not greedy,
                                  repetition_penalty=1.0, no_repeat_ngram_size=0, eos_token_id=self.eos_ids,
                                  pad_token_id=self.pad_id, return_dict_in_generate=True, **neutral)
        rows: list[Completion] = []
        model = self.model
        with torch.no_grad(), self._seeded(generator):
            for start in range(0, len(encoded), chunk):
                inputs, width = self._batch(encoded[start:start + chunk])
                transform = _SamplingTransform(self)
                out = model.generate(**inputs, generation_config=config,
                                     logits_processor=LogitsProcessorList([transform]))
                new = out.sequences[:, width:]
                logp = transform.finish(new[:, -1]).cpu()
                rows += [self._completion(ids, lp) for ids, lp in zip(new.cpu().tolist(), logp.tolist())]
        return [rows[i * n:(i + 1) * n] for i in range(len(prompts))]

    def _completion(self, ids: list[int], logp: list[float]) -> Completion:
        end = next((i for i, t in enumerate(ids) if t in self.eos_ids), None)
        keep = len(ids) if end is None else end + 1
        text = self.tokenizer.decode(ids[:keep], skip_special_tokens=True)
        return Completion(text, ids[:keep], logp[:keep], truncated=end is None)

    # --- scoring ----------------------------------------------------------------------------------
    def log_probs(self, prompts: Sequence[Prompt], groups: Sequence[Sequence[Completion]], model=None) -> TokenLogProbs:
        sizes = {len(g) for g in groups}
        if len(groups) != len(prompts) or len(sizes) > 1:
            raise ValueError("log_probs needs one equally sized group of completions per prompt")
        n = sizes.pop() if sizes else 0
        rows = flatten(groups)
        encoded = [self._encode(p) for p in prompts for _ in range(n)]
        tokens = [list(c.token_ids) for c in rows]
        inputs, width = self._batch(encoded, tokens)
        tail = inputs["input_ids"].shape[1] - width
        if tail == 0:
            empty = torch.zeros(len(rows), 1)
            return TokenLogProbs(empty, empty.clone(), empty.clone())
        hf = self._hf_model(model)
        hidden = hf.model(**inputs, use_cache=False).last_hidden_state[:, width - 1:-1]
        targets = inputs["input_ids"][:, width:]
        mask = torch.tensor([[1.0] * len(t) + [0.0] * (tail - len(t)) for t in tokens])
        step = max(1, _LOGIT_BUDGET // max(1, tail * hf.lm_head.out_features))
        logps, entropies = [], []
        for start in range(0, len(rows), step):
            part = slice(start, start + step)
            if torch.is_grad_enabled():
                lp, ent = torch.utils.checkpoint.checkpoint(self._head_logp, hf.lm_head, hidden[part], targets[part],
                                                            use_reentrant=False)
            else:
                lp, ent = self._head_logp(hf.lm_head, hidden[part], targets[part])
            logps.append(lp)
            entropies.append(ent.detach())
        logp = torch.cat(logps).float().cpu() * mask
        entropy = torch.cat(entropies).float().cpu() * mask
        return TokenLogProbs(logp, mask, entropy)

    def _head_logp(self, head, hidden, targets):
        return self._token_logp(head(hidden), targets)
