"""Example jobs used by config.example.toml."""
