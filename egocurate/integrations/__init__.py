"""Adapters that let other projects' trainers consume egocurate output as it is (DreamDojo first).

A module here may import ``shards``, ``export``, ``catalog``, ``media`` and ``storage``; it never
imports the trainer it serves at module level, so it stays importable without that trainer.
"""
