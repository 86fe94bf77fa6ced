"""Meta-RL learners: RL² (and, as they land, TrMRL, MAML, PEARL) with their shared pieces."""
