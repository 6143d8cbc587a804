"""`python -m serving` engine flags reach the EngineConfig; absent flags keep its defaults.
Also --max-tool-calls, a server setting."""

from __future__ import annotations

import pytest

from engine import EngineConfig
from serving.cli import CLIError, parse_args


def test_kernel_and_quantization_flags() -> None:
    plan = parse_args(["--model", "m", "--quantization", "fp8", "--load-format", "dummy",
                       "--kernel-backend", "triton", "--enforce-eager"])
    config = plan.models[0].config
    assert (config.quantization, config.load_format) == ("fp8", "dummy")
    assert (config.kernel_backend, config.enforce_eager) == ("triton", True)


def test_absent_flags_keep_the_engine_defaults() -> None:
    config = parse_args(["--model", "m"]).models[0].config
    defaults = EngineConfig("m")
    for field in ("quantization", "load_format", "kernel_backend", "enforce_eager",
                  "speculative_ngram"):
        assert getattr(config, field) == getattr(defaults, field)


def test_unknown_quantization_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--model", "m", "--quantization", "int4"])
    assert exit_info.value.code == 2
    assert "fp8" in capsys.readouterr().err


def test_admission_flags_reach_the_settings() -> None:
    from serving.cli import CLIError

    settings = parse_args(["--model", "m", "--max-prompts-per-request", "8",
                           "--max-waiting-requests", "32"]).settings
    assert (settings.max_prompts_per_request, settings.max_waiting_requests) == (8, 32)
    assert parse_args(["--model", "m"]).settings.max_prompts_per_request == 64
    with pytest.raises(CLIError, match="--max-prompts-per-request must be positive"):
        parse_args(["--model", "m", "--max-prompts-per-request", "0"])


def test_speculative_ngram_flag() -> None:
    assert parse_args(["--speculative-ngram", "4"]).models[0].config.speculative_ngram == 4
    with pytest.raises(CLIError, match="speculative_ngram"):
        parse_args(["--speculative-ngram", "-1"])


def test_max_tool_calls_flag_reaches_the_settings() -> None:
    from serving.cli import CLIError
    from serving.tools import DEFAULT_MAX_TOOL_CALLS

    assert parse_args(["--model", "m"]).settings.max_tool_calls == DEFAULT_MAX_TOOL_CALLS
    assert parse_args(["--model", "m", "--max-tool-calls", "3"]).settings.max_tool_calls == 3
    with pytest.raises(CLIError, match="--max-tool-calls must be positive"):
        parse_args(["--model", "m", "--max-tool-calls", "0"])
