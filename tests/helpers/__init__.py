"""Test code shared between test modules (builders, fixtures' logic, static checks)."""
