"""Kernel tests draw fresh random inputs every run; the seed is printed so a failure can be
reproduced (pytest shows captured output for failing tests)."""

from __future__ import annotations

import random

import pytest
import torch


@pytest.fixture(autouse=True)
def seed() -> int:
    value = random.randrange(2**31)
    torch.manual_seed(value)
    print(f"torch seed {value}")
    return value
