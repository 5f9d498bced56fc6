"""Fakes of the chat platforms that speak their real wire protocol on 127.0.0.1."""
