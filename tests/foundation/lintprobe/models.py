"""A test-only app: migrations the migration check refuses or accepts (test_migration_lint.py)."""
