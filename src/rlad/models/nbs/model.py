"""The `nbs` AnomalyModel: `fit` runs the training cycles of `rlad.models.nbs.cycle` top to bottom;
`predict` replays the final cycle's autoencoder snapshots on an image to get its loss profile
(exactly as training computed the labelled images'), adds the context channels, and runs the
predictor. Seen and unseen images are treated the same, and the result is deterministic.
"""

from __future__ import annotations

import json
import time

import numpy as np
import torch

from rlad.engine import progress, status
from rlad.models.base import AnomalyMap, AnomalyModel, FitData
from rlad.models.nbs import cycle as nbs_cycle
from rlad.models.nbs.config import NBSConfig
from rlad.models.nbs.context import ContextEncoder
from rlad.models.nbs.head import InferenceHead, head_state, restore_head
from rlad.models.nbs.labelled import fit_context, prepare_labelled, require_labels, to_float_at
from rlad.models.nbs.predictor import Predictor
from rlad.models.nbs.profiles import SnapshotBank, profile_features, resize
from rlad.models.nbs.sampler import SamplerMaps, SamplerPolicy
from rlad.models.nearest import uses_bf16
from rlad.rl.reinforce import linear_anneal


class NBSModel(AnomalyModel):
    name = "nbs"
    Config = NBSConfig
    uses_labels = True
    default_labeled_per_type = 5

    def __init__(self, config: NBSConfig):
        super().__init__(config)
        self.predictor: Predictor | None = None
        self.bank: SnapshotBank | None = None
        self.encoder: ContextEncoder | None = None
        self.history: list[dict] = []
        self.policy: SamplerPolicy | None = None  # the trained sampler, for inspection (not saved)
        self.head: InferenceHead | None = None

    def profile_input(self, errors: torch.Tensor) -> torch.Tensor:
        """Raw errors (B, window, h, w) at profile size -> log errors on the predictor grid."""
        return profile_features(errors, self.config.predictor_grid)

    def loss_profile(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, S, S) in [0, 1] -> their loss profile under the snapshot bank as predictor
        input (B, window, grid, grid): `profile_input` of the replayed errors, computed the cheap way."""
        return self.bank.features(resize(images, self.config.profile_size), self.config.predictor_grid,
                                  self.profile_dtype())

    def profile_dtype(self) -> torch.dtype:
        """The arithmetic `model.profile_precision` asks for on this CPU."""
        return torch.bfloat16 if uses_bf16(self.config.profile_precision) else torch.float32

    # --- fit --------------------------------------------------------------------------------------
    def fit(self, data: FitData, run=None) -> None:
        cfg = self.config
        require_labels(data, self.name)
        seed = int(data.seed)

        pool = to_float_at(data.normal, cfg.profile_size)  # the sampler's images (unlabelled normals)
        maps = SamplerMaps.of(pool) if cfg.sampler != "uniform" else None
        status(f"nbs: context ({cfg.context.kind}) for {len(data.labeled_images)} labelled image(s) x {cfg.augment_copies}")
        encoder, negative_context = fit_context(cfg, data, seed)
        lab = prepare_labelled(cfg, data, encoder, negative_context, pool, seed)

        learners = nbs_cycle.start_learners(cfg, encoder, seed)
        torch.manual_seed(seed + 7)  # the predictor's dropout: a seeded run repeats exactly
        start_cycle = self._resume(learners, run)
        total_cycles = cfg.steps // cfg.reset_every
        bar = progress(total=total_cycles * cfg.reset_every, desc=f"nbs ({cfg.sampler})", initial=start_cycle * cfg.reset_every)
        for cycle in range(start_cycle, total_cycles):
            started = time.perf_counter()
            if cfg.reset and cycle > 0:
                nbs_cycle.reset_autoencoder(cfg, learners, seed, cycle)
            profile_set = nbs_cycle.choose_profile_set(cfg, learners, lab)
            trace = nbs_cycle.run_autoencoder(cfg, learners, pool, maps, profile_set.images, bar)
            step = (cycle + 1) * cfg.reset_every
            alpha = linear_anneal(step, cfg.alpha_anneal_steps, 1.0, cfg.alpha_end)
            beta = linear_anneal(step, cfg.beta_anneal_steps, 1.0, 0.0)

            profiles = self.profile_input(torch.stack(trace.errors, dim=1)).half()
            entries = list(zip(profiles, profile_set.keys))
            reward_examples = [lab.example(key, profile) for profile, key in entries[: len(lab.reward_ids)]]
            r_pred = nbs_cycle.predictor_reward(learners.predictor, reward_examples, alpha)
            pred_loss = nbs_cycle.train_predictor(cfg, learners, lab, entries, alpha)
            sampler_stats = {}
            if cfg.sampler == "learned" and trace.recorded:
                sampler_stats = nbs_cycle.update_sampler(cfg, learners, trace.recorded, beta, r_pred)

            row = {
                "event": "cycle",
                "cycle": cycle,
                "step": step,
                "ae_loss": float(np.mean(trace.ae_losses)),
                "ae_loss_last": trace.ae_losses[-1],
                "r_pred": r_pred,
                "pred_loss": pred_loss,
                "alpha": alpha,
                "beta": beta,
                "seconds": time.perf_counter() - started,
                **sampler_stats,
            }
            learners.history.append(row)
            bar.set_postfix(
                ae=f"{row['ae_loss_last']:.4f}", pred=f"{pred_loss:.3f}", r_pred=f"{r_pred:.3f}",
                reward=f"{sampler_stats.get('reward', float('nan')):.3f}",
            )
            if run is not None:
                run.log(row)
                last = cycle == total_cycles - 1
                if not last and (cycle + 1) % cfg.checkpoint_every == 0:
                    nbs_cycle.save_checkpoint(run, learners, cycle, step)
        bar.close()
        learners.predictor.eval()
        self.predictor = learners.predictor
        self.bank = learners.bank
        self.encoder = encoder
        self.history = learners.history
        self.policy = learners.policy
        self.head = InferenceHead(cfg, self.predictor)

    def _resume(self, learners: nbs_cycle.Learners, run) -> int:
        """The cycle to start with: after the run's latest checkpoint, loaded into `learners`, or 0."""
        start_cycle = nbs_cycle.resume(run, learners)
        if start_cycle:
            run.log({"event": "resume", "step": start_cycle * self.config.reset_every, "cycle": start_cycle})
        return start_cycle

    # --- inference --------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> AnomalyMap:
        if self.head is None or self.bank is None or self.encoder is None:
            raise RuntimeError("NBSModel.predict before fit/load_state_dict")
        images = images.float()
        return self.head.from_parts([self.loss_profile(images), *self.encoder.parts(images)], tuple(images.shape[-2:]))

    # --- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {**head_state(self.predictor, self.encoder), "snapshots": self.bank.snapshots, "history": self.history}

    def load_state_dict(self, state: dict) -> None:
        self.encoder, self.predictor = restore_head(self.config, state, self.config.window)
        self.head = InferenceHead(self.config, self.predictor)
        self.bank = SnapshotBank(state["snapshots"], template=nbs_cycle.autoencoder_for(self.config))
        self.history = list(state.get("history", []))

    def extra_files(self) -> dict:
        return {"nbs_history.json": json.dumps(self.history, indent=1).encode()}
