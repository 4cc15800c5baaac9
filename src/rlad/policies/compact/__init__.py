"""The compact grounder: a CPU-trainable stochastic policy (reference, query) -> box, as text.

Why it exists: a 7B VLM cannot be trained here, yet DifferAD-R1's recipe (rewards on the answer
text, GRPO with difficulty weights and group resampling) has to be tested on real data. This policy
writes exactly what a VLM writes, `<think>...</think><answer>(x1,y1),(x2,y2)</answer>` in 0..1000
coordinates (Qwen2-VL's convention), so the same reward functions and loop train it.

Model (see docs/grounding.md for the picture):

1. A frozen ImageNet MobileNetV2 trunk encodes both images (shared weights) at strides 4, 8 and 16.
   Its features are computed once per image and cached, so GRPO steps never touch the trunk.
2. Comparison maps on the stride-8 grid (G x G, G = image_size / 8):
   * fixed, per stage: the cosine distance of query and reference features at the same position
     (aligned products) and to the nearest reference position anywhere (a one-shot PatchCore:
     alignment-free, works for textures and shifted parts), each raw and divided by its image mean;
   * learned, per stage: a shared 1x1 projection P of both images, then |Pq - Pr| and Pq * Pr.
   A small dilated CNN fuses them (+ two coordinate channels) into a map F (width x G x G).
3. The box is a short token sequence, each token a categorical distribution:
   presence (normal / defect); then, if defect, x1, x2 | x1, y1 | x1..x2, y2 | y1, x1..x2. The x
   tokens read a column profile of F (max and mean over rows); the y tokens read a row profile of F
   restricted to the chosen columns, so y follows the x the policy already committed to. End tokens
   get a learned bias per box width/height and can never precede their start (boxes are always
   valid). Coordinates are quantised to `bins` per axis: start bin b -> 1000 * b / bins, end bin
   e -> 1000 * (e + 1) / bins.
4. The think block is a template filled from the box (so the format reward is 1 whenever the
   policy emits a box; the compact policy cannot fail the format, only the localization).

Modules: `config` (CompactConfig), `tokens` (box <-> token sequence, the rendered answer), `features`
(frozen-trunk features and fixed comparison maps, cached), `head` (the trainable part), `policy`
(CompactPolicy: sampling and log-probs), `warm_start` (the supervised start before GRPO).
"""
