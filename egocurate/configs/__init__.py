"""Pipeline YAML files shipped with egocurate."""
