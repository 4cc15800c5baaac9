"""Loading and saving a Qwen-VL checkpoint's model and processor with transformers.

The processor is loaded the ordinary way (`AutoProcessor.from_pretrained`) when that works. Without
torchvision (rlad keeps it optional: the PyPI wheel is a CUDA build that breaks on CPU-only torch),
transformers cannot build the Qwen video processors, and the Qwen processors refuse a missing one;
images need only the tokenizer and the PIL image processor, so rlad then builds an *image-only*
processor of the same family from those parts. Saving mirrors it: the full processor where it can
be saved, else its parts (tokenizer, image processor, chat template), which both paths load again.
"""

from __future__ import annotations

from pathlib import Path

from rlad.errors import ConfigError

# model_type -> (model class, processor class) names in transformers
FAMILY_CLASSES = {
    "qwen2_vl": ("Qwen2VLForConditionalGeneration", "Qwen2VLProcessor"),
    "qwen2_5_vl": ("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor"),
    "qwen3_vl": ("Qwen3VLForConditionalGeneration", "Qwen3VLProcessor"),
}
FAMILIES = tuple(FAMILY_CLASSES)


VLM_MODULES = ("transformers", "peft", "tokenizers")
"""What the `vlm` extra brings that the policy imports (the TRL route adds trl, datasets, accelerate)."""


def require_vlm_extra(modules=VLM_MODULES, what: str = "the 'hf' policy") -> None:
    """Refuse in one line, before any work, when a module of the `vlm` extra cannot be imported."""
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"{what} needs the vlm extra: pip install 'rlad[vlm]' (cannot import {name}: "
                              f"{str(exc).splitlines()[0]})") from None


def model_family(source: str) -> str:
    """The family (`model_type`) of a local checkpoint folder or hub id, refused when not supported."""
    require_vlm_extra()
    from transformers import AutoConfig

    from rlad.policies.hf_vlm.config import looks_like_hub_id

    if not source:
        raise ConfigError("policy.model is empty: give a Qwen-VL checkpoint folder or hub id (--model PATH)")
    local = Path(source).expanduser()
    if not local.exists() and not looks_like_hub_id(source):
        raise ConfigError(f"--model {source}: no such checkpoint folder")
    if local.is_dir() and not (local / "config.json").is_file():
        hint = (" (it is an rlad run: continue from it with --init RUN)"
                if (local / "model.pt").is_file() or (local / "config.yaml").is_file() else "")
        raise ConfigError(f"--model {source}: not a transformers checkpoint folder (no config.json){hint}")
    try:
        config = AutoConfig.from_pretrained(str(local) if local.exists() else source)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"--model {source}: cannot read a transformers config ({str(exc).splitlines()[0]})") from None
    family = getattr(config, "model_type", None)
    if family not in FAMILY_CLASSES:
        raise ConfigError(f"--model {source}: model type {family!r} is not supported; rlad's VLM policy runs "
                          f"{', '.join(FAMILIES)}")
    return family


def _image_only(processor_cls):
    """`processor_cls` accepting video_processor=None (images need no video processor), saved as its
    parts (the whole processor cannot save itself without one)."""
    def check(self, name, argument):
        if argument is None and "video" in name:
            return None
        return processor_cls.check_argument_for_proper_class(self, name, argument)

    def save_pretrained(self, out, **kwargs):
        save_processor_parts(out, self.tokenizer, self.image_processor, self.chat_template)

    return type(f"ImageOnly{processor_cls.__name__}", (processor_cls,),
                {"check_argument_for_proper_class": check, "save_pretrained": save_pretrained})


def load_processor(source: str, family: str, min_pixels: int = 0, max_pixels: int = 0):
    """The checkpoint's processor (left padding, for batched generation); `min_pixels` / `max_pixels`
    (0 = keep) override the image processor's pixel budget, from which its resize rule follows."""
    import transformers
    from transformers import AutoProcessor, AutoTokenizer

    try:
        processor = AutoProcessor.from_pretrained(source)
        if not hasattr(processor, "image_processor"):  # a folder without the model's config: a tokenizer came back
            raise TypeError(type(processor).__name__)
    except (ImportError, TypeError, ValueError, AttributeError):
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        try:
            tokenizer = AutoTokenizer.from_pretrained(source)
            image_processor = Qwen2VLImageProcessorPil.from_pretrained(source)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"--model {source}: cannot load its tokenizer and image processor "
                              f"({str(exc).splitlines()[0]})") from None
        processor_cls = _image_only(getattr(transformers, FAMILY_CLASSES[family][1]))
        processor = processor_cls(image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
                                  chat_template=tokenizer.chat_template)
    processor.tokenizer.padding_side = "left"
    if processor.tokenizer.pad_token is None:
        processor.tokenizer.pad_token = processor.tokenizer.eos_token
    if min_pixels or max_pixels:
        size = processor.image_processor.size
        processor.image_processor.size = {"shortest_edge": int(min_pixels or size["shortest_edge"]),
                                          "longest_edge": int(max_pixels or size["longest_edge"])}
    if not processor.chat_template:
        raise ConfigError(f"--model {source}: the processor has no chat template")
    return processor


def save_processor_parts(out: str | Path, tokenizer, image_processor, chat_template: str) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(out)
    image_processor.save_pretrained(out)


def load_model(source: str, family: str, dtype, device):
    import transformers

    model_cls = getattr(transformers, FAMILY_CLASSES[family][0])
    try:
        model = model_cls.from_pretrained(source, dtype=dtype)
    except OSError as exc:
        raise ConfigError(f"--model {source}: cannot load the model's weights ({str(exc).splitlines()[0]})") from None
    return model.to(device)


class CoordinateFrame:
    """How a family writes boxes, without the model's weights: what a task needs to convert ground
    truth (`coordinate_mode`, `resized_hw`), for the policy and for data exporters alike."""

    def __init__(self, family: str, image_processor):
        from rlad.boxes import CoordinateMode

        self.family, self.image_processor = family, image_processor
        # Qwen2.5-VL answers in pixels of its resized input; Qwen2-VL and Qwen3-VL in 0..1000.
        self.coordinate_mode = CoordinateMode.RESIZED if family == "qwen2_5_vl" else CoordinateMode.RELATIVE_1000
        self._cache: dict = {}

    @classmethod
    def from_checkpoint(cls, source: str, min_pixels: int = 0, max_pixels: int = 0) -> "CoordinateFrame":
        family = model_family(source)
        return cls(family, load_processor(source, family, min_pixels, max_pixels).image_processor)

    def resized_hw(self, size_hw) -> tuple[int, int]:
        """The size the processor resizes an image of `size_hw` to, by the processor's own rule."""
        import sys

        key = (int(size_hw[0]), int(size_hw[1]))
        if key not in self._cache:
            ip = self.image_processor
            smart_resize = sys.modules[type(ip).__module__].smart_resize
            self._cache[key] = tuple(smart_resize(key[0], key[1], factor=ip.patch_size * ip.merge_size,
                                                  min_pixels=ip.size["shortest_edge"],
                                                  max_pixels=ip.size["longest_edge"]))
        return self._cache[key]
