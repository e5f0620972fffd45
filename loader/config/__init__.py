"""Configuration: event specs (what to load) and settings (where the services are)."""

from __future__ import annotations

from loader.config.settings import Settings, load_settings
from loader.config.spec import EventSpec, load_spec, load_specs

__all__ = ["EventSpec", "Settings", "load_settings", "load_spec", "load_specs"]
