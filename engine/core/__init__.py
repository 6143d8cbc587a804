"""The engine's bookkeeping: requests and their sequences, the scheduler, the KV block pool.

Pure Python, no torch (a test enforces it): everything here can be reasoned about and
property-tested without a model.
"""
