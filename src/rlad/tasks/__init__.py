"""GRPO tasks: what a task supplies to the loop (records, prompts, targets, rewards, statistics) and
how its answers are scored. `grounding` is DifferAD-R1's reference + query -> box task, `mcq`
AnomalyR1's multiple-choice inspection questions."""
