"""Tests of human handover: the core and the desks."""
