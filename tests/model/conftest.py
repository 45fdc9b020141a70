"""Fixtures the model tests share (pytest finds them here by name)."""

from mxnet_fixtures import shared_environments, trained_classifier

__all__ = ["shared_environments", "trained_classifier"]
