#!/usr/bin/env bash
# Start the tritonserver binary bundled in the nvidia-pytriton wheel directly (no PyTriton), on
# loopback only, with the model repository next to this script.
# Needs PEERS_VENV (a Python 3.11 venv with nvidia-pytriton, onnxruntime, numpy<2) and LSTM_ONNX
# (the ONNX model file to serve). Usage: start_triton_raw.sh HTTP_PORT   (gRPC: +1, metrics: +2)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
SP=$("${PEERS_VENV:?set PEERS_VENV to the venv}/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
T=${PEERS_VENV}-raw
PORT=${1:-18200}
if [ ! -x "$T/bin/tritonserver" ]; then
  rm -rf "$T" && mkdir -p "$T"
  cp -r "$SP/pytriton/tritonserver/bin" "$SP/pytriton/tritonserver/backends" "$SP/pytriton/tritonserver/caches" "$T/"
  cp "$SP/pytriton/tritonserver/python_backend_stubs/3.11/triton_python_backend_stub" "$T/backends/python/"
fi
# the stub links libpython3.11: use the venv's own interpreter's library directory
LIBDIR=$("$PEERS_VENV/bin/python" -c "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))")
export LD_LIBRARY_PATH=$LIBDIR:$SP/nvidia_pytriton.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PYTHONPATH=$SP PEERS_SITE=$SP
export LSTM_ONNX="${LSTM_ONNX:?set LSTM_ONNX to the model file}"
exec "$T/bin/tritonserver" --model-repository "$HERE/triton_repo" --backend-directory "$T/backends" \
  --cache-directory "$T/caches" --http-address 127.0.0.1 --http-port "$PORT" \
  --grpc-address 127.0.0.1 --grpc-port $((PORT+1)) --metrics-address 127.0.0.1 --metrics-port $((PORT+2)) \
  --allow-gpu-metrics false --log-verbose 0
