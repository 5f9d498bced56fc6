"""Tests of bridge/admin/."""
