"""egocurate: turn raw egocentric video into a training corpus for robot world models."""

__version__ = "0.1.0"
