"""Tests of bridge/engine/."""
