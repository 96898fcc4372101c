"""Subprocess entry points and helpers of the messaging integration tests."""
