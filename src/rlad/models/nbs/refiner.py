"""The prior refiner (`rlad fit refine`): NBS's predictor without the loss profile. The same labelled
images, augmentation, normal examples, context channels (backbone features and the PatchCore prior),
predictor network and number of predictor updates as NBS (in batches of 4, NBS's 8, `RefineConfig`),
but no autoencoder and no sampler: a few labelled defects teach the predictor to correct the
unsupervised prior.

It is NBS's supervised control (what NBS scores above it is what the loss-profile idea adds) and,
since profiles add nothing measurable on our data at a fraction of the cost, the method to run in
production (docs/nbs.md, "NBS or the refiner"). Training checkpoints every `checkpoint_every`
rounds through `rlad.engine.TrainingState`; a killed fit resumes where it stopped.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from rlad.engine import TrainingState, progress
from rlad.errors import ConfigError
from rlad.models.base import AnomalyMap, AnomalyModel, FitData
from rlad.models.nbs.config import NBSConfig, RefineConfig
from rlad.models.nbs.context import ContextEncoder
from rlad.models.nbs.head import InferenceHead, head_state, predictor_optimizer, restore_head, seeded_predictor
from rlad.models.nbs.labelled import fit_context, prepare_labelled, require_labels
from rlad.models.nbs.predictor import Predictor, train_epochs
from rlad.rl.reinforce import linear_anneal

CHECKPOINT_STAGE = "refine"


def train_rounds(
    cfg: NBSConfig, predictor, optimizer, examples: list, seed: int, encode=None, bar=None, run=None
) -> list[dict]:
    """The refiner's schedule: one round per NBS cycle, each `predictor_epochs` passes over a fresh
    draw of `predictor_buffer` examples (what NBS's predictor sees per cycle), alpha annealed as in
    NBS. Returns the per-round history; `encode` as in `train_epochs` (benchmarks/nbs_finetune.py).

    With a run directory, a checkpoint every `checkpoint_every` rounds; a run that has one continues
    after it exactly as an uninterrupted run would (the predictor, its optimiser and every random
    stream are restored)."""
    rng = np.random.default_rng([seed, 104729])
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed + 7)  # dropout
    state = TrainingState(run, CHECKPOINT_STAGE, predictor=predictor, optimizer=optimizer, rng=rng, generator=generator)
    saved = state.restore()
    history = list(saved.get("history", []))
    first = int(saved["round"]) + 1 if saved else 0
    if saved:
        torch.set_rng_state(saved["torch_rng"])
        run.log({"event": "resume", "round": first})
    per_round = min(cfg.predictor_buffer, len(examples))
    rounds = cfg.steps // cfg.reset_every
    if bar is not None:
        bar.update(first)
    for cycle in range(first, rounds):
        alpha = linear_anneal((cycle + 1) * cfg.reset_every, cfg.alpha_anneal_steps, 1.0, cfg.alpha_end)
        chosen = rng.choice(len(examples), size=per_round, replace=False)
        loss = train_epochs(
            predictor, optimizer, [examples[i] for i in chosen], cfg.predictor_epochs,
            cfg.predictor_batch, 0 if encode else cfg.predictor_crop, alpha, generator, encode=encode,
        )
        history.append({"cycle": cycle, "pred_loss": loss, "alpha": alpha})
        if run is not None:
            run.log({"event": "round", **history[-1]})
            if (cycle + 1) % cfg.checkpoint_every == 0 and cycle < rounds - 1:
                state.save(cycle, round=cycle, history=history, torch_rng=torch.get_rng_state())
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")
    predictor.eval()
    return history


class PriorRefiner(AnomalyModel):
    name = "refine"
    Config = RefineConfig  # NBS's keys, so `--set model.*` means the same for NBS and the refiner
    uses_labels = True
    default_labeled_per_type = 5

    def __init__(self, config: RefineConfig):
        super().__init__(config)
        self.predictor: Predictor | None = None
        self.encoder: ContextEncoder | None = None
        self.head: InferenceHead | None = None
        self.history: list[dict] = []

    def fit(self, data: FitData, run=None) -> None:
        cfg = self.config
        require_labels(data, self.name)
        if cfg.context.kind == "none":
            raise ConfigError("refine: model.context.kind=none leaves the refiner with no input; use image, backbone or patchcore")
        seed = int(data.seed)
        encoder, negative_context = fit_context(cfg, data, seed)
        lab = prepare_labelled(cfg, data, encoder, negative_context, None, seed)
        examples = [lab.example(key) for key in lab.keys()]
        predictor = seeded_predictor(cfg, encoder, 0, seed)
        bar = progress(total=cfg.steps // cfg.reset_every, desc="refine")
        self.history = train_rounds(cfg, predictor, predictor_optimizer(cfg, predictor), examples, seed, bar=bar, run=run)
        bar.close()
        self.predictor, self.encoder = predictor, encoder
        self.head = InferenceHead(cfg, predictor)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> AnomalyMap:
        if self.head is None or self.encoder is None:
            raise RuntimeError("PriorRefiner.predict before fit/load_state_dict")
        images = images.float()
        return self.head.from_parts(self.encoder.parts(images), tuple(images.shape[-2:]))

    def state_dict(self) -> dict:
        return {**head_state(self.predictor, self.encoder), "history": self.history}

    def load_state_dict(self, state: dict) -> None:
        self.encoder, self.predictor = restore_head(self.config, state, 0)
        self.head = InferenceHead(self.config, self.predictor)
        self.history = list(state.get("history", []))

    def extra_files(self) -> dict:
        return {"refine_history.json": json.dumps(self.history, indent=1).encode()}
