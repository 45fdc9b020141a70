"""Fixtures the code tests share (pytest finds them here by name)."""

from edge_fixtures import car_workspace

__all__ = ["car_workspace"]
