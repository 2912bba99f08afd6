"""The snapshot collector (issue 15): one POSIX-sh script, shipped as package data, that a host
without a modern Python runs to snapshot what the doctor reads; `--root SNAPSHOT` reads it back
(facts/snapshot.py)."""

from __future__ import annotations

from pathlib import Path

COLLECTOR = Path(__file__).with_name("pciback-doctor-collect")
