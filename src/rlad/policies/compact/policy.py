"""CompactPolicy: sampling the box token by token, and log-probs of given answers (the Policy contract)."""

from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn as nn

from rlad.boxes import CoordinateMode
from rlad.config import from_dict, to_dict
from rlad.policies.base import Policy
from rlad.policies.compact.config import CompactConfig
from rlad.policies.compact.features import shared_cache
from rlad.policies.compact.head import CompactHead, end_logits
from rlad.policies.compact.tokens import N_TOKENS, render
from rlad.rl.rollout import Completion, Prompt, TokenLogProbs, flatten


class _Dists:
    """Token logits of N completions, built one token at a time (sampling needs the sampled prefix)."""

    def __init__(self, head: CompactHead, fused, presence, x_logits, index, temperature):
        self.head, self.fused, self.index, self.t = head, fused, index, temperature
        self.presence = presence[index] / temperature
        self.x_start = x_logits[index, 0] / temperature
        self.x_end = x_logits[index, 1]

    def x2(self, x1):
        return end_logits(self.x_end, x1, self.head.width_bias) / self.t

    def y(self, x1, x2):
        logits = self.head.y_logits(self.fused[self.index], x1, x2)
        return logits[:, 0] / self.t, logits[:, 1]

    def y2(self, y_end, y1):
        return end_logits(y_end, y1, self.head.height_bias) / self.t


def _pick(logits: torch.Tensor, greedy: bool, generator: torch.Generator | None) -> torch.Tensor:
    if greedy:
        return logits.argmax(-1)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def _gather(logits: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of `tokens` and the entropy of each row's distribution."""
    logp = torch.log_softmax(logits, dim=-1)
    probs = logp.exp()
    entropy = -(torch.where(probs > 0, probs * logp, torch.zeros_like(probs))).sum(-1)
    return logp.gather(-1, tokens[:, None])[:, 0], entropy


class CompactPolicy(Policy):
    name = "compact"
    Config = CompactConfig
    tasks = frozenset({"grounding"})
    coordinate_mode = CoordinateMode.RELATIVE_1000

    def __init__(self, cfg: CompactConfig | None = None, trunk_state: dict | None = None,
                 head_state: dict | None = None):
        from rlad.models.backbones import FeatureExtractor, MobileNetV2, load_backbone

        self.cfg = (cfg or CompactConfig()).validate()
        if trunk_state is not None:
            extractor = FeatureExtractor(self.cfg.stages, MobileNetV2())
            extractor.load_state_dict(trunk_state)
        else:
            network = load_backbone("mobilenet_v2", self.cfg.weights, seed=self.cfg.seed, option="policy.weights")
            extractor = FeatureExtractor(self.cfg.stages, network)
        self.extractor = extractor
        self.cache = shared_cache(extractor, self.cfg)
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(self.cfg.seed)
        self.head = CompactHead(extractor.channels, self.cfg)
        torch.random.set_rng_state(generator_state)
        if head_state is not None:
            self.head.load_state_dict(head_state)

    # --- persistence ------------------------------------------------------------------------------
    def config_dict(self) -> dict:
        return to_dict(self.cfg)

    def state_dict(self) -> dict:
        return {"head": copy.deepcopy(self.head.state_dict()), "trunk": self.extractor.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.head.load_state_dict(state["head"])

    @classmethod
    def from_payload(cls, payload: dict) -> "CompactPolicy":
        cfg = from_dict(CompactConfig, payload["config"], "policy")
        return cls(cfg, trunk_state=payload["state"]["trunk"], head_state=payload["state"]["head"])

    def frozen_copy(self) -> "CompactPolicy":
        twin = copy.copy(self)
        twin.head = copy.deepcopy(self.head)
        for p in twin.head.parameters():
            p.requires_grad_(False)
        return twin

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.head.parameters() if p.requires_grad]

    def prepare(self, prompts: Sequence[Prompt]) -> None:
        self.cache.ensure(prompts)

    # --- generation -------------------------------------------------------------------------------
    def _dists(self, prompts: Sequence[Prompt], n: int) -> _Dists:
        query, reference, fixed = self.cache.batch(prompts)
        fused, presence, x_logits = self.head.encode(query, reference, fixed)
        index = torch.arange(len(prompts)).repeat_interleave(n)
        return _Dists(self.head, fused, presence, x_logits, index, self.cfg.temperature)

    def sample(self, prompts: Sequence[Prompt], n: int, generator: torch.Generator | None = None,
               greedy: bool = False) -> list[list[Completion]]:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if not prompts:
            return []
        with torch.no_grad():
            d = self._dists(prompts, n)
            present = _pick(d.presence, greedy, generator)
            x1 = _pick(d.x_start, greedy, generator)
            x2 = _pick(d.x2(x1), greedy, generator)
            y_start, y_end = d.y(x1, x2)
            y1 = _pick(y_start, greedy, generator)
            y2 = _pick(d.y2(y_end, y1), greedy, generator)
            tokens = torch.stack([present, x1, x2, y1, y2], dim=1)
            logp = self._token_logp(d, tokens)[0]
        completions = []
        for row, lp in zip(tokens.tolist(), logp.tolist()):
            ids = row if row[0] == 1 else row[:1]
            completions.append(Completion(render(ids, self.cfg.bins), ids, lp[: len(ids)]))
        return [completions[i * n:(i + 1) * n] for i in range(len(prompts))]

    def _token_logp(self, d: _Dists, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        present, x1, x2, y1, y2 = tokens.unbind(1)
        y_start, y_end = d.y(x1, x2)
        pairs = [(d.presence, present), (d.x_start, x1), (d.x2(x1), x2), (y_start, y1), (d.y2(y_end, y1), y2)]
        logps, entropies = zip(*(_gather(logits, tok) for logits, tok in pairs))
        return torch.stack(logps, dim=1), torch.stack(entropies, dim=1)

    def log_probs(self, prompts: Sequence[Prompt], groups: Sequence[Sequence[Completion]]) -> TokenLogProbs:
        sizes = {len(g) for g in groups}
        if len(groups) != len(prompts) or len(sizes) != 1:
            raise ValueError("log_probs needs one equally sized group of completions per prompt")
        n = sizes.pop()
        rows = flatten(groups)
        # Absent coordinates (normal answers) get placeholder bins; the mask removes them.
        tokens = torch.tensor([list(c.token_ids) + [0] * (N_TOKENS - len(c.token_ids)) for c in rows])
        mask = torch.tensor([[1.0] * len(c.token_ids) + [0.0] * (N_TOKENS - len(c.token_ids)) for c in rows])
        d = self._dists(prompts, n)
        logp, entropy = self._token_logp(d, tokens)
        return TokenLogProbs(logp * mask, mask, entropy * mask)
