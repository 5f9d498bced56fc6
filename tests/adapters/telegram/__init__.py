"""Tests of adapters/telegram/."""
