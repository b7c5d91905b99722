"""egocurate.ingest"""
