"""Importable job functions for the configuration tests."""
