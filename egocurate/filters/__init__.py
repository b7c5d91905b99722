"""egocurate.filters"""
