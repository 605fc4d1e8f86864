"""Serving: the Scorer interface the score agent calls, and its implementations."""
