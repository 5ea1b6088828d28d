"""The built-in media processor: a small stand-in for FreeSWITCH's conference bridge.

Media-only modules (sans-IO unless noted): `rtp` and `rtcp` wire formats (RFC 3550, RFC 4733),
`g711` codecs, `jitter` play-out buffer, `mixer` N-1 mixing and talk detection, and `engine`,
the asyncio media engine that ties them to UDP sockets and one 20 ms clock.
"""
