"""`POST /v1/ground` on a real server holding a grounding run (a tiny compact grounder): the box is
what `rlad ground` answers for the same pair; a missing field is a 4xx and /v1/predict is refused."""

from __future__ import annotations

import httpx
import pytest

from rlad.cli.main import main
from rlad.data.pairs.builders import build_pairs
from rlad.data.pairs.records import load_pairs

SMALL = ["--set", "policy.image_size=64", "--set", "policy.width=16", "--set", "policy.bins=16",
         "--set", "policy.weights=random", "--set", "train.epochs=1"]


@pytest.fixture(scope="module")
def grounding(tiny_patchcore_run, tmp_path_factory, start_server):
    root = tmp_path_factory.mktemp("ground")
    pairs = root / "pairs.jsonl"
    build_pairs(tiny_patchcore_run.parent / "tiny", pairs, synthetic=4, reference="random")
    assert main(["fit", "compact", "--pairs", str(pairs), "--out", str(root / "run"), *SMALL]) == 0
    process, url = start_server(root / "run")
    yield root / "run", next(r for r in load_pairs(pairs) if r.label == 1), url
    process.terminate()
    process.wait(timeout=20)


def test_ground_answers_what_rlad_ground_answers(grounding):
    from rlad.workflows.grounding import ground

    run, record, url = grounding
    files = {name: (f"{name}.png", open(path, "rb").read(), "image/png")
             for name, path in (("reference", record.reference), ("query", record.query))}
    response = httpx.post(f"{url}v1/ground", files=files, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    expected = ground(run, record.reference, record.query)
    assert body["box"] == expected["box"] and body["text"] == expected["text"]
    assert body["query_size"] == list(record.query_size) and body["anomalous"] == expected["anomalous"]

    missing = httpx.post(f"{url}v1/ground", files={"reference": files["reference"]}, timeout=60)
    assert missing.status_code == 400 and "no field 'query'" in missing.json()["error"]
    wrong = httpx.post(f"{url}v1/predict", files={"image": files["query"]}, timeout=60)
    assert wrong.status_code == 404 and "/v1/ground" in wrong.json()["error"]
    assert httpx.get(f"{url}healthz", timeout=30).json()["kind"] == "grounding"
