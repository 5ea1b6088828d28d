"""SIP URIs and name-addr values (RFC 3261 §19.1, §20.10, §25.1; RFC 5118 IPv6)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.sip.errors import ParseError
from app.sip.uri import (
    AbsoluteUri,
    NameAddr,
    SipUri,
    is_token,
    parse_uri,
    parse_uri_copy,
    split_hostport,
)


def test_full_sip_uri() -> None:
    uri = SipUri.parse(
        "sips:alice:secret@Example.COM:5061;transport=TCP;lr;Maddr=239.1.1.1?"
        "subject=project%20x&priority=urgent"
    )
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == (
        "sips",
        "alice",
        "secret",
        "Example.COM",
        5061,
    )
    # Parameter names are case-insensitive (lower-cased); values kept as written.
    assert uri.params == {"transport": "TCP", "lr": None, "maddr": "239.1.1.1"}
    assert uri.transport == "tcp" and uri.lr
    assert uri.headers == "subject=project%20x&priority=urgent"
    assert str(uri) == (
        "sips:alice:secret@Example.COM:5061;transport=TCP;lr;maddr=239.1.1.1?"
        "subject=project%20x&priority=urgent"
    )


@pytest.mark.parametrize(
    "text",
    [
        "sip:example.com",
        "sip:alice@192.0.2.1",
        "sip:+1555@gw.example.net;user=phone",
        "sip:[2001:db8::1]:5070;transport=udp",
        "sip:a%40b@example.com",
        "SIP:alice@h",
    ],
)
def test_round_trip(text: str) -> None:
    uri = SipUri.parse(text)
    assert str(uri) == (text if not text.startswith("SIP") else "sip" + text[3:])


def test_params_with_and_without_values() -> None:
    uri = SipUri.parse("sip:h;a=1;b;c=;D=Mixed")
    assert uri.params == {"a": "1", "b": None, "c": "", "d": "Mixed"}


def test_escapes_are_kept_but_compare_unescaped() -> None:
    a = SipUri.parse("sip:%61lice@ATLANTA.com;transport=TCP")
    b = SipUri.parse("sip:alice@atlanta.com;transport=tcp")
    assert a.user == "%61lice" and a.user_unescaped == "alice"
    assert a.equivalent(b)  # RFC 3261 §19.1.4
    assert not a.equivalent(SipUri.parse("sip:alice@atlanta.com"))  # transport differs
    assert not a.equivalent(SipUri.parse("sip:alice@atlanta.com:5060;transport=tcp"))
    assert a.aor == "sip:alice@atlanta.com"


def test_ipv6_references() -> None:
    assert split_hostport("[2001:db8::10]:5070") == ("[2001:db8::10]", 5070)
    assert split_hostport("[2001:db8::10:5070]") == ("[2001:db8::10:5070]", None)
    assert split_hostport("[::ffff:192.0.2.1]") == ("[::ffff:192.0.2.1]", None)
    for bad in ("2001:db8::10", "[2001:db8::10", "[zz::1]", "[2001:db8::1]x", "[]"):
        with pytest.raises(ParseError):
            split_hostport(bad)


@pytest.mark.parametrize(
    "bad",
    [
        "sip:",
        "sip:a@",
        "sip:@host",
        "sip:host:99999",
        "sip:host:x",
        "sip:a b@h",
        "sip:<a>@h",
        "sip:h;;x",
        "sip:ho!st",
        "http//x",
    ],
)
def test_bad_uris(bad: str) -> None:
    with pytest.raises(ParseError):
        parse_uri(bad)


def test_other_schemes_stay_opaque() -> None:
    for text in (
        "tel:+1-201-555-0123;phone-context=x",
        "urn:service:sos",
        "soap.beep://192.0.2.103:3002",
        "nobodyKnowsThisScheme:totallyopaque",
    ):
        uri = parse_uri(text)
        assert isinstance(uri, AbsoluteUri) and str(uri) == text
    assert AbsoluteUri("TEL:+1").scheme == "tel"


def test_user_part_may_hold_semicolon_and_question_mark() -> None:
    uri = SipUri.parse("sip:user;par=u%40example.net@example.com")
    assert uri.user == "user;par=u%40example.net" and uri.host == "example.com"
    assert uri.params == {}


def test_name_addr_forms() -> None:
    quoted = NameAddr.parse('"Alice \\"A\\" Smith" <sip:alice@h;transport=tcp>;tag=1;x')
    assert quoted.display_name == 'Alice \\"A\\" Smith'
    assert quoted.sip_uri.params == {"transport": "tcp"}  # URI parameter, inside <>
    assert quoted.params == {"tag": "1", "x": None}  # header parameters, outside
    assert quoted.tag == "1"
    tokens = NameAddr.parse("Alice Smith <sip:alice@h>")
    assert tokens.display_name == "Alice Smith"
    tight = NameAddr.parse('"caller"<sip:caller@example.com>;tag=323')  # RFC 4475 lwsdisp
    assert tight.display_name == "caller" and tight.tag == "323"


def test_addr_spec_params_belong_to_the_header() -> None:
    # RFC 3261 §20.10: without <>, everything after the URI is a header parameter.
    na = NameAddr.parse("sip:+19725552222@gw1.example.net;unknownparam;tag=9")
    assert not na.bracketed and na.params == {"unknownparam": None, "tag": "9"}
    assert isinstance(na.uri, SipUri) and na.uri.params == {}
    assert str(na) == "sip:+19725552222@gw1.example.net;unknownparam;tag=9"
    # An addr-spec cannot carry headers or spaces (RFC 4475 regbadct, badaspec).
    for bad in ("sip:user@example.com?Route=%3Csip:x%3E", " sip:t.watson@example.org x"):
        with pytest.raises(ParseError):
            NameAddr.parse(bad)


def test_name_addr_serialization_adds_brackets_when_needed() -> None:
    na = NameAddr.parse("sip:a@h")
    assert str(na) == "sip:a@h"
    assert isinstance(na.uri, SipUri)
    na.uri.params["transport"] = "tcp"
    assert str(na) == "<sip:a@h;transport=tcp>"  # else the param would become a header param
    copy = na.copy()
    copy.params["tag"] = "x"
    assert "tag" not in na.params


@pytest.mark.parametrize(
    "bad",
    [
        '"unterminated <sip:a@h>',
        '"name" sip:a@h',
        "Bell, Alex <sip:a@h>",
        "<sip:a@h",
        "<sip:a@h> junk",
        "",
    ],
)
def test_bad_name_addrs(bad: str) -> None:
    with pytest.raises(ParseError):
        NameAddr.parse(bad)


def test_is_token() -> None:
    assert is_token("INVITE") and is_token("!interesting-Method0123456789_*+`.%indeed'~")
    assert not is_token("") and not is_token("a b") and not is_token("a:b")


def test_underscore_in_host_is_tolerated() -> None:
    assert SipUri.parse("sip:mrfp@media_1.local:5080").host == "media_1.local"


# -- copies share until one hands its parts out; the text form is remembered until a change --

BASE = "sip:alice@atlanta.example.com:5070;transport=udp;lr"


def test_copies_of_a_uri_never_see_each_others_changes() -> None:
    original = SipUri.parse(BASE)
    assert str(original) == BASE
    copy = original.copy()
    copy.params["maddr"] = "192.0.2.1"
    assert "maddr" not in original.params and str(original) == BASE
    assert str(copy) == BASE + ";maddr=192.0.2.1"
    # A dict handed out before the copy stays the original's alone.
    held = original.params
    later = original.copy()
    held["ttl"] = "1"
    assert "ttl" not in later.params and str(later) == BASE
    assert str(original) == BASE + ";ttl=1"  # a change through a held dict shows at once
    # Scalar fields: the text follows them.
    later.port = None
    later.host = "h"
    assert str(later) == "sip:alice@h;transport=udp;lr" and original.port == 5070


def test_uri_behaves_as_a_value() -> None:
    a, b = SipUri.parse(BASE), SipUri.parse(BASE)
    assert a == b and a.copy() == b and a != SipUri.parse("sip:alice@atlanta.example.com")
    assert a != BASE  # different types never compare equal
    assert repr(a) == (
        "SipUri(host='atlanta.example.com', user='alice', password=None, port=5070, "
        "scheme='sip', params={'transport': 'udp', 'lr': None}, headers=None)"
    )
    given = {"lr": None}
    built = SipUri("h", params=given)
    given["transport"] = "tcp"  # the constructor keeps the caller's dict, as a dataclass does
    assert str(built) == "sip:h;lr;transport=tcp"


def test_name_addr_text_follows_its_uri_held_anywhere() -> None:
    na = NameAddr.parse('"A" <sip:a@h>;tag=1')
    assert str(na) == '"A" <sip:a@h>;tag=1'
    uri = na.sip_uri
    assert str(na) == '"A" <sip:a@h>;tag=1'
    uri.params["lr"] = None  # changed after the text was written again
    assert str(na) == '"A" <sip:a@h;lr>;tag=1'
    twin = na.copy()
    uri.port = 5080
    assert str(twin) == '"A" <sip:a@h;lr>;tag=1' and str(na) == '"A" <sip:a@h:5080;lr>;tag=1'
    twin.display_name = None
    twin.bracketed = False
    assert str(twin) == "<sip:a@h;lr>;tag=1"  # brackets kept: the URI has parameters
    assert na.copy() == na and twin != na


def _edit(value: NameAddr, op: str, n: int) -> None:
    if op == "uri_param":
        value.sip_uri.params[f"p{n}"] = str(n)
    elif op == "param":
        value.params[f"h{n}"] = None
    elif op == "pop":
        value.params.pop("tag", None)
        value.sip_uri.params.pop("transport", None)
    elif op == "port":
        value.sip_uri.port = 5060 + n
    elif op == "display":
        value.display_name = f"D{n}"


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["copy", "uri_param", "param", "pop", "port", "display", "str"]),
            st.integers(0, 7),
        ),
        max_size=30,
    )
)
def test_copies_match_independent_parses(ops: list[tuple[str, int]]) -> None:
    # Model: every value is its own fresh parse of its current text. Whatever is copied,
    # changed or written, each value writes what the model says, and none leaks into another.
    first = NameAddr.parse('"Bob" <sip:bob@biloxi.example.com;transport=tcp>;tag=a1')
    values = [first]
    model = [str(first)]
    for op, n in ops:
        i = n % len(values)
        value = values[i]
        if op == "copy":
            values.append(value.copy())
            model.append(model[i])
            continue
        _edit(value, op, n)
        if op != "str":
            fresh = NameAddr.parse(model[i])
            _edit(fresh, op, n)
            model[i] = str(fresh)
        for v, text in zip(values, model, strict=True):
            assert str(v) == text
            assert v == NameAddr.parse(text)


def test_reading_a_parameter_hands_nothing_out() -> None:
    na = NameAddr.parse("<sip:a@h;maddr=192.0.2.9;lr>;tag=1;x")
    uri = na.sip_uri
    assert uri.get_param("maddr") == "192.0.2.9" and uri.get_param("lr") is None
    assert uri.has_param("lr") and not uri.has_param("ttl")
    assert na.get_param("tag") == "1" and na.has_param("x") and not na.has_param("y")
    twin = na.copy()
    twin.params["tag"] = "2"
    twin.sip_uri.params.pop("lr")
    assert na.get_param("tag") == "1" and uri.has_param("lr")
    assert str(na) == "<sip:a@h;maddr=192.0.2.9;lr>;tag=1;x"
    assert str(twin) == "<sip:a@h;maddr=192.0.2.9>;tag=2;x"


def test_uris_remembered_by_text_are_handed_out_as_independent_copies() -> None:
    for text in ("sip:conf-x@mrfc1.home1.net;transport=udp", "tel:+15550100"):
        first = parse_uri_copy(text)
        assert first == parse_uri(text) and str(first) == text
        if isinstance(first, SipUri):
            first.params["transport"] = "tcp"
            first.user = "other"
        else:
            first.text = "tel:+1"
        again = parse_uri_copy(text)
        assert again == parse_uri(text) and str(again) == text and again is not first
    # Two addresses of different dialogs naming one URI: editing one touches not the other.
    a = NameAddr.parse("<sip:alice@home1.net>;tag=1")
    b = NameAddr.parse("<sip:alice@home1.net>;tag=2")
    a.sip_uri.params["lr"] = None
    assert str(b) == "<sip:alice@home1.net>;tag=2" and str(a) == "<sip:alice@home1.net;lr>;tag=1"
    with pytest.raises(ParseError):
        parse_uri_copy("sip:host:99999")
