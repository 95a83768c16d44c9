"""The parsers behind goss's resource types (the e2e test runs them on a real host): HTTP responses,
mountinfo, interface addresses, DNS answers."""

from __future__ import annotations

import struct

from tasks.verify.resources import dns, http, interface, mount


class FakeStream:
    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)

    def recv(self) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""


def test_http_responses_chunked_sized_and_headers_canonical() -> None:
    chunked = FakeStream(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nTRANSFER-encoding: chunked\r\n\r\n4\r\nok\nx",
        b"\r\n3\r\nyz\n\r\n0\r\n\r\n",
    )
    response = http._read_response(chunked, head_only=False)  # type: ignore[arg-type]
    assert (response.status, response.body) == (200, b"ok\nxyz\n")
    assert response.headers[0] == ("Content-Type", "text/plain")
    sized = FakeStream(b"HTTP/1.0 404 Not Found\r\nContent-Length: 5\r\n\r\nno", b"pe\nEXTRA")
    response = http._read_response(sized, head_only=False)  # type: ignore[arg-type]
    assert (response.status, response.body) == (404, b"nope\n")
    assert http.canonical("x-forwarded-for") == "X-Forwarded-For"


def test_mountinfo_first_entry_with_per_mount_and_superblock_options() -> None:
    text = (
        "22 1 0:21 / / rw,relatime shared:1 - overlay overlay rw,lowerdir=/l,upperdir=/u\n"
        "23 22 0:22 / /mnt/with\\040space ro,nosuid - tmpfs tmpfs rw,size=1024k\n"
    )
    entries = mount.parse_mountinfo(text)
    assert entries[0] == {
        "mountpoint": "/",
        "opts": ["rw", "relatime"],
        "filesystem": "overlay",
        "source": "overlay",
        "vfs-opts": ["rw", "lowerdir=/l", "upperdir=/u"],
    }
    assert entries[1]["mountpoint"] == "/mnt/with space"


def test_interface_addresses_from_ip_or_the_fallbacks() -> None:
    assert interface.parse_addresses("ip 127.0.0.1/8\nip ::1/128\n") == ["127.0.0.1/8", "::1/128"]
    fallback = "v6 00000000000000000000000000000001 80\nv4 127.0.0.1 255.0.0.0\n"
    assert interface.parse_addresses(fallback) == ["127.0.0.1/8", "::1/128"]


def test_dns_answers_are_written_as_goss_writes_them() -> None:
    query = dns.query_message("example.org", 15)
    name = query[12:-4]
    answer = (
        query[:2]
        + struct.pack("!HHHHH", 0x8180, 1, 2, 0, 0)
        + name
        + struct.pack("!HH", 15, 1)
        + b"\xc0\x0c"
        + struct.pack("!HHIH", 15, 1, 300, 7)
        + struct.pack("!H", 10)
        + b"\x02mx\xc0\x0c"
        + b"\xc0\x0c"
        + struct.pack("!HHIH", 1, 1, 300, 4)
        + bytes([192, 0, 2, 1])
    )
    assert dns.parse_answers(answer, 15) == (0, ["10 mx.example.org."])
    assert dns.parse_answers(answer, 1) == (0, ["192.0.2.1"])
    assert dns.split("MX:example.org") == ("MX", "example.org")
    assert dns.split("localhost") == ("", "localhost")
