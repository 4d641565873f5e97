#!/usr/bin/env python3
"""Sign a Kafka record the way Vigil's parts do, for a platform's own producer (the
lifecycle topic, say). Needs the `cryptography` package. SECURITY.md section 4 says who
may write which topic; `vigil keys gen --role lifecycle --id ID --out DIR` makes the key.

    from vigil_sign import load_key, signature_headers
    key_id, key = load_key("lifecycle.key")
    headers = signature_headers(key_id, key, "vigil.streams.lifecycle", b"live/alice", value)
    producer.produce(topic, key=b"live/alice", value=value, headers=headers)  # confluent-kafka

As a command (the value on stdin; prints the three headers as JSON):

    scripts/vigil_sign.py --key lifecycle.key --topic vigil.streams.lifecycle --record-key live/alice < event.json
"""

import argparse
import json
import struct
import sys
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

DOMAIN = b"vigil.record.v1\x00"


def load_key(path):
    """(key id, private key) from a `vigil keys gen` key file."""
    fields = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                name, _, value = line.partition("=")
                fields[name.strip()] = value.strip()
    return fields["id"], Ed25519PrivateKey.from_private_bytes(bytes.fromhex(fields["secret"]))


def signed_bytes(topic, key, value, ts_ms):
    """What the signature covers: each part length-prefixed, key and value marked present
    or absent (None: a tombstone's value), then the signing time."""
    out = bytearray(DOMAIN)
    out += struct.pack(">Q", len(topic.encode())) + topic.encode()
    for part in (key, value):
        if part is None:
            out += b"\x00"
        else:
            out += b"\x01" + struct.pack(">Q", len(part)) + part
    out += struct.pack(">Q", ts_ms)
    return bytes(out)


def signature_headers(key_id, private_key, topic, key, value, ts_ms=None):
    """The three headers to send with the record, as (name, bytes) pairs."""
    ts_ms = int(time.time() * 1000) if ts_ms is None else ts_ms
    sig = private_key.sign(signed_bytes(topic, key, value, ts_ms))
    return [
        ("vigil-key-id", key_id.encode()),
        ("vigil-signed-at", str(ts_ms).encode()),
        ("vigil-signature", sig.hex().encode()),
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--key", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--record-key")
    ap.add_argument("--tombstone", action="store_true", help="sign a record with no value")
    args = ap.parse_args()
    key_id, private_key = load_key(args.key)
    value = None if args.tombstone else sys.stdin.buffer.read()
    record_key = args.record_key.encode() if args.record_key is not None else None
    headers = signature_headers(key_id, private_key, args.topic, record_key, value)
    print(json.dumps({name: v.decode() for name, v in headers}))


if __name__ == "__main__":
    main()
