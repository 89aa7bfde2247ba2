"""Streaming sessions: the store interface and its implementations (memory, Redis, Redis
cluster). The step engine that applies steps to them lives in service/core/."""
