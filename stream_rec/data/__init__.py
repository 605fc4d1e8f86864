"""Datasets: MovieLens loaders shared by replay, training and offline evaluation."""
