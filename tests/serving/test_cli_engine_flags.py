"""`python -m serving` engine flags reach the EngineConfig; absent flags keep its defaults.
Also --max-tool-calls, a server setting."""

from __future__ import annotations

import pytest

from engine import EngineConfig
from serving.cli import parse_args


def test_kernel_and_quantization_flags() -> None:
    plan = parse_args(["--model", "m", "--quantization", "fp8", "--load-format", "dummy",
                       "--kernel-backend", "triton", "--enforce-eager"])
    config = plan.models[0].config
    assert (config.quantization, config.load_format) == ("fp8", "dummy")
    assert (config.kernel_backend, config.enforce_eager) == ("triton", True)


def test_absent_flags_keep_the_engine_defaults() -> None:
    config = parse_args(["--model", "m"]).models[0].config
    defaults = EngineConfig("m")
    for field in ("quantization", "load_format", "kernel_backend", "enforce_eager"):
        assert getattr(config, field) == getattr(defaults, field)


def test_unknown_quantization_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--model", "m", "--quantization", "int4"])
    assert exit_info.value.code == 2
    assert "fp8" in capsys.readouterr().err


def test_max_tool_calls_flag_reaches_the_settings() -> None:
    from serving.cli import CLIError
    from serving.tools import DEFAULT_MAX_TOOL_CALLS

    assert parse_args(["--model", "m"]).settings.max_tool_calls == DEFAULT_MAX_TOOL_CALLS
    assert parse_args(["--model", "m", "--max-tool-calls", "3"]).settings.max_tool_calls == 3
    with pytest.raises(CLIError, match="--max-tool-calls must be positive"):
        parse_args(["--model", "m", "--max-tool-calls", "0"])
