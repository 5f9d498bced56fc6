"""Tests of adapters/webhook/."""
