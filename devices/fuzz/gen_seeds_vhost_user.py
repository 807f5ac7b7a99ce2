#!/usr/bin/env python3
"""Writes seed inputs for the vhost_user target into corpus/vhost_user/:
backends that negotiate with and without protocol features (MQ,
REPLY_ACK), then answer or refuse the activation and the reset, and some
that lie (wrong sizes, too few queues, 32-bit only, hanging up midway).
See targets/vhost_user.rs for the script format."""
import struct

from seedlib import write

VERSION_1 = 1 << 32
PROTOCOL = 1 << 30
MQ, REPLY_ACK = 1 << 0, 1 << 3


def ans(v=0):
    return b"\x00" + struct.pack("<Q", v)


def raw(b):
    return b"\x01" + bytes([len(b)]) + b


NOTHING, HANGUP = b"\x02", b"\x03"
OK = ans(0) * 40  # every later request answered (acks of 0, bases of 0)

seeds = {
    # SET_OWNER, GET_FEATURES, then activation and reset.
    "plain": ans() + ans(VERSION_1 | 0xffff) + OK,
    "protocol": ans() + ans(VERSION_1 | PROTOCOL) + ans(MQ | REPLY_ACK) + ans() + ans(2) + OK,
    "protocol_no_ack": ans() + ans(VERSION_1 | PROTOCOL) + ans(MQ) + ans() + ans(2) + OK,
    "one_queue": ans() + ans(VERSION_1 | PROTOCOL) + ans(MQ) + ans() + ans(1),
    "many_queues": ans() + ans(VERSION_1 | PROTOCOL) + ans(MQ) + ans() + ans(2**64 - 1) + OK,
    "not_v1": ans() + ans(0xffffffff),
    "acks_fail": ans() + ans(VERSION_1 | PROTOCOL) + ans(REPLY_ACK) + ans() + ans(1) * 40,
    "short_reply": ans() + raw(struct.pack("<III", 1, 5, 4) + b"\x01\x00\x00\x00"),
    "huge_size": ans() + raw(struct.pack("<IIIQ", 1, 5, 0xffffffff, VERSION_1)),
    "wrong_code": ans() + raw(struct.pack("<IIIQ", 2, 5, 8, VERSION_1)),
    "not_a_reply": ans() + raw(struct.pack("<IIIQ", 1, 1, 8, VERSION_1)),
    "extra_bytes": b"\x04" + struct.pack("<Q", 0) + raw(b"\xff" * 20)[1:] + ans(VERSION_1) + OK,
    "unsolicited": raw(struct.pack("<IIIQ", 1, 5, 8, VERSION_1)) + ans(VERSION_1) + OK,
    "silent_get": ans() + NOTHING,
    "hangup_in_activation": ans() + ans(VERSION_1) + ans() * 5 + HANGUP,
    "hangup_at_reset": ans() + ans(VERSION_1) + ans() * 12 + HANGUP,
}
write("vhost_user", seeds)
