"""Tests of bridge/store/."""
