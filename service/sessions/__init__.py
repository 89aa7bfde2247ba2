"""Streaming sessions: the store interface and its implementations, and the manager that
applies steps to them exactly once and in order."""
