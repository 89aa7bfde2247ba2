"""Model definitions, ONNX export and the NumPy reference.

Only `models.config` is imported by the serving side; torch stays in `recurrent` and `export`.
"""
