#!/usr/bin/env python3
"""Write seed inputs for the dhcp and dns fuzz targets into corpus/."""
import os, struct

here = os.path.dirname(os.path.abspath(__file__))

def dhcp(msg_type, opts=b"", ciaddr=b"\0\0\0\0", flags=0):
    mac = bytes([2, 0, 0, 0, 0, 1])
    hdr = struct.pack("!BBBBIHH", 1, 1, 6, 0, 0x1234, 0, flags)
    hdr += ciaddr + b"\0" * 12 + mac + b"\0" * 10 + b"\0" * 192
    return hdr + b"\x63\x82\x53\x63" + bytes([53, 1, msg_type]) + opts + b"\xff"

req_ip = bytes([50, 4, 10, 77, 0, 2])
sid = bytes([54, 4, 10, 77, 0, 1])
dhcp_seeds = {
    "discover": dhcp(1),
    "discover_bcast": dhcp(1, flags=0x8000),
    "request": dhcp(3, req_ip + sid),
    "request_other": dhcp(3, bytes([50, 4, 10, 77, 0, 9])),
    "renew": dhcp(3, ciaddr=bytes([10, 77, 0, 2])),
    "release": dhcp(7, ciaddr=bytes([10, 77, 0, 2])),
    "inform": dhcp(8, ciaddr=bytes([10, 77, 0, 2])),
    "decline": dhcp(4, req_ip),
}

def dns(name, qtype=1, qd=1):
    q = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".") if l) + b"\0"
    return struct.pack("!HHHHHH", 0x4242, 0x0100, qd, 0, 0, 0) + (q + struct.pack("!HH", qtype, 1)) * qd

dns_seeds = {
    "a_local": dns("web.mvm"),
    "aaaa_local": dns("web.mvm", 28),
    "nx_local": dns("nope.mvm"),
    "deep_local": dns("a.web.mvm"),
    "forward": dns("example.com"),
    "two_questions": dns("web.mvm", qd=2),
    "compressed": struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01",
}

for target, seeds in (("dhcp", dhcp_seeds), ("dns", dns_seeds)):
    d = os.path.join(here, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
print("seeds written")
