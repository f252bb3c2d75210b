"""Stages: what is done to one run directory (train, evaluate, ssl, convergence, gaps, pictures, ssl-refined)."""
