"""Synthetic agency sources: a latent city population, five agencies' native databases, ground truth."""
