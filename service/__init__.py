"""The serving side: FastAPI on uvicorn around ONNX Runtime sessions. No torch here."""
