"""The live stream: register, take a snapshot at a sequence number, then apply events."""
