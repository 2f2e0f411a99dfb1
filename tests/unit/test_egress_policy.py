"""The egress allowlist refuses hostile host names, non-public addresses and mismatched TLS server names."""

from __future__ import annotations

import random

import pytest

from outpost.errors import InvalidInput
from outpost.sandbox.egress_policy import (
    EgressPolicy,
    check_server_name,
    compose_policy,
    server_name_from_client_hello,
)
from tests.fakes.tls import client_hello_message

POLICY = EgressPolicy(["allowed.org", "*.wild.org", "example.org:80", "bücher.de", "registry.npmjs.org:443"])


@pytest.mark.parametrize(
    ("host", "port", "normalized"),
    [
        ("allowed.org", 443, "allowed.org"),
        ("ALLOWED.ORG", 443, "allowed.org"),
        ("allowed.org.", 443, "allowed.org"),
        ("allowed.org\u3002", 443, "allowed.org"),  # an ideographic full stop is a dot too
        ("a.wild.org", 443, "a.wild.org"),
        ("deep.er.wild.org", 443, "deep.er.wild.org"),
        ("evil.com.wild.org", 443, "evil.com.wild.org"),  # a subdomain, whatever its labels say
        ("example.org", 80, "example.org"),
        ("registry.npmjs.org", 443, "registry.npmjs.org"),
        ("xn--bcher-kva.de", 443, "xn--bcher-kva.de"),
        ("BÜCHER.de", 443, "xn--bcher-kva.de"),
        ("\uff41llowed.org", 443, "allowed.org"),  # full-width `a` folds to ASCII
    ],
)
def test_listed_hosts_are_allowed_under_their_normalized_name(host: str, port: int, normalized: str) -> None:
    decision = POLICY.check_host(host, port)
    assert decision.allowed, decision.reason
    assert decision.host == normalized


# Wildcards that would match, were the literal read as a name: the refusal must come from the IP check.
PERMISSIVE = EgressPolicy(["*.org", "*.com", "*.de", "*.arpa"])
IP_LITERALS = [
    "127.0.0.1", "127.0.0.1.", "127.1", "0x7f.1", "0x7F.0.0.1", "0177.0.0.1", "0177.1", "2130706433",
    "0x7f000001", "017700000001", "169.254.169.254", "10.0.0.5", "8.8.8.8", "1.2.3.0x10", "allowed.org.123",
    "0x", "[::1]", "::1", "[::ffff:127.0.0.1]", "::ffff:127.0.0.1", "[::ffff:7f00:1]", "fe80::1%eth0",
    "[fe80::1%25eth0]", "[::]", "\uff11\uff12\uff17\u3002\uff10\u3002\uff10\u3002\uff11",
]  # fmt: skip


@pytest.mark.parametrize("host", IP_LITERALS)
def test_ip_literals_are_refused_in_every_notation(host: str) -> None:
    decision = PERMISSIVE.check_host(host, 443)
    assert not decision.allowed
    assert "IP literal" in decision.reason


@pytest.mark.parametrize(
    "host",
    [
        "evil.com", "allowed.org.evil.com", "evil.com.allowed.org", "evilallowed.org", "allowed.org.evil",
        "wild.org", "xwild.org", "wild.org.evil.com", "registry.npmjs.org.evil.com", "npmjs.org",
        "a.allowed.org", "bucher.de", "*.wild.org",
    ],
)  # fmt: skip
def test_unlisted_hosts_and_lookalikes_are_refused(host: str) -> None:
    decision = POLICY.check_host(host, 443)
    assert not decision.allowed, decision.reason


@pytest.mark.parametrize(
    ("host", "port"), [("allowed.org", 80), ("example.org", 443), ("a.wild.org", 8443), ("allowed.org", 22)]
)
def test_listed_hosts_on_unlisted_ports_are_refused(host: str, port: int) -> None:
    decision = POLICY.check_host(host, port)
    assert not decision.allowed
    assert f"port {port} is not allowed" in decision.reason


@pytest.mark.parametrize("port", [0, -1, 65536, 10**9])
def test_impossible_ports_are_refused(port: int) -> None:
    assert not POLICY.check_host("allowed.org", port).allowed


@pytest.mark.parametrize(
    "host",
    [
        "", ".", "..", "allowed.org..", "allowed.org.\u3002", "\u3002", "a..allowed.org", "-a.wild.org",
        "a-.wild.org", "a_b.wild.org",
        "a b.wild.org", "a\x00.wild.org", "allowed.org/", "allowed.org@evil.com", "%61llowed.org",
        "a\r\nb.wild.org", f"{'a' * 64}.wild.org", f"{'a.' * 125}wild.org", "x" * 5000, "\u2028.wild.org",
    ],
)  # fmt: skip
def test_malformed_empty_and_overlong_names_are_refused(host: str) -> None:
    decision = POLICY.check_host(host, 443)
    assert not decision.allowed
    assert len(decision.reason) < 200  # a hostile name is quoted and capped, not echoed whole


def test_the_longest_legal_name_is_accepted() -> None:
    name = ".".join(["a" * 63] * 3 + ["b" * 52]) + ".wild.org"
    assert len(name) == 253
    assert POLICY.check_host(name, 443).allowed
    assert not POLICY.check_host("c" + name, 443).allowed


def test_a_refusal_says_why() -> None:
    assert POLICY.check_host("evil.com", 443).reason == "evil.com is not in the egress allowlist"
    assert POLICY.check_host("allowed.org", 443).reason == "allowed by allowed.org:443"


@pytest.mark.parametrize(
    "entry",
    [
        "", "*", "*.", "*.*.org", "1.2.3.4", "[::1]:443", "allowed.org:0", "allowed.org:65536",
        "allowed.org:http", "allowed.org:", "allowed.org:0655350", "allowed.org:\u00b2",
        "allowed.org:\uff14\uff14\uff13", "a..b", "evil.com/path", "0x7f.1:80",
    ],
)  # fmt: skip
def test_malformed_allowlist_entries_are_rejected(entry: str) -> None:
    with pytest.raises(InvalidInput):
        EgressPolicy([entry])


def test_entries_for_one_host_merge_their_ports() -> None:
    policy = EgressPolicy(["example.org", "EXAMPLE.org.:80"])
    assert policy.check_host("example.org", 443).allowed
    assert policy.check_host("example.org", 80).allowed
    assert not policy.check_host("example.org", 8080).allowed


def test_composed_policies_allow_the_union_of_global_tenant_and_dispatch_lists() -> None:
    policy = compose_policy(["pypi.org"], ["*.tenant.example"], ["one-off.example:8443"])
    assert policy.check_host("pypi.org", 443).allowed
    assert policy.check_host("git.tenant.example", 443).allowed
    assert policy.check_host("one-off.example", 8443).allowed
    assert not policy.check_host("tenant.example", 443).allowed
    assert not compose_policy().check_host("pypi.org", 443).allowed


REFUSED_ADDRESSES = [
    "169.254.169.254", "169.254.0.1", "10.0.0.5", "172.16.0.1", "172.31.255.255", "192.168.1.1",
    "127.0.0.1", "127.255.255.254", "0.0.0.0", "100.64.0.1", "100.127.255.255", "224.0.0.1",
    "239.255.255.250", "255.255.255.255", "240.0.0.1", "192.0.2.1", "198.18.0.1", "203.0.113.9",
    "::1", "::", "fc00::1", "fd12:3456::1", "fe80::1", "fe80::1%eth0", "fec0::1", "ff02::1", "ff0e::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::ffff:8.8.8.8",
    "64:ff9b::a9fe:a9fe", "64:ff9b::7f00:1", "64:ff9b:1::1", "2002:7f00:1::1", "2001:db8::1", "2001::1",
    "not-an-address", "", "127.1", "0x7f000001",
]  # fmt: skip


@pytest.mark.parametrize("address", REFUSED_ADDRESSES)
def test_names_resolving_to_non_public_addresses_are_refused(address: str) -> None:
    decision = POLICY.check_addresses(["93.184.216.34", address], "allowed.org")
    assert not decision.allowed
    assert decision.reason.startswith(f"resolves to non-public address {address}")
    assert decision.host == "allowed.org"


@pytest.mark.parametrize(
    "address",
    ["93.184.216.34", "8.8.8.8", "1.1.1.1", "100.63.255.255", "100.128.0.1", "172.32.0.1",
     "2606:2800:220:1::1", "64:ff9b::808:808"],
)  # fmt: skip
def test_public_addresses_are_allowed(address: str) -> None:
    assert POLICY.check_addresses([address]).allowed


def test_a_name_that_resolves_to_nothing_is_refused() -> None:
    assert not POLICY.check_addresses([]).allowed


def test_the_server_name_of_a_real_client_hello_is_read() -> None:
    assert server_name_from_client_hello(client_hello_message("allowed.org")) == "allowed.org"
    assert server_name_from_client_hello(client_hello_message(None)) is None


def test_a_client_hello_must_name_the_connect_host() -> None:
    assert check_server_name(client_hello_message("allowed.org"), "allowed.org").allowed
    assert check_server_name(client_hello_message("Allowed.ORG."), "allowed.org").allowed
    assert "does not match" in check_server_name(client_hello_message("evil.org"), "allowed.org").reason
    assert "without a server name" in check_server_name(client_hello_message(None), "allowed.org").reason
    assert "malformed" in check_server_name(b"\x16\x03\x01", "allowed.org").reason


def _vector(data: bytes, width: int = 2) -> bytes:
    return len(data).to_bytes(width, "big") + data


def _hello(extensions: bytes | None, trailer: bytes = b"", message_type: int = 1) -> bytes:
    body = b"\x03\x03" + bytes(32) + _vector(b"", 1) + _vector(b"\x13\x01") + _vector(b"\x00", 1)
    if extensions is not None:
        body += _vector(extensions)
    body += trailer
    return bytes([message_type]) + _vector(body, 3)


def _sni(*names: bytes, name_type: int = 0) -> bytes:
    entries = b"".join(bytes([name_type]) + _vector(name) for name in names)
    return b"\x00\x00" + _vector(_vector(entries))


def test_hand_built_hellos_parse_with_and_without_extensions() -> None:
    assert server_name_from_client_hello(_hello(_sni(b"a.org"))) == "a.org"
    assert server_name_from_client_hello(_hello(b"\x00\x17\x00\x00" + _sni(b"a.org"))) == "a.org"
    assert server_name_from_client_hello(_hello(None)) is None
    assert server_name_from_client_hello(_hello(b"")) is None


@pytest.mark.parametrize(
    "handshake",
    [
        _hello(_sni(b"a.org") + _sni(b"b.org")),  # the extension twice
        _hello(_sni(b"a.org", b"b.org")),  # two host names
        _hello(_sni(b"a.org", name_type=1)),
        _hello(_sni()),
        _hello(_sni("é.org".encode())),
        _hello(_sni(b"a.org"), trailer=b"\x00"),
        _hello(_sni(b"a.org"), message_type=2),  # a ServerHello
        _hello(_sni(b"a.org")) + b"\x00",
        _hello(_sni(b"a.org"))[:-1],
        b"\x01\xff\xff\xff" + bytes(64),  # a length far past the data
        b"\x01\x00\x00\x26" + b"\x03\x03" + bytes(32) + b"\xff",  # session id longer than what is left
        b"",
    ],
)
def test_malformed_client_hellos_raise_value_error(handshake: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the parser's one documented error
        server_name_from_client_hello(handshake)


def test_every_truncation_of_a_real_hello_is_refused_cleanly() -> None:
    handshake = client_hello_message("allowed.org")
    for length in range(len(handshake)):
        with pytest.raises(ValueError):  # noqa: PT011
            server_name_from_client_hello(handshake[:length])


def test_corrupted_hellos_never_raise_anything_but_value_error() -> None:
    rng = random.Random(1234)
    original = client_hello_message("allowed.org")
    for _ in range(3000):
        corrupted = bytearray(original)
        for _ in range(rng.randint(1, 4)):
            corrupted[rng.randrange(len(corrupted))] = rng.randrange(256)
        try:
            name = server_name_from_client_hello(bytes(corrupted))
        except ValueError:
            continue
        assert name is None or isinstance(name, str)
