"""egocurate.catalog"""
