"""Tests of bridge/textchat/."""
