"""`rlad serve RUN`: an HTTP inspection server for a fitted pixel run, an exported `.onnx` file or a
grounding run (docs/deploy.md). Sits between `rlad.cli` and `rlad.workflows` in the layers."""
