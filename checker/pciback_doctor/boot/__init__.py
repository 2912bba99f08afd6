"""The boot model (SPEC §3): from facts to a per-device prediction, phase by phase."""
