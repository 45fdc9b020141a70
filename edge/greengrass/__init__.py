"""Greengrass v2 packaging of the device agent: the recipe template and the command that fills it in."""
