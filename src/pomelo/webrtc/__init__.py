"""Browser phones: WebRTC call legs bridged to Pomelo's SIP B2BUA through aiortc."""

from pomelo.webrtc.gateway import PhoneSession, WebRtcGateway

__all__ = ["PhoneSession", "WebRtcGateway"]
