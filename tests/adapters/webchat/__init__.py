"""Tests of adapters/webchat/."""
