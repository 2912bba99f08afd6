"""Readers: one module per source of facts. Pure: text or bytes in, frozen facts out."""
