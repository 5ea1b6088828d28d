"""I-CSCF routing (3GPP TS 24.229 §5.3): the HSS queries at the home network's edge.

- REGISTER: user registration status query (TS 29.228 UAR/UAA, here a read of the
  `subscribers` table); unknown or barred -> 403; no S-CSCF yet -> assign the default one.
- Other requests (terminating): location query (LIR/LIA) for the Request-URI's public identity;
  unknown -> 404, barred -> 403; then on to the serving S-CSCF. The I-CSCF does not
  record-route (TS 24.229 §5.3.2.1: it is not needed for the dialog).
"""

from __future__ import annotations

from dataclasses import dataclass

import ims_common as common
from ims_common import Hss, HssError, Ksr, Subscriber


@dataclass(frozen=True)
class Decision:
    """Either a reply (code, reason) or the S-CSCF to forward to (and whether to record it)."""

    code: int = 0
    reason: str = ""
    scscf: str = ""
    assign: bool = False


def decide(subscriber: Subscriber | None, is_register: bool, default_scscf: str) -> Decision:
    if subscriber is None:
        # TS 24.229 §5.3.1.2: unknown at registration -> 403; §5.3.2.1: terminating -> 404.
        return Decision(403, "Unknown Subscriber") if is_register else Decision(404, "Not Found")
    if subscriber.barred:
        return Decision(403, "Barred")
    if subscriber.scscf:
        return Decision(scscf=subscriber.scscf)
    # No S-CSCF serves the user yet: pick one (TS 23.228 §5.2.2.3 S-CSCF selection).
    return Decision(scscf=default_scscf, assign=True)


class Icscf:
    def __init__(self, ksr: Ksr) -> None:
        self.ksr = ksr
        self.default_scscf = common.define(ksr, "SCSCF_URI", "sip:127.0.0.1:6060")
        self.hss = Hss(ksr)

    def child_init(self, rank: int) -> int:
        return 0

    def ksr_request_route(self, msg: object) -> int:
        ksr = self.ksr
        if not common.prelude(ksr):
            return 1
        if ksr.siputils.has_totag() > 0:
            return common.route_in_dialog(ksr)
        is_register = (ksr.pv.get("$rm") or "") == "REGISTER"
        # REGISTER names the user in To; other requests in the Request-URI.
        impu = common.aor(ksr.pv.get("$tu" if is_register else "$ru") or "")
        if impu is None:
            return common.reply(ksr, 404 if not is_register else 403, "Not Found")
        # The route set so far ended here; what follows is chosen by the HSS answer.
        ksr.rr.loose_route()
        try:
            decision = decide(self.hss.subscriber(impu), is_register, self.default_scscf)
            if decision.assign:
                self.hss.assign_scscf(impu, decision.scscf)
        except HssError:
            return common.reply(ksr, 500, "HSS Unavailable")
        if decision.code:
            return common.reply(ksr, decision.code, decision.reason)
        ksr.pv.sets("$du", decision.scscf)
        return common.relay(ksr)

    def ksr_reply_route(self, msg: object) -> int:
        return 1

    def ksr_onsend_route(self, msg: object) -> int:
        return 1


def mod_init() -> Icscf:
    import KSR  # type: ignore[import-not-found]  # provided by app_python3 at run time

    return Icscf(KSR)
