"""The supervised control for NBS: the same labelled images, augmentation, normal examples, context
channels, predictor network and number of predictor updates, but no loss profile (no autoencoder,
no sampler). Whatever NBS scores above this control is what the loss-profile idea adds.
"""

from __future__ import annotations

import numpy as np
import torch

from rlad.engine import progress
from rlad.errors import ConfigError
from rlad.models.base import AnomalyMap, AnomalyModel, FitData
from rlad.models.nbs.config import NBSConfig
from rlad.models.nbs.context import ContextEncoder
from rlad.models.nbs.head import predict_maps, predictor_optimizer, restore_head, seeded_predictor
from rlad.models.nbs.labelled import fit_context, prepare_labelled, require_labels, to_float_at
from rlad.models.nbs.predictor import Predictor, train_epochs
from rlad.rl.reinforce import linear_anneal


def train_rounds(cfg: NBSConfig, predictor, optimizer, examples: list, seed: int, encode=None, bar=None) -> list[dict]:
    """The control's schedule: one round per NBS cycle, each `predictor_epochs` passes over a fresh
    draw of `predictor_buffer` examples (what NBS's predictor sees per cycle), alpha annealed as in
    NBS. Returns the per-round history; `encode` as in `train_epochs` (benchmarks/nbs_finetune.py)."""
    rng = np.random.default_rng([seed, 104729])
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed + 7)  # dropout
    per_round = min(cfg.predictor_buffer, len(examples))
    history = []
    for cycle in range(cfg.steps // cfg.reset_every):
        alpha = linear_anneal((cycle + 1) * cfg.reset_every, cfg.alpha_anneal_steps, 1.0, cfg.alpha_end)
        chosen = rng.choice(len(examples), size=per_round, replace=False)
        loss = train_epochs(
            predictor, optimizer, [examples[i] for i in chosen], cfg.predictor_epochs,
            cfg.predictor_batch, 0 if encode else cfg.predictor_crop, alpha, generator, encode=encode,
        )
        history.append({"cycle": cycle, "pred_loss": loss, "alpha": alpha})
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")
    predictor.eval()
    return history


class SupervisedControl(AnomalyModel):
    name = "supervised"
    Config = NBSConfig  # one config, so `--set model.*` means the same for both
    uses_labels = True
    default_labeled_per_type = 5

    def __init__(self, config: NBSConfig):
        super().__init__(config)
        self.predictor: Predictor | None = None
        self.encoder: ContextEncoder | None = None
        self.history: list[dict] = []

    def fit(self, data: FitData, run=None) -> None:
        cfg = self.config
        require_labels(data, self.name)
        seed = int(data.seed)
        encoder = fit_context(cfg, data, seed)
        if encoder.channels == 0:
            raise ConfigError("supervised: model.context.kind=none leaves the control with no input; use image, backbone or patchcore")
        lab = prepare_labelled(cfg, data, encoder, to_float_at(data.normal, cfg.profile_size), seed)
        examples = [lab.example(key) for key in lab.keys()]
        predictor = seeded_predictor(cfg, encoder, 0, seed)
        bar = progress(total=cfg.steps // cfg.reset_every, desc="supervised control")
        self.history = train_rounds(cfg, predictor, predictor_optimizer(cfg, predictor), examples, seed, bar=bar)
        bar.close()
        self.predictor = predictor
        self.encoder = encoder

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> AnomalyMap:
        if self.predictor is None or self.encoder is None:
            raise RuntimeError("SupervisedControl.predict before fit/load_state_dict")
        images = images.float()
        return predict_maps(self.config, self.predictor, self.encoder(images), tuple(images.shape[-2:]))

    def state_dict(self) -> dict:
        return {"predictor": self.predictor.state_dict(), "context": self.encoder.state_dict(), "history": self.history}

    def load_state_dict(self, state: dict) -> None:
        self.encoder, self.predictor = restore_head(self.config, state, 0)
        self.history = list(state.get("history", []))
