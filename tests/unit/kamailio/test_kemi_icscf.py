"""I-CSCF decisions and glue (TS 24.229 §5.3): HSS queries for REGISTER and terminating."""

from __future__ import annotations

import fake_ksr
import icscf
from ims_common import Subscriber
from test_kemi_common import with_rows

SUB = Subscriber("sip:u@home1.net", "u", "home1.net", "h", None, False)


def test_decide_table() -> None:
    assert icscf.decide(None, True, "sip:s").code == 403
    assert icscf.decide(None, False, "sip:s").code == 404
    barred = Subscriber(**{**SUB.__dict__, "barred": True})
    assert icscf.decide(barred, False, "sip:s").code == 403
    served = Subscriber(**{**SUB.__dict__, "scscf": "sip:other:6060"})
    assert icscf.decide(served, False, "sip:s") == icscf.Decision(scscf="sip:other:6060")
    assert icscf.decide(SUB, True, "sip:s") == icscf.Decision(scscf="sip:s", assign=True)


def make(method: str, row: list[str | None] | None) -> tuple[icscf.Icscf, fake_ksr.FakeKsr]:
    ksr = fake_ksr.FakeKsr({"$rm": method, "$ru": "sip:u@home1.net", "$tu": "sip:u@home1.net"},
                  {"Via": ["SIP/2.0/UDP a;branch=z9hG4bK-1"]},
                  {"SCSCF_URI": '"sip:127.0.0.1:6060"'})  # fmt: skip
    ksr.returns["sqlops.sql_query"] = 0
    with_rows(ksr, [row] if row else [])
    return icscf.Icscf(ksr), ksr


def test_register_assigns_scscf_and_forwards() -> None:
    i, ksr = make("REGISTER", ["sip:u@home1.net", "u", "home1.net", "h", None, "0"])
    i.ksr_request_route(None)
    queries = [a[1] for a in ksr.called("sqlops.sql_query")]
    assert any(q.startswith("UPDATE subscribers SET scscf = 'sip:127.0.0.1:6060'") for q in queries)
    assert ksr.pvs["$du"] == "sip:127.0.0.1:6060" and ksr.called("tm.t_relay")


def test_unknown_terminating_user_gets_404_and_hss_error_500() -> None:
    i, ksr = make("INVITE", None)
    i.ksr_request_route(None)
    assert ksr.replies() == [404]
    i, ksr = make("INVITE", None)
    ksr.returns["sqlops.sql_query"] = -1
    i.ksr_request_route(None)
    assert ksr.replies() == [500]
