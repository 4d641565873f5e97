#!/usr/bin/env python3
"""A WHIP publisher for Vigil's tests, on aiortc: a WebRTC stack nobody here wrote
(ICE, DTLS-SRTP, RTP, VP8 from PyPI). The WHIP part is RFC 9725's few HTTP calls.

Publishes FILE's video (looped, re-encoded by aiortc as a browser would) to ENDPOINT
with a bearer key, stays on for --secs, then ends with DELETE (or just leaves, with
--no-delete, like a crashed browser tab). Prints one JSON line per step on stdout.
"""
import argparse
import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer


def log(**fields):
    print(json.dumps(fields), flush=True)


def http(method, url, token, body=None, content_type=None):
    req = urllib.request.Request(url, data=body, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if content_type:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


async def publish(args):
    loop = asyncio.get_running_loop()
    pc = RTCPeerConnection()
    connected = asyncio.Event()

    @pc.on("connectionstatechange")
    def on_state():
        log(event="state", state=pc.connectionState)
        if pc.connectionState == "connected":
            connected.set()

    player = MediaPlayer(args.video, loop=True)
    pc.addTransceiver(player.video, direction="sendonly")
    # aiortc gathers every candidate here: the offer is complete (no trickle).
    await pc.setLocalDescription(await pc.createOffer())
    offer = pc.localDescription.sdp.encode()
    status, headers, body = await loop.run_in_executor(
        None, http, "POST", args.endpoint, args.token, offer, "application/sdp"
    )
    location = headers.get("Location") or headers.get("location")
    candidates = body.count("a=candidate:") if status == 201 else 0
    log(event="answer", status=status, location=location, candidates=candidates,
        reason=None if status == 201 else body.strip())
    if status != 201:
        await pc.close()
        return
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
    try:
        await asyncio.wait_for(connected.wait(), timeout=20)
    except asyncio.TimeoutError:
        log(event="error", reason="not connected after 20 s")
        await pc.close()
        return
    await asyncio.sleep(args.secs)
    if not args.no_delete:
        resource = urllib.parse.urljoin(args.endpoint, location)
        # A DELETE with another stream's key must not end this session.
        if args.wrong_key:
            status, _, _ = await loop.run_in_executor(None, http, "DELETE", resource, args.wrong_key)
            log(event="deleted_with_wrong_key", status=status)
        status, _, _ = await loop.run_in_executor(None, http, "DELETE", resource, args.token)
        log(event="deleted", status=status)
        status, _, _ = await loop.run_in_executor(None, http, "PATCH", resource, args.token, b"", "application/trickle-ice-sdpfrag")
        log(event="patched", status=status)
    await pc.close()
    log(event="closed")


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--endpoint", required=True)
    p.add_argument("--token", default="")
    p.add_argument("--video", required=True)
    p.add_argument("--secs", type=float, default=5)
    p.add_argument("--no-delete", action="store_true")
    p.add_argument("--wrong-key", default="")
    asyncio.run(publish(p.parse_args()))


if __name__ == "__main__":
    main()
