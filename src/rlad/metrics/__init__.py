"""Metrics: pixel-level (`pixel`), grounding (`grounding`), multiple choice (`choice`)."""


def __getattr__(name):
    # Lazy so `import rlad.metrics.grounding` does not pay for the pixel metrics and vice versa.
    if name == "evaluate":
        from rlad.metrics.pixel import evaluate

        return evaluate
    raise AttributeError(name)
