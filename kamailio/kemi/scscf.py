"""S-CSCF routing (3GPP TS 24.229 §5.4): registrar, service triggering, terminating routing.

How a request's leg is recognised:
- originating: it arrives on our Service-Route entry `sip:orig@S;lr` (RFC 3608; the P-CSCF
  puts it first in the Route set of every originating request of a registered UE);
- from an application server: out-of-dialog, from an address in the dispatcher list (the
  trusted MRFC-AS nodes). A dial-out INVITE or a NOTIFY from the focus is sent on to the
  I-CSCF so it reaches the target user as a terminating request, like any other user's call;
- terminating: anything else (typically from the I-CSCF after its HSS location query).
"""

from __future__ import annotations

import enum

import ims_common as common
from ims_common import FilterCriterion, Hss, HssError, Ksr, Subscriber

DISPATCHER_PREFIX = "dispatcher:"


class Leg(enum.Enum):
    ORIGINATING = "orig"
    FROM_AS = "as"
    TERMINATING = "term"


def classify(arrived_on_orig_route: bool, from_trusted_as: bool) -> Leg:
    if arrived_on_orig_route:
        return Leg.ORIGINATING
    if from_trusted_as:
        return Leg.FROM_AS
    return Leg.TERMINATING


def registration_refusal(subscriber: Subscriber | None) -> tuple[int, str] | None:
    """TS 24.229 §5.4.1.2: only a known, unbarred public identity may register."""
    if subscriber is None:
        return 403, "Unknown Subscriber"
    if subscriber.barred:
        return 403, "Barred"
    return None


def credentials_match(subscriber: Subscriber, username: str, realm: str) -> bool:
    """The digest username must be the IMPI of the IMPU in To (TS 33.203 §6.1, IMS AKA's
    private/public identity binding, applied here to MD5 digest)."""
    return username == subscriber.impi and realm.lower() == subscriber.realm.lower()


def dispatcher_set(as_uri: str) -> int | None:
    """`dispatcher:1` -> 1 (a set of AS nodes with failover); a plain SIP URI -> None."""
    if as_uri.lower().startswith(DISPATCHER_PREFIX):
        tail = as_uri[len(DISPATCHER_PREFIX) :]
        return int(tail) if tail.isdigit() else None
    return None


class Scscf:
    def __init__(self, ksr: Ksr) -> None:
        self.ksr = ksr
        self.ip = common.define(ksr, "LISTEN_IP", "127.0.0.1")
        self.port = int(common.define(ksr, "LISTEN_PORT", "6060"))
        self.icscf = common.define(ksr, "ICSCF_URI", "sip:127.0.0.1:4060")
        self.auth = common.define_flag(ksr, "AUTH_ENABLED", True)
        self.ds_alg = int(common.define(ksr, "AS_DS_ALG", "8"))
        self.as_timeout_ms = int(common.define(ksr, "AS_TIMEOUT_MS", "3000"))
        self.hss = Hss(ksr)

    def child_init(self, rank: int) -> int:
        return 0

    # --- request route ---------------------------------------------------------------------

    def ksr_request_route(self, msg: object) -> int:
        ksr = self.ksr
        if not common.prelude(ksr):
            return 1
        if ksr.siputils.has_totag() > 0:
            return self.in_dialog()
        method = ksr.pv.get("$rm") or ""
        try:
            if method == "REGISTER":
                return self.register()
            orig = common.is_own_route(common.top_route(ksr), self.ip, self.port, "orig")
            # ds_is_from_lists: source IP and port in any set; transport not compared.
            trusted = ksr.dispatcher.ds_is_from_lists() > 0 if not orig else False
            ksr.rr.loose_route()
            leg = classify(orig, trusted)
            if leg is Leg.ORIGINATING:
                return self.originating(method)
            if leg is Leg.FROM_AS:
                ksr.rr.record_route()
                return self.to_icscf()
            return self.terminating()
        except HssError:
            return common.reply(ksr, 500, "HSS Unavailable")

    def in_dialog(self) -> int:
        """Requests with a To tag follow their route set (RFC 3261 §16.12). When the set is
        used up here and the target is a public service identity the iFC send to an AS — a
        conference URI, which is the focus's Contact (RFC 4579 §5.1) — it goes to that AS
        like an initial request would (TS 23.228 §5.4.12.3), not to DNS."""
        ksr = self.ksr
        if ksr.rr.loose_route() > 0:
            if not ksr.pv.get("$du"):
                method = ksr.pv.get("$rm") or ""
                ruri = ksr.pv.get("$ru") or ""
                try:
                    criterion = common.match_ifc(self.hss.filter_criteria(), method, ruri)
                except HssError:
                    return common.reply(ksr, 500, "HSS Unavailable")
                if criterion is not None:
                    return self.to_as(criterion)
            return common.relay(ksr)
        return common.route_in_dialog(ksr)

    def register(self) -> int:
        ksr = self.ksr
        impu = common.aor(ksr.pv.get("$tu") or "")
        subscriber = self.hss.subscriber(impu) if impu else None
        refusal = registration_refusal(subscriber)
        if refusal or subscriber is None:
            code, reason = refusal or (403, "Forbidden")
            return common.reply(ksr, code, reason)
        if self.auth:
            if ksr.auth.has_credentials(subscriber.realm) < 0:
                # RFC 3261 §22.4 / RFC 2617 §3.2.1: challenge with qop=auth.
                ksr.auth.auth_challenge(subscriber.realm, 1)
                return 1
            if not credentials_match(subscriber, ksr.pv.get("$au") or "", ksr.pv.get("$ar") or ""):
                return common.reply(ksr, 403, "Identities Do Not Match")
            # flags 1: the "password" given is HA1 = MD5(impi:realm:password), as stored.
            if ksr.auth.pv_auth_check(subscriber.realm, subscriber.ha1, 1, 0) < 0:
                ksr.auth.auth_challenge(subscriber.realm, 1)
                return 1
            ksr.auth.consume_credentials()
        implicit = self.hss.implicit_set(subscriber.impi) or [subscriber.impu]
        # The registered IMPU first: it is the default identity (TS 24.229 §5.4.1.2.2).
        ordered = [subscriber.impu] + [u for u in implicit if u != subscriber.impu]
        # RFC 3608 §6: the route the UE's P-CSCF puts in front of originating requests.
        ksr.hdr.append_to_reply(f"Service-Route: <sip:orig@{self.ip}:{self.port};lr>\r\n")
        # RFC 3455 §4.1: the implicitly registered identities.
        associated = ", ".join(f"<{uri}>" for uri in ordered)
        ksr.hdr.append_to_reply(f"P-Associated-URI: {associated}\r\n")
        for other in ordered[1:]:
            # flag 0x02: no reply; only the main save answers the UE.
            ksr.registrar.save_uri("location", 2, other)
        if ksr.registrar.save("location", 0) < 0:
            ksr.sl.sl_reply_error()
        return 1

    def originating(self, method: str) -> int:
        ksr = self.ksr
        asserted = common.header_values(ksr, "P-Asserted-Identity")
        identity = common.aor(common.parse_name_addr(asserted[0]).uri) if asserted else None
        # Only a registered served user originates here (TS 24.229 §5.4.3.2).
        if identity is None or ksr.registrar.registered_uri("location", identity) < 0:
            return common.reply(ksr, 403, "Not Registered Here")
        ruri = ksr.pv.get("$ru") or ""
        criterion = common.match_ifc(self.hss.filter_criteria(), method, ruri)
        ksr.rr.record_route()
        if criterion is not None:
            return self.to_as(criterion)
        return self.to_icscf()

    def to_icscf(self) -> int:
        """Other users: the I-CSCF finds their S-CSCF, as for a call from outside."""
        ksr = self.ksr
        ksr.pv.sets("$du", self.icscf)
        return common.relay(ksr)

    def to_as(self, criterion: FilterCriterion) -> int:
        ksr = self.ksr
        ksr.pv.sets("$avp(ifc_dh)", criterion.default_handling)
        setid = dispatcher_set(criterion.as_uri)
        if setid is not None:
            if ksr.dispatcher.ds_select_dst(setid, self.ds_alg) < 0:
                return self.as_unavailable(criterion.default_handling)
        else:
            ksr.pv.sets("$du", criterion.as_uri)
        # A dead AS is found by the transaction timer; failover happens in the failure route.
        ksr.tm.t_set_fr(0, self.as_timeout_ms)
        ksr.tm.t_on_failure("ksr_as_failure")
        return common.relay(ksr)

    def as_unavailable(self, handling: str) -> int:
        # TS 29.228 §B.2.2 DefaultHandling: SESSION_CONTINUED goes on as if not triggered.
        if handling == "continue":
            return self.to_icscf()
        return common.reply(self.ksr, 503, "Application Server Unavailable")

    def terminating(self) -> int:
        ksr = self.ksr
        rc = ksr.registrar.lookup("location")
        if rc == -3:
            return common.reply(ksr, 405, "Method Not Allowed")
        if rc < 0:
            # TS 24.229 §5.4.3.3: the served user has no registered contact.
            return common.reply(ksr, 480, "Temporarily Unavailable")
        # lookup() set the Request-URI to the contact and the Path to the route set.
        ksr.rr.record_route()
        return common.relay(ksr)

    # --- failure and reply routes ----------------------------------------------------------

    def ksr_as_failure(self, msg: object) -> int:
        ksr = self.ksr
        if ksr.tm.t_is_canceled() > 0:
            return 1
        if ksr.tm.t_branch_timeout() > 0 or ksr.tm.t_check_status("5[0-9][0-9]") > 0:
            # Take the failed node out until the dispatcher's OPTIONS probe sees it again.
            ksr.dispatcher.ds_mark_dst_state("ip")
            if ksr.dispatcher.ds_next_dst() > 0:
                ksr.tm.t_set_fr(0, self.as_timeout_ms)
                ksr.tm.t_on_failure("ksr_as_failure")
                return common.relay(ksr)
            if (ksr.pv.get("$avp(ifc_dh)") or "continue") == "continue":
                ksr.pv.sets("$du", self.icscf)
                return common.relay(ksr)
        return 1

    def ksr_reply_route(self, msg: object) -> int:
        return 1

    def ksr_onsend_route(self, msg: object) -> int:
        return 1


def mod_init() -> Scscf:
    import KSR  # type: ignore[import-not-found]  # provided by app_python3 at run time

    return Scscf(KSR)
