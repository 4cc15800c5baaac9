"""Shared fixtures.

`tiny_mvtec(tmp_path) -> Path` writes a small valid MVTec-AD-layout category and returns its folder
(`tmp_path / "tiny"`). Keep its signature and contents stable; other tests rely on them:

    train/good/000.png .. 005.png                 6 normal images
    test/good/000.png .. 002.png                  3 normal images
    test/hole/000.png, 001.png                    dark filled disc
    test/scratch/000.png, 001.png                 dark diagonal line
    ground_truth/{hole,scratch}/00N_mask.png      exact masks, mode L, values {0, 255}

Every image is an RGB PNG of width 64 and height 48 (`Sample.size == (48, 64)`): a smooth
seeded texture (normal images differ only by noise), defects drawn with PIL on top, so a model can
tell them apart. Deterministic: the same bytes on every call.

`square_pairs` (session): 16 generated pairs, flat noisy references and a bright square in one of
four corners of the query (nothing in every fourth), 64 x 64: a trivially learnable difference;
`square_prompts` are their grounding prompts.

`tiny_mvtec_factory(root, **options) -> Path` writes the same layout under any folder (e.g. several
categories under one root); options: `n_train`, `n_test_good`, `defect_types`, `n_per_type`, `size`
as (height, width).

`tiny_patchcore_run` (session): a PatchCore run on that data (random backbone, 64 px), data beside it.
`metrics_recomputed(run, data) -> dict`: a run's test-split n_test, image and pixel AUROC computed
independently (scikit-learn on the run's own maps of the images `rlad test` scores), to compare the
reported metrics with.
`imagenet_mobilenet`: torchvision's MobileNetV2 file from ../shared/weights (skips when absent).
`LetterPolicy` (fixture `letter_policy`: the class): the smallest policy that answers multiple-choice
prompts. It reads the lettered options from the prompt text and samples a letter from a categorical
whose logits are learnable weights of the option *texts*, so it learns which answer is right
wherever the shuffle put it. `registered_letter_policy` also registers it as policy "letters" (for
`rlad grpo --policy letters`, saved runs and `rlad test-questions`).
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from rlad.data.pairs.records import PairRecord
from rlad.policies.base import Policy
from rlad.rl.rollout import Completion, TokenLogProbs

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

TINY_SIZE = (48, 64)  # (height, width)
SQUARE_SIZE = 64


def pytest_configure(config):
    # Under pytest-xdist each worker gets one core; torch's default (all cores per process) would
    # oversubscribe the 2-core CI machine and slow every test down.
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _quiet_progress(monkeypatch, tmp_path_factory):
    """Progress bars off in every test (they go to stderr and would clutter captured output)."""
    monkeypatch.setenv("RLAD_PROGRESS", "0")
    # Tests decide themselves whether a backbone has real weights: `weights=random`, or a path such as
    # `imagenet_mobilenet`. The default (`imagenet`) finds no file here: an empty torch hub cache, and a
    # download URL on a closed loopback port, so nothing is ever fetched from the network.
    monkeypatch.delenv("RLAD_BACKBONE_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))
    monkeypatch.setenv("RLAD_WEIGHTS_URL", "http://127.0.0.1:9/")


def _texture(rng: np.random.Generator, size_hw: tuple[int, int]) -> np.ndarray:
    height, width = size_hw
    rows, cols = np.mgrid[0:height, 0:width]
    base = 150 + 30 * np.sin(cols / 5.0) * np.cos(rows / 7.0)
    noisy = base[:, :, None] + rng.normal(0, 6, size=(height, width, 3)) + np.array([10, 0, -10])
    return np.clip(noisy, 0, 255).astype(np.uint8)


def _draw_defect(kind: str, index: int, size_hw: tuple[int, int]) -> Image.Image:
    """The defect's mask (mode L, {0, 255}); the same shape is painted on the image."""
    height, width = size_hw
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    if kind == "hole":
        cx, cy, r = width // 3 + 12 * index, height // 2, 6
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    else:
        x0 = 8 + 10 * index
        draw.line((x0, 6, x0 + 30, height - 6), fill=255, width=3)
    return mask


def write_tiny_mvtec(
    root: Path,
    *,
    n_train: int = 6,
    n_test_good: int = 3,
    defect_types: tuple[str, ...] = ("hole", "scratch"),
    n_per_type: int = 2,
    size: tuple[int, int] = TINY_SIZE,
    seed: int = 0,
) -> Path:
    rng = np.random.default_rng(seed)
    root = Path(root)
    for split, count in (("train", n_train), ("test", n_test_good)):
        folder = root / split / "good"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.fromarray(_texture(rng, size)).save(folder / f"{i:03d}.png")
    for kind in defect_types:
        images = root / "test" / kind
        masks = root / "ground_truth" / kind
        images.mkdir(parents=True, exist_ok=True)
        masks.mkdir(parents=True, exist_ok=True)
        for i in range(n_per_type):
            pixels = _texture(rng, size)
            mask = _draw_defect(kind, i, size)
            pixels[np.asarray(mask) > 0] = (30, 25, 20)
            Image.fromarray(pixels).save(images / f"{i:03d}.png")
            mask.save(masks / f"{i:03d}_mask.png")
    return root


@pytest.fixture
def tiny_mvtec(tmp_path) -> Path:
    return write_tiny_mvtec(tmp_path / "tiny")


@pytest.fixture
def tiny_mvtec_factory():
    return write_tiny_mvtec


@pytest.fixture(scope="session")
def tiny_patchcore_run(tmp_path_factory) -> Path:
    """A PatchCore run (random backbone, 64 px) fitted once per session on `tiny_mvtec`'s data, which
    lies beside it (`run.parent / "tiny"`). Tests may read it, score with it and add files next to it."""
    from rlad.workflows import detection

    root = tmp_path_factory.mktemp("tiny_patchcore")
    data = write_tiny_mvtec(root / "tiny")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RLAD_PROGRESS", "0")
        cfg = detection.build_config("patchcore", None, ["image_size=64", "model.backbone.weights=random"])
        detection.fit("patchcore", data, root / "run", cfg)
    return root / "run"


IMAGENET_MOBILENET = REAL_DATA.parent / "weights" / "mobilenet_v2-b0353104.pth"


@pytest.fixture
def imagenet_mobilenet() -> Path:
    """torchvision's ImageNet MobileNetV2 file from `../shared/weights`; the test skips when it is absent."""
    if not IMAGENET_MOBILENET.is_file():
        pytest.skip(f"ImageNet MobileNetV2 weights not found at {IMAGENET_MOBILENET} (read from ../shared/weights)")
    return IMAGENET_MOBILENET


@pytest.fixture
def real_data_dir():
    """`../shared/data` next to the repository; tests marked realdata skip when it is absent."""
    return REAL_DATA


def real_folder(name: str) -> Path:
    path = REAL_DATA / name
    if not (path / "train").is_dir():
        pytest.skip(f"real dataset {path} not found (read by path from ../shared/data)")
    return path


@pytest.fixture
def magnetic_tile() -> Path:
    return real_folder("magnetic_tile")


@pytest.fixture
def mpdd_metal_plate() -> Path:
    return real_folder("mpdd_metal_plate_512")


def write_square_pairs(root: Path, n: int, seed: int = 0) -> list[PairRecord]:
    """Flat noisy references; the query is its reference plus a bright square in one of four
    corners (or nothing, for every fourth pair): a trivially learnable difference."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    corners = [(4, 4), (36, 4), (4, 36), (36, 36)]
    records = []
    for i in range(n):
        base = np.clip(0.45 + rng.normal(0, 0.03, size=(SQUARE_SIZE, SQUARE_SIZE, 3)), 0, 1)
        query = base.copy()
        box = (0, 0, 0, 0)
        if i % 4 != 3:
            x, y = corners[int(rng.integers(4))]
            query[y:y + 24, x:x + 24] = 0.95
            box = (x, y, x + 24, y + 24)
        for name, image in (("r", base), ("q", query)):
            Image.fromarray((image * 255).astype(np.uint8)).save(root / f"{i:03d}{name}.png")
        records.append(PairRecord(f"sq{i}", str(root / f"{i:03d}r.png"), str(root / f"{i:03d}q.png"), box,
                                  (SQUARE_SIZE, SQUARE_SIZE), (SQUARE_SIZE, SQUARE_SIZE), "squares", "square" if any(box) else "good"))
    return records


@pytest.fixture(scope="session")
def square_pairs(tmp_path_factory):
    return write_square_pairs(tmp_path_factory.mktemp("squares"), 16)


@pytest.fixture(scope="session")
def square_prompts(square_pairs):
    from rlad.tasks.grounding import GroundingTask

    return [GroundingTask().prompt(r) for r in square_pairs]


# ----------------------------------------------------------------------- a multiple-choice policy
_OPTION_LINE = re.compile(r"^([A-Z])\. (.+)$", re.MULTILINE)


@dataclass
class LetterPolicyConfig:
    seed: int = 0

    def validate(self) -> "LetterPolicyConfig":
        return self


class LetterPolicy(Policy):
    name = "letters"
    Config = LetterPolicyConfig
    tasks = frozenset({"mcq"})

    def __init__(self, cfg: LetterPolicyConfig | None = None, vocab=None, weights=None):
        self.cfg = cfg or LetterPolicyConfig()
        self.vocab = list(vocab or [])
        self.weights = torch.nn.Parameter(torch.as_tensor(weights, dtype=torch.float32) if weights is not None
                                          else torch.zeros(len(self.vocab)))
        self.prepared: list = []  # every prompt it was prepared with (tests read images and texts)

    @staticmethod
    def options(prompt) -> list[tuple[str, str]]:
        return _OPTION_LINE.findall(prompt.text)

    def prepare(self, prompts) -> None:
        self.prepared += list(prompts)
        new = sorted({text for p in prompts for _, text in self.options(p)} - set(self.vocab))
        if new:
            self.vocab += new
            self.weights = torch.nn.Parameter(torch.cat([self.weights.detach(), torch.zeros(len(new))]))

    def _logp(self, prompt) -> torch.Tensor:
        index = torch.tensor([self.vocab.index(text) for _, text in self.options(prompt)])
        return torch.log_softmax(self.weights[index], dim=-1)

    def sample(self, prompts, n, generator=None, greedy=False):
        out = []
        for prompt in prompts:
            letters = [letter for letter, _ in self.options(prompt)]
            with torch.no_grad():
                logp = self._logp(prompt)
            picks = ([int(logp.argmax())] * n if greedy
                     else torch.multinomial(logp.exp(), n, replacement=True, generator=generator).tolist())
            out.append([Completion(f"<think>I choose {letters[k]}.</think><answer>{letters[k]}</answer>", [k],
                                   [float(logp[k])]) for k in picks])
        return out

    def log_probs(self, prompts, groups):
        chosen, entropy = [], []
        for prompt, group in zip(prompts, groups):
            logp = self._logp(prompt)
            for completion in group:
                chosen.append(logp[completion.token_ids[0]])
                entropy.append(-(logp.exp() * logp).sum())
        logp = torch.stack(chosen)[:, None]
        return TokenLogProbs(logp, torch.ones_like(logp), torch.stack(entropy)[:, None])

    def trainable_parameters(self):
        return [self.weights]

    def frozen_copy(self):
        twin = copy.copy(self)
        twin.vocab = list(self.vocab)
        twin.weights = torch.nn.Parameter(self.weights.detach().clone(), requires_grad=False)
        return twin

    def state_dict(self):
        return {"vocab": list(self.vocab), "weights": self.weights.detach().clone()}

    def load_state_dict(self, state):
        if list(state["vocab"]) != self.vocab:  # a resumed run: replace, the optimizer is rebuilt from it
            self.vocab = list(state["vocab"])
            self.weights = torch.nn.Parameter(state["weights"].clone())
            return
        with torch.no_grad():
            self.weights.copy_(state["weights"])

    def config_dict(self):
        return asdict(self.cfg)

    @classmethod
    def from_payload(cls, payload):
        state = payload["state"]
        return cls(LetterPolicyConfig(**payload["config"]), vocab=state["vocab"], weights=state["weights"])


@pytest.fixture
def letter_policy():
    return LetterPolicy


@pytest.fixture
def registered_letter_policy(monkeypatch):
    """LetterPolicy registered as "letters" for the registry, the workflows and the CLI's --policy choices."""
    import rlad.cli.grounding
    import rlad.policies.registry as registry
    import rlad.workflows.grounding

    original = registry.policy_class

    def policy_class(name):
        return LetterPolicy if name == "letters" else original(name)

    monkeypatch.setattr(registry, "policy_class", policy_class)
    monkeypatch.setattr(rlad.workflows.grounding, "policy_class", policy_class)
    monkeypatch.setattr(rlad.cli.grounding, "POLICY_NAMES", (*registry.POLICY_NAMES, "letters"))
    return LetterPolicy


@pytest.fixture
def metrics_recomputed():
    """A run's test metrics computed without `rlad test`: its maps of the test split (labelled and
    development images left out as the run recorded them), scored by scikit-learn."""

    def compute(run_path, data) -> dict:
        import warnings

        from sklearn.metrics import roc_auc_score

        from rlad.data.folder import discover
        from rlad.data.split import evaluation_samples
        from rlad.data.transforms import load_samples
        from rlad.workflows import detection

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # random-weight backbones
            loaded = detection.load_run(run_path)
            samples = evaluation_samples(loaded.split, discover(data)).samples
            images, masks = load_samples(samples, loaded.cfg.image_size, desc="reference")
            pred = detection.predict_arrays(loaded.model, images, loaded.cfg.batch_size)
        return {
            "n_test": len(samples),
            "image_auroc": float(roc_auc_score([s.label for s in samples], pred.scores)),
            "pixel_auroc": float(roc_auc_score(masks.ravel() > 0, pred.maps.ravel())),
        }

    return compute


# Headless Chromium, for the tests that look at rendered pages (report.html, the serve page).
@pytest.fixture
def headless_chromium() -> list[str]:
    """The command that starts the system Chromium headless (append a profile, flags and a URL); skips
    the test when there is none, unless RLAD_REQUIRE_CHROMIUM (set by .ci/run) asks for a failure."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        if os.environ.get("RLAD_REQUIRE_CHROMIUM"):
            pytest.fail("chromium not found, and RLAD_REQUIRE_CHROMIUM is set (apt-get install chromium)")
        pytest.skip("chromium not installed (Debian: apt-get install chromium); .ci/run installs it")
    return [found, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


@pytest.fixture
def killed_cli_fit():
    """`kill(argv, run)`: start `rlad <argv>` in its own process, SIGKILL it as soon as its first checkpoint
    is on disk (asserting it was still training), and return (command, env) to rerun it with."""

    def kill(argv: list[str], run) -> tuple[list[str], dict]:
        command = [sys.executable, "-m", "rlad", *argv]
        env = dict(os.environ, RLAD_PROGRESS="0", OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while not list((run / "checkpoints").glob("*.pt")) and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.02)
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert not (run / "model.pt").exists()
        return command, env

    return kill
