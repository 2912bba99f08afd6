"""Renderers: one module per output format. They format a `Report`; they decide nothing."""
