"""The transport-neutral core: the composition root (services.py), the one step engine
(engine.py), session lifecycle (lifecycle.py), per-session locks and hot reload.

Nothing here knows a wire format or a web framework: transports (service/api/, service/grpc/)
decode requests into the typed requests of this package and encode its typed results
(service/api/codecs.py), so every transport applies steps through the same code."""
