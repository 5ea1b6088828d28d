"""P-CSCF routing (3GPP TS 24.229 §5.2): the UE's first hop.

- REGISTER: add Path (RFC 3327) and send it to the home network's I-CSCF; on the 200 keep the
  Service-Route (RFC 3608) and the registered identities (P-Associated-URI, RFC 3455) for the
  UE, keyed by the UE's transport address (the stand-in for the IPsec/TLS association).
- Originating requests from a registered UE: P-Asserted-Identity from P-Preferred-Identity
  when it names a registered identity, else the default one (RFC 3325 §9.1); route along
  the stored Service-Route. Unregistered UE -> 403.
- Terminating requests (arriving on our Path entry `sip:term@P`): on to the UE's contact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import ims_common as common
from ims_common import Ksr

UE_TABLE = "ue"


@dataclass(frozen=True)
class Registration:
    """What the 200 to a UE's REGISTER told us (TS 24.229 §5.2.2.3)."""

    identities: list[str]  # P-Associated-URI; the first is the default public identity
    service_route: list[str]  # Route values for originating requests (RFC 3608 §6)

    def to_json(self) -> str:
        return json.dumps({"ids": self.identities, "sr": self.service_route})

    @staticmethod
    def from_json(text: str) -> Registration | None:
        try:
            data = json.loads(text)
            return Registration(list(data["ids"]), list(data["sr"]))
        except (ValueError, KeyError, TypeError):
            return None


def ue_key(proto: str, ip: str, port: str | int) -> str:
    return f"{proto.lower()}:{ip}:{port}"


def asserted_identity(preferred: list[str], registered: list[str]) -> str | None:
    """RFC 3325 §9.1 / TS 24.229 §5.2.6.3.3: the PPI if it is a registered identity, else
    the default (first registered) one."""
    wanted = {common.aor(uri) for uri in registered}
    for value in preferred:
        uri = common.parse_name_addr(value).uri
        if common.aor(uri) is not None and common.aor(uri) in wanted:
            return uri
    return registered[0] if registered else None


def registration_from_reply(
    contacts: list[str],
    ue_contact: str,
    service_route: list[str],
    associated: list[str],
    to_uri: str,
) -> tuple[Registration | None, int]:
    """(registration, expires) from a 200 to REGISTER; (None, 0) when the UE's contact is gone.

    RFC 3261 §10.3 step 8: the 200 lists every current contact with its expiry; a contact
    missing from it (or with expires=0) is no longer registered.
    """
    wanted = common.parse_name_addr(ue_contact).uri if ue_contact else ""
    expires = 0
    for value in contacts:
        contact = common.parse_name_addr(value)
        if contact.uri == wanted:
            try:
                expires = int(contact.params.get("expires", "0"))
            except ValueError:
                expires = 0
            break
    if expires <= 0:
        return None, 0
    identities = [common.parse_name_addr(v).uri for v in associated] or [to_uri]
    return Registration(identities, service_route), expires


class Pcscf:
    def __init__(self, ksr: Ksr) -> None:
        self.ksr = ksr
        self.ip = common.define(ksr, "LISTEN_IP", "127.0.0.1")
        self.port = int(common.define(ksr, "LISTEN_PORT", "5060"))
        self.icscf = common.define(ksr, "ICSCF_URI", "sip:127.0.0.1:4060")
        self.domains = common.define_list(ksr, "HOME_DOMAINS", "home1.net home2.net")

    def child_init(self, rank: int) -> int:
        return 0

    # --- request route ---------------------------------------------------------------------

    def ksr_request_route(self, msg: object) -> int:
        ksr = self.ksr
        if not common.prelude(ksr):
            return 1
        if ksr.siputils.has_totag() > 0:
            return common.route_in_dialog(ksr)
        method = ksr.pv.get("$rm") or ""
        if method == "REGISTER":
            return self.register()
        if common.is_own_route(common.top_route(ksr), self.ip, self.port, "term"):
            return self.terminating()
        return self.originating(method)

    def register(self) -> int:
        ksr = self.ksr
        domain = (ksr.pv.get("$rd") or "").lower()
        if domain not in self.domains:
            return common.reply(ksr, 403, "Not A Home Domain")
        # A UE may not claim identities or insert itself a Path (RFC 3325 §5, RFC 3327 §5.2).
        for name in ("P-Asserted-Identity", "P-Preferred-Identity", "Path"):
            ksr.hdr.remove(name)
        # RFC 3327 §5.2: our Path entry, with a user part that marks the terminating leg.
        ksr.hdr.append(f"Path: <sip:term@{self.ip}:{self.port};lr>\r\n")
        ksr.tm.t_on_reply("ksr_register_reply")
        ksr.pv.sets("$du", self.icscf)
        return common.relay(ksr)

    def terminating(self) -> int:
        ksr = self.ksr
        ksr.rr.loose_route()
        ksr.rr.record_route()
        return common.relay(ksr)

    def originating(self, method: str) -> int:
        ksr = self.ksr
        key = ue_key(ksr.pv.get("$pr") or "udp", ksr.pv.get("$si") or "", ksr.pv.get("$sp") or 0)
        stored = ksr.htable.sht_get(UE_TABLE, key)
        registration = Registration.from_json(stored) if stored else None
        if registration is None:
            # TS 24.229 §5.2.6.3.1 / CONVENTIONS: originating requests need a registration.
            return common.reply(ksr, 403, "Not Registered")
        preferred = common.header_values(ksr, "P-Preferred-Identity")
        identity = asserted_identity(preferred, registration.identities)
        # RFC 3325 §5: identities from the UE are not trusted; we assert one ourselves.
        ksr.hdr.remove("P-Preferred-Identity")
        ksr.hdr.remove("P-Asserted-Identity")
        if identity:
            ksr.hdr.append(f"P-Asserted-Identity: <{identity}>\r\n")
        # RFC 3608 §6 / TS 24.229 §5.2.6.3.3: the route set is the Service-Route, whatever
        # the UE pre-loaded beyond us.
        ksr.hdr.remove("Route")
        if registration.service_route:
            ksr.hdr.insert(f"Route: {', '.join(registration.service_route)}\r\n")
            next_hop = common.parse_name_addr(registration.service_route[0]).uri
            ksr.pv.sets("$du", next_hop)
        ksr.rr.record_route()
        return common.relay(ksr)

    # --- replies ---------------------------------------------------------------------------

    def ksr_register_reply(self, msg: object) -> int:
        ksr = self.ksr
        if int(ksr.pv.get("$rs") or 0) != 200:
            return 1
        key = ue_key(
            ksr.pv.get("$T_req($pr)") or "udp",
            ksr.pv.get("$T_req($si)") or "",
            ksr.pv.get("$T_req($sp)") or 0,
        )
        registration, expires = registration_from_reply(
            common.header_values(ksr, "Contact"),
            ksr.pv.get("$T_req($hdr(Contact))") or "",
            common.header_values(ksr, "Service-Route"),
            common.header_values(ksr, "P-Associated-URI"),
            ksr.pv.get("$tu") or "",
        )
        if registration is None:
            ksr.htable.sht_rm(UE_TABLE, key)
        else:
            ksr.htable.sht_setxs(UE_TABLE, key, registration.to_json(), expires)
        return 1

    def ksr_reply_route(self, msg: object) -> int:
        return 1

    def ksr_onsend_route(self, msg: object) -> int:
        # app_python3 5.6 needs this method to exist (see kamailio/README.md).
        return 1


def mod_init() -> Pcscf:
    import KSR  # type: ignore[import-not-found]  # provided by app_python3 at run time

    return Pcscf(KSR)
