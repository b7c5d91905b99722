"""egocurate.jobs"""
