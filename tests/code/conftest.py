"""Fixtures the code tests share (pytest finds them here by name)."""

from definition_fixtures import pilot_definition_text
from edge_fixtures import car_workspace

__all__ = ["car_workspace", "pilot_definition_text"]
