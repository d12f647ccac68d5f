"""The two-layer learner of Allen-Zhu & Li (arXiv 2012.09816), its trainers and experiments."""
