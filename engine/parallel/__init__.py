"""Tensor parallelism: the shard layout, the collectives, and the worker processes."""
