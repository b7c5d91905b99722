"""egocurate.annotate"""
