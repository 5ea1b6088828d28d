"""Shared KEMI helpers: header parsing, defines, loop detection, iFC matching, HSS reads."""

from __future__ import annotations

import fake_ksr
import ims_common as common
import pytest
from ims_common import FilterCriterion


def test_split_header_values_respects_quotes_and_angles() -> None:
    value = '"Doe, John" <sip:a@x;p=1,2>;q=1, <sip:b@y>, sip:c@z'
    assert common.split_header_values(value) == [
        '"Doe, John" <sip:a@x;p=1,2>;q=1',
        "<sip:b@y>",
        "sip:c@z",
    ]


def test_parse_name_addr_separates_uri_and_header_params() -> None:
    na = common.parse_name_addr('"Bob" <sip:bob@127.0.0.1:5062;transport=udp>;expires=600')
    assert na.uri == "sip:bob@127.0.0.1:5062;transport=udp"
    assert na.params == {"expires": "600"}
    bare = common.parse_name_addr("sip:bob@h;expires=5")
    assert (bare.uri, bare.params) == ("sip:bob@h", {"expires": "5"})


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sip:user1_public1@HOME1.net:5060;user=phone", "sip:user1_public1@home1.net"),
        ("sips:a@b", "sip:a@b"),
        ("sip:home1.net", None),
        ("tel:+123", None),
        ("garbage", None),
    ],
)
def test_aor(uri: str, expected: str | None) -> None:
    assert common.aor(uri) == expected


def test_parse_uri_ports_and_params() -> None:
    parts = common.parse_uri("sip:orig@127.0.0.1:6060;lr")
    assert parts is not None
    assert (parts.user, parts.host, parts.port, parts.params) == (
        "orig", "127.0.0.1", 6060, {"lr": ""}
    )  # fmt: skip
    assert common.parse_uri("sip:x@h:notaport") is None


def test_is_own_route_needs_marker_host_and_port() -> None:
    route = common.parse_uri("sip:orig@127.0.0.1:6060;lr")
    assert common.is_own_route(route, "127.0.0.1", 6060, "orig")
    assert not common.is_own_route(route, "127.0.0.1", 6061, "orig")
    assert not common.is_own_route(route, "127.0.0.1", 6060, "term")
    assert not common.is_own_route(None, "127.0.0.1", 6060, "orig")


def test_defines_strip_quotes_and_fall_back() -> None:
    ksr = fake_ksr.FakeKsr(defines={"ICSCF_URI": '"sip:10.0.0.1:4060"', "AUTH_ENABLED": "0",
                           "HOME_DOMAINS": '"a.net, b.net"'})  # fmt: skip
    assert common.define(ksr, "ICSCF_URI", "x") == "sip:10.0.0.1:4060"
    assert common.define(ksr, "MISSING", "dflt") == "dflt"
    assert common.define_flag(ksr, "AUTH_ENABLED", True) is False
    assert common.define_list(ksr, "HOME_DOMAINS", "") == ["a.net", "b.net"]


def test_loop_key_differs_for_spirals_not_for_loops() -> None:
    base = ("INVITE", "sip:u@h", "<sip:orig@s;lr>", "cid", "1 INVITE", "ft", "udp:1.2.3.4:5")
    assert common.loop_key(*base) == common.loop_key(*base)
    spiral = (*base[:2], "", *base[3:])
    assert common.loop_key(*spiral) != common.loop_key(*base)
    assert common.is_loop("z9hG4bK-a", "z9hG4bK-b")
    assert not common.is_loop("z9hG4bK-a", "z9hG4bK-a")  # a retransmission
    assert not common.is_loop(None, "z9hG4bK-a")


def test_via_branch() -> None:
    via = "SIP/2.0/UDP 1.2.3.4:5060;rport;branch=z9hG4bK-1, SIP/2.0/UDP 5.6.7.8;branch=z9hG4bK-2"
    assert common.via_branch(via) == "z9hG4bK-1"


def _fc(priority: int, regex: str, method: str | None = None, as_uri: str = "x") -> FilterCriterion:
    return FilterCriterion(priority, method, regex, as_uri, "continue")


def test_match_ifc_priority_method_and_bad_regex() -> None:
    criteria = [
        _fc(20, r"^sip:conf-", as_uri="late"),
        _fc(5, r"([", as_uri="broken"),
        _fc(10, r"^sip:conf-", method="INVITE", as_uri="invite-only"),
    ]
    assert common.match_ifc(criteria, "INVITE", "sip:conf-1@m").as_uri == "invite-only"  # type: ignore[union-attr]
    assert common.match_ifc(criteria, "SUBSCRIBE", "sip:conf-1@m").as_uri == "late"  # type: ignore[union-attr]
    assert common.match_ifc(criteria, "INVITE", "sip:user@h") is None


def test_sql_literal_escapes_quotes() -> None:
    assert common.sql_literal("o'neil") == "'o''neil'"
    with pytest.raises(ValueError):
        common.sql_literal("a\x00b")


def with_rows(ksr: fake_ksr.FakeKsr, rows: list[list[str | None]]) -> None:
    ksr.pvs["$dbr(hssr=>rows)"] = len(rows)
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            ksr.pvs[f"$dbr(hssr=>[{r},{c}])"] = value


def test_hss_reads_subscriber_and_frees_result() -> None:
    ksr = fake_ksr.FakeKsr()
    ksr.returns["sqlops.sql_query"] = 0  # a successful SELECT answers 0
    with_rows(ksr, [["sip:a@h", "a", "h", "ABC", None, "1"]])
    sub = common.Hss(ksr).subscriber("sip:a@h")
    assert sub == common.Subscriber("sip:a@h", "a", "h", "abc", None, True)
    assert "WHERE impu = 'sip:a@h'" in ksr.called("sqlops.sql_query")[0][1]
    assert ksr.called("sqlops.sql_result_free")


def test_hss_error_and_missing_subscriber() -> None:
    ksr = fake_ksr.FakeKsr()
    ksr.returns["sqlops.sql_query"] = -1
    with pytest.raises(common.HssError):
        common.Hss(ksr).subscriber("sip:a@h")
    ksr.returns["sqlops.sql_query"] = 0
    with_rows(ksr, [])
    assert common.Hss(ksr).subscriber("sip:a@h") is None


def test_prelude_answers_483_and_482() -> None:
    ksr = fake_ksr.FakeKsr(pvs={"$rm": "INVITE", "$ru": "sip:u@h"},
                  headers={"Via": ["SIP/2.0/UDP a;branch=z9hG4bK-1"]})  # fmt: skip
    ksr.returns["maxfwd.process_maxfwd"] = -1
    assert not common.prelude(ksr)
    assert ksr.replies() == [483]

    ksr = fake_ksr.FakeKsr(pvs={"$rm": "INVITE", "$ru": "sip:u@h"},
                  headers={"Via": ["SIP/2.0/UDP a;branch=z9hG4bK-1"]})  # fmt: skip
    assert common.prelude(ksr)
    ksr.headers["via"] = ["SIP/2.0/UDP a;branch=z9hG4bK-2"]  # same request, new transaction
    assert not common.prelude(ksr)
    assert ksr.replies() == [482]


def test_prelude_stops_on_sanity_failure_and_retransmission() -> None:
    ksr = fake_ksr.FakeKsr(pvs={"$rm": "INVITE"})
    ksr.returns["sanity.sanity_check_defaults"] = 0
    assert not common.prelude(ksr)
    ksr = fake_ksr.FakeKsr(pvs={"$rm": "INVITE"})
    ksr.returns["tm.t_check_trans"] = 0
    assert not common.prelude(ksr)
