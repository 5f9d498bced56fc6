"""Tests of bridge/."""
