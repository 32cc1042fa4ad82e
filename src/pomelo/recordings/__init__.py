"""Call recordings: the catalogue of WAV files the recorder wrote, who may hear them, and how
long they are kept. The audio itself lives on disk; the database holds only metadata."""
