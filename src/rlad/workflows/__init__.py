"""What each verb does, as library functions: `detection` (fit / test / predict of pixel models),
`grounding` (warm start, GRPO, ground, test-grounding), `map_grounding` (pixel maps as grounding
baselines). The CLI and the demo call these; benchmarks and notebooks can too."""
