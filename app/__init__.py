"""IMS conference focus: a SIP MRFC-AS driving FreeSWITCH or a built-in media processor."""

__version__ = "0.1.0"
