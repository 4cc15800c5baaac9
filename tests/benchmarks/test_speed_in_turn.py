"""benchmarks/speed.py --retime --alternate: the runs take turns within each round, every model is
warmed up first, and each keeps its fastest round."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import speed  # noqa: E402


def test_models_take_turns_and_keep_their_fastest_round(monkeypatch):
    from rlad.workflows import detection

    calls, clock = [], [0.0]
    cost = {"slow": [0.5, 0.3, 0.4], "fast": [0.2, 0.25, 0.1]}  # seconds per round, whole image set

    def fake_predict(model, images, batch):
        calls.append((model, len(images), batch))
        if len(images) == 8 and batch == 8 or len(images) == 1:  # the warm-ups cost nothing
            return None
        rounds_done = sum(1 for name, n, b in calls if name == model and n == 16 and b == batch) - 1
        clock[0] += cost[model][rounds_done]

    monkeypatch.setattr(detection, "predict_arrays", fake_predict)
    monkeypatch.setattr(speed.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(speed.time, "process_time", lambda: 2 * clock[0])
    rows = speed.time_in_turn({"slow": "slow", "fast": "fast"}, list(range(16)), [1, 8], repeats=3)

    timed = [(name, batch) for name, n, batch in calls if n == 16]
    assert timed == [("slow", 1), ("fast", 1)] * 3 + [("slow", 8), ("fast", 8)] * 3  # turns within each round
    assert calls[:2] == [("slow", 1, 1), ("fast", 1, 1)]  # both warmed up before the first timed round
    assert rows["slow"]["ms_b1"] == 0.3 * 1000 / 16 and rows["fast"]["ms_b1"] == 0.1 * 1000 / 16  # the fastest round
    assert rows["fast"]["cpu_ms_b8"] == 2 * rows["fast"]["ms_b8"] and rows["slow"]["n_images"] == 16
