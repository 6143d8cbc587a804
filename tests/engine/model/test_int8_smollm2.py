"""int8 on the real model: the default for its Q4_1 file, with perplexity within 2% of
float32. (The chat answer is still "Paris": tests/engine/test_smollm2.py, which loads the
file as the engine does by default, in int8.)"""

from __future__ import annotations

import pytest

from engine.model.checkpoint import LoadedModel
from engine.model.int8 import Int8Linear
from tests.engine.model.test_fp8_smollm2 import perplexity

pytestmark = pytest.mark.slow


def test_int8_perplexity_within_two_percent_of_float32(smollm2_float32: LoadedModel,
                                                       smollm2_default: LoadedModel) -> None:
    base = perplexity(smollm2_float32)
    int8 = perplexity(smollm2_default)
    assert base < 20
    assert abs(int8 - base) <= 0.02 * base, (int8, base)


def test_low_bit_gguf_loads_as_int8_by_default(smollm2_float32: LoadedModel,
                                              smollm2_default: LoadedModel) -> None:
    assert isinstance(smollm2_default.model.lm_head, Int8Linear)
    assert not any(isinstance(m, Int8Linear) for m in smollm2_float32.model.modules())
