"""Tests of adapters/slack/."""
