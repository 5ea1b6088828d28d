"""The built-in media processor's options: flags, and the MRFP_* variables behind them."""

from __future__ import annotations

import pytest

from app.mrfp.builtin.main import parse_args


def test_defaults_answer_without_a_183(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PRE_ANSWER", "SIP_PORT", "ESL_PORT", "RTP_PORTS"):
        monkeypatch.delenv(f"MRFP_{name}", raising=False)
    args = parse_args([])
    assert args.pre_answer is False  # as freeswitch/'s dialplan: answer alone
    assert (args.sip_port, args.esl_port, args.rtp_ports) == (5080, 8021, (20000, 29999))


@pytest.mark.parametrize(
    ("env", "argv", "expected"),
    [
        ("true", [], True),
        ("1", [], True),
        ("false", [], False),
        (None, ["--pre-answer"], True),
        ("true", ["--no-pre-answer"], False),  # the flag wins over the variable
    ],
)
def test_pre_answer_from_the_variable_or_the_flag(
    monkeypatch: pytest.MonkeyPatch, env: str | None, argv: list[str], expected: bool
) -> None:
    if env is None:
        monkeypatch.delenv("MRFP_PRE_ANSWER", raising=False)
    else:
        monkeypatch.setenv("MRFP_PRE_ANSWER", env)
    assert parse_args(argv).pre_answer is expected


def test_a_bad_port_range_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--rtp-ports", "30000-20000"])
    assert "must be low-high" in capsys.readouterr().err
