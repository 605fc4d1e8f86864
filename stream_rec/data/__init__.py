"""Training data: the one frame (``frame``) and its sources: MovieLens (``movielens``), the
pipeline's own topics and exported files (``sources``); shared by replay, training and offline
evaluation."""
