"""The virtual PBX: SIP accounts, trunks, numbers, registrations, and (later) the B2BUA."""
