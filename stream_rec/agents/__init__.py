"""Faust agents: thin loops that decode, call the pure core, and send.

``score_behavior`` (behavior → sessions table → recommendations), ``catalog_items`` (items →
validation; every worker's scorer reads the compacted topic in full), ``record_feedback``
(feedback → validation). Each module has ``register(pipeline)``.
"""
