"""Data: MNIST and IDX files located, verified and loaded; pixel transforms; a synthetic set for smoke tests."""
