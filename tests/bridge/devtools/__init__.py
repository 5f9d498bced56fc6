"""Tests of bridge/devtools/."""
