"""Tenants, employees, groups, roles and permissions, sessions and API keys."""
