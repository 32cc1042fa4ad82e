"""Cross-cutting building blocks: ids, clock, errors, domain events and the event bus."""
