"""egocurate.jobs.runners"""
