"""S-CSCF decisions and glue (TS 24.229 §5.4): registrar, digest, iFC, terminating."""

from __future__ import annotations

from typing import Any

import fake_ksr
import scscf
from ims_common import Subscriber
from scscf import Leg
from test_kemi_common import with_rows

Fake = fake_ksr.FakeKsr

SUB = Subscriber("sip:u@home1.net", "u", "home1.net", "h", None, False)
ROW: list[str | None] = ["sip:u@home1.net", "u", "home1.net", "ha1", None, "0"]
DEFINES = {"LISTEN_IP": "127.0.0.1", "LISTEN_PORT": "6060", "ICSCF_URI": '"sip:127.0.0.1:4060"',
           "AS_TIMEOUT_MS": "1000"}  # fmt: skip


def make(pvs: dict[str, Any], headers: dict[str, list[str]] | None = None,
         defines: dict[str, str] | None = None) -> tuple[scscf.Scscf, Fake]:  # fmt: skip
    ksr = Fake({"$rm": "INVITE", "$ru": "sip:conf-factory1@mrfc1.home1.net", **pvs},
                  {"Via": ["SIP/2.0/UDP a;branch=z9hG4bK-1"], **(headers or {})},
                  {**DEFINES, **(defines or {})})  # fmt: skip
    ksr.returns["sqlops.sql_query"] = 0
    return scscf.Scscf(ksr), ksr


def test_classify_and_small_decisions() -> None:
    assert scscf.classify(True, True) is Leg.ORIGINATING
    assert scscf.classify(False, True) is Leg.FROM_AS
    assert scscf.classify(False, False) is Leg.TERMINATING
    assert scscf.registration_refusal(None) == (403, "Unknown Subscriber")
    assert scscf.registration_refusal(Subscriber(**{**SUB.__dict__, "barred": True}))
    assert scscf.registration_refusal(SUB) is None
    assert scscf.credentials_match(SUB, "u", "HOME1.net")
    assert not scscf.credentials_match(SUB, "someone", "home1.net")
    assert scscf.dispatcher_set("dispatcher:2") == 2
    assert scscf.dispatcher_set("sip:127.0.0.1:5070") is None


def test_register_without_credentials_is_challenged() -> None:
    s, ksr = make({"$rm": "REGISTER", "$tu": "sip:u@home1.net"})
    with_rows(ksr, [ROW])
    ksr.returns["auth.has_credentials"] = -1
    s.ksr_request_route(None)
    assert ksr.called("auth.auth_challenge") == [("home1.net", 1)]
    assert not ksr.called("registrar.save")


def test_register_with_good_credentials_saves_with_service_route() -> None:
    s, ksr = make({"$rm": "REGISTER", "$tu": "sip:u@home1.net", "$au": "u", "$ar": "home1.net"})
    with_rows(ksr, [ROW])
    s.ksr_request_route(None)
    assert ksr.called("auth.pv_auth_check") == [("home1.net", "ha1", 1, 0)]
    appended = [a[0] for a in ksr.called("hdr.append_to_reply")]
    assert "Service-Route: <sip:orig@127.0.0.1:6060;lr>\r\n" in appended
    assert ksr.called("registrar.save") == [("location", 0)]


def test_register_with_foreign_username_is_forbidden() -> None:
    s, ksr = make({"$rm": "REGISTER", "$tu": "sip:u@home1.net", "$au": "x", "$ar": "home1.net"})
    with_rows(ksr, [ROW])
    s.ksr_request_route(None)
    assert ksr.replies() == [403] and not ksr.called("registrar.save")


def test_register_auth_off_by_define() -> None:
    s, ksr = make({"$rm": "REGISTER", "$tu": "sip:u@home1.net"}, defines={"AUTH_ENABLED": "0"})
    with_rows(ksr, [ROW])
    s.ksr_request_route(None)
    assert not ksr.called("auth.has_credentials") and ksr.called("registrar.save")


def test_originating_conference_request_goes_to_dispatcher_set() -> None:
    s, ksr = make({}, {"Route": ["<sip:orig@127.0.0.1:6060;lr>"],
                       "P-Asserted-Identity": ["<sip:u@home1.net>"]})  # fmt: skip
    with_rows(ksr, [["10", None, r"^sip:conf-", "dispatcher:1", "continue"]])
    s.ksr_request_route(None)
    assert ksr.called("dispatcher.ds_select_dst") == [(1, 8)]
    assert ksr.called("tm.t_set_fr") == [(0, 1000)]
    assert ksr.called("tm.t_on_failure") == [("ksr_as_failure",)]
    assert ksr.called("rr.record_route") and ksr.called("tm.t_relay")


def test_originating_from_unregistered_identity_is_refused() -> None:
    s, ksr = make({}, {"Route": ["<sip:orig@127.0.0.1:6060;lr>"]})
    s.ksr_request_route(None)
    assert ksr.replies() == [403]


def test_originating_to_other_user_goes_to_icscf() -> None:
    s, ksr = make({"$ru": "sip:user2@home2.net"}, {"Route": ["<sip:orig@127.0.0.1:6060;lr>"],
                  "P-Asserted-Identity": ["<sip:u@home1.net>"]})  # fmt: skip
    with_rows(ksr, [["10", None, r"^sip:conf-", "dispatcher:1", "continue"]])
    s.ksr_request_route(None)
    assert ksr.pvs["$du"] == "sip:127.0.0.1:4060"


def test_request_from_trusted_as_goes_to_icscf() -> None:
    s, ksr = make({"$ru": "sip:user2@home2.net"})
    ksr.returns["dispatcher.ds_is_from_lists"] = 1
    s.ksr_request_route(None)
    assert ksr.pvs["$du"] == "sip:127.0.0.1:4060"
    assert not ksr.called("registrar.lookup")


def test_terminating_unregistered_gets_480() -> None:
    s, ksr = make({"$ru": "sip:user2@home2.net"})
    ksr.returns["dispatcher.ds_is_from_lists"] = -1
    ksr.returns["registrar.lookup"] = -1
    s.ksr_request_route(None)
    assert ksr.replies() == [480]


def test_as_failure_fails_over_then_continues() -> None:
    s, ksr = make({"$avp(ifc_dh)": "continue"})
    ksr.returns["tm.t_is_canceled"] = -1
    ksr.returns["tm.t_branch_timeout"] = 1
    s.ksr_as_failure(None)
    assert ksr.called("dispatcher.ds_next_dst") and ksr.called("tm.t_relay")
    ksr.returns["dispatcher.ds_next_dst"] = -1
    s.ksr_as_failure(None)
    assert ksr.pvs["$du"] == "sip:127.0.0.1:4060"


def test_in_dialog_request_to_a_conference_uri_goes_to_the_as() -> None:
    # The route set is used up at the S-CSCF and the target is the focus's Contact (the
    # conference URI): the iFC send it to the AS, not to DNS.
    criterion_row: list[str | None] = [
        "10",
        None,
        r"^sips?:conf-[^@]*@mrfc1\.home1\.net",
        "dispatcher:1",
        "continue",
    ]
    s, ksr = make({"$rm": "BYE", "$ru": "sip:conf-abc@mrfc1.home1.net", "$du": None})
    ksr.returns["siputils.has_totag"] = 1
    with_rows(ksr, [criterion_row])
    s.ksr_request_route(None)
    assert ksr.called("dispatcher.ds_select_dst") == [(1, 8)]


def test_in_dialog_request_with_a_next_hop_follows_the_route_set() -> None:
    s, ksr = make(
        {"$rm": "BYE", "$ru": "sip:conf-abc@mrfc1.home1.net", "$du": "sip:127.0.0.1:5060;lr"}
    )
    ksr.returns["siputils.has_totag"] = 1
    s.ksr_request_route(None)
    assert not ksr.called("dispatcher.ds_select_dst")
    assert ksr.called("tm.t_relay") == [()]
