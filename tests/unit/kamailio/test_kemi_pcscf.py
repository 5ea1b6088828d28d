"""P-CSCF decisions and glue (TS 24.229 §5.2, RFC 3325, RFC 3327, RFC 3608)."""

from __future__ import annotations

from typing import Any

import fake_ksr
import pcscf
from pcscf import Pcscf, Registration

Fake = fake_ksr.FakeKsr

USER1 = "sip:user1_public1@home1.net"
ALIAS = "sip:+4912345@home1.net"
SR = "<sip:orig@127.0.0.1:6060;lr>"
DEFINES = {"LISTEN_IP": "127.0.0.1", "LISTEN_PORT": "5060", "ICSCF_URI": '"sip:127.0.0.1:4060"'}


def make(pvs: dict[str, Any], headers: dict[str, list[str]] | None = None) -> tuple[Pcscf, Fake]:
    base = {"$rm": "INVITE", "$ru": "sip:conf-factory1@mrfc1.home1.net", "$pr": "udp",
            "$si": "127.0.0.1", "$sp": 40000}  # fmt: skip
    ksr = Fake({**base, **pvs}, {"Via": ["SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bK-x"],
                                     **(headers or {})}, DEFINES)  # fmt: skip
    return Pcscf(ksr), ksr


def test_asserted_identity_prefers_registered_ppi_else_default() -> None:
    registered = [USER1, ALIAS]
    assert pcscf.asserted_identity([f"<{ALIAS}>"], registered) == ALIAS
    assert pcscf.asserted_identity(["<sip:boss@home1.net>"], registered) == USER1
    assert pcscf.asserted_identity([], registered) == USER1
    assert pcscf.asserted_identity(["<tel:+1>", f"<{ALIAS}>"], registered) == ALIAS
    assert pcscf.asserted_identity([], []) is None


def test_registration_from_reply_reads_expiry_of_this_contact() -> None:
    contacts = ["<sip:other@1.1.1.1>;expires=30", "<sip:u@127.0.0.1:40000>;expires=600"]
    reg, expires = pcscf.registration_from_reply(
        contacts, "<sip:u@127.0.0.1:40000>", [SR], [f"<{USER1}>", f"<{ALIAS}>"], USER1
    )
    assert reg == Registration([USER1, ALIAS], [SR]) and expires == 600
    # Deregistered: the contact is gone from the 200 (RFC 3261 §10.3 step 8).
    gone, zero = pcscf.registration_from_reply(contacts[:1], "<sip:u@127.0.0.1:40000>", [SR],
                                               [], USER1)  # fmt: skip
    assert gone is None and zero == 0


def test_registration_json_round_trip_and_garbage() -> None:
    reg = Registration([USER1], [SR])
    assert Registration.from_json(reg.to_json()) == reg
    assert Registration.from_json("{not json") is None


def test_unregistered_ue_gets_403() -> None:
    p, ksr = make({})
    p.ksr_request_route(None)
    assert ksr.replies() == [403]
    assert not ksr.called("tm.t_relay")


def test_registered_ue_asserts_identity_and_follows_service_route() -> None:
    p, ksr = make({}, {"P-Preferred-Identity": [f"<{ALIAS}>"],
                       "P-Asserted-Identity": ["<sip:spoof@home1.net>"],
                       "Route": ["<sip:127.0.0.1:5060;lr>, <sip:elsewhere;lr>"]})  # fmt: skip
    ksr.tables["ue"] = {"udp:127.0.0.1:40000": Registration([USER1, ALIAS], [SR]).to_json()}
    p.ksr_request_route(None)
    removed = [a[0] for a in ksr.called("hdr.remove")]
    assert {"P-Preferred-Identity", "P-Asserted-Identity", "Route"} <= set(removed)
    assert ksr.called("hdr.append") == [(f"P-Asserted-Identity: <{ALIAS}>\r\n",)]
    assert ksr.called("hdr.insert") == [(f"Route: {SR}\r\n",)]
    assert ksr.pvs["$du"] == "sip:orig@127.0.0.1:6060;lr"
    assert ksr.called("rr.record_route") and ksr.called("tm.t_relay")


def test_terminating_request_on_path_goes_to_contact() -> None:
    p, ksr = make({"$ru": "sip:user2@127.0.0.1:40002"},
                  {"Route": ["<sip:term@127.0.0.1:5060;lr>"]})  # fmt: skip
    p.ksr_request_route(None)
    assert ksr.replies() == []
    assert ksr.called("rr.loose_route") and ksr.called("tm.t_relay")


def test_register_adds_path_and_goes_to_icscf() -> None:
    p, ksr = make({"$rm": "REGISTER", "$ru": "sip:home1.net", "$rd": "home1.net"})
    p.ksr_request_route(None)
    assert ksr.called("hdr.append") == [("Path: <sip:term@127.0.0.1:5060;lr>\r\n",)]
    assert ksr.pvs["$du"] == "sip:127.0.0.1:4060"
    assert ksr.called("tm.t_on_reply") == [("ksr_register_reply",)]


def test_register_for_foreign_domain_is_refused() -> None:
    p, ksr = make({"$rm": "REGISTER", "$ru": "sip:evil.net", "$rd": "evil.net"})
    p.ksr_request_route(None)
    assert ksr.replies() == [403]


def test_register_reply_stores_and_removes_registration() -> None:
    pvs = {"$rs": 200, "$T_req($pr)": "udp", "$T_req($si)": "127.0.0.1", "$T_req($sp)": 40000,
           "$T_req($hdr(Contact))": "<sip:u@127.0.0.1:40000>", "$tu": USER1}  # fmt: skip
    p, ksr = make(pvs, {"Contact": ["<sip:u@127.0.0.1:40000>;expires=300"],
                        "Service-Route": [SR], "P-Associated-URI": [f"<{USER1}>"]})  # fmt: skip
    p.ksr_register_reply(None)
    key = "udp:127.0.0.1:40000"
    assert Registration.from_json(ksr.tables["ue"][key]) == Registration([USER1], [SR])
    assert ksr.expires[("ue", key)] == 300
    ksr.headers["contact"] = []
    p.ksr_register_reply(None)
    assert key not in ksr.tables["ue"]
