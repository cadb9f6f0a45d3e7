"""Distributed inference: plan work units, extract on CPU tasks, predict on an actor pool, sink."""
