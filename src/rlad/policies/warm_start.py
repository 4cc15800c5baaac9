"""The supervised warm start's training loop, one for every policy (compact/warm_start.py,
hf_vlm/warm_start.py bring the loss): epochs over the pairs in a seeded random order, AdamW,
resumable from the run's last warm-start checkpoint."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from rlad.engine import TrainingState, progress


def warm_start_epochs(policy, n_pairs: int, batch_loss: Callable[[np.ndarray], torch.Tensor], cfg, seed: int = 0,
                      run=None, max_grad_norm: float = 0.0) -> list[dict]:
    """`cfg.epochs` epochs over `n_pairs` pairs, `cfg.batch_size` at a time: AdamW (`cfg.lr`,
    `cfg.weight_decay`) on `policy.trainable_parameters()` steps on `batch_loss(indices)`, the mean loss of
    those pairs, with the gradient norm clipped to `max_grad_norm` (0 = off). Every `cfg.checkpoint_every`
    epochs but the last, a checkpoint in `run`; a rerun resumes from the last one. Returns (and logs to
    `run`) each epoch's mean loss."""
    optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(seed)
    state = TrainingState(run, "warm_start", policy=policy, optimizer=optimizer, rng=rng)
    resumed = state.restore()
    start_epoch, history = resumed.get("epoch", 0), resumed.get("history", [])
    bar = progress(total=cfg.epochs, initial=start_epoch, desc="warm start")
    for epoch in range(start_epoch, cfg.epochs):
        order = rng.permutation(n_pairs)
        total, count = 0.0, 0
        for start in range(0, len(order), cfg.batch_size):
            batch = order[start:start + cfg.batch_size]
            loss = batch_loss(batch)
            optimizer.zero_grad()
            loss.backward()
            if max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(policy.trainable_parameters(), max_grad_norm)
            optimizer.step()
            total += loss.item() * len(batch)
            count += len(batch)
        history.append({"epoch": epoch + 1, "loss": total / count})
        bar.update(1)
        bar.set_postfix(loss=f"{total / count:.3f}")
        if run is not None:
            run.log({"stage": "warm_start", **history[-1]})
        if (epoch + 1) % cfg.checkpoint_every == 0 and epoch + 1 < cfg.epochs:
            state.save(epoch + 1, epoch=epoch + 1, history=history)
    bar.close()
    return history
