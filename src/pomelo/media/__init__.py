"""Media (RTP, codecs, DTMF) library. Imports nothing from the rest of Pomelo."""
