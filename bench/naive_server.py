"""The naive baseline: how a first attempt at serving a recurrent ONNX model would be written.

* FastAPI, one plain `def` route (FastAPI runs it in the threadpool), a pydantic request body;
* the client carries the recurrent state: the request holds `inputs` [time][features] plus
  `h` (and `c` for LSTM) as nested lists [layers][1][hidden], the response returns `outputs`
  and the new `h`/`c`, which the client sends back with the next step;
* one ONNX Runtime InferenceSession on the same model file, default JSON encoding, uvicorn.

Nothing here is tuned on purpose: it is the yardstick the service is compared against.
It also answers `POST /v1/noop` (read the JSON body, return a fixed answer) so that the benchmark
has a floor to compare with even where the service's own no-op route is not available.

    python -m bench.naive_server --model bench/1/model.onnx --port 8100
"""

from __future__ import annotations

import argparse

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI, Request
from pydantic import BaseModel


class StepRequest(BaseModel):
    inputs: list[list[float]]  # [time][features]
    h: list[list[list[float]]] | None = None  # [layers][1][hidden]
    c: list[list[list[float]]] | None = None


class StepResponse(BaseModel):
    # field order matters to the wrk script, which slices h and c out of the JSON text
    outputs: list[list[float]]
    h: list[list[list[float]]]
    c: list[list[list[float]]] | None = None


def create_app(model_path: str) -> FastAPI:
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    is_lstm = "c0" in names
    h_shape = session.get_inputs()[names.index("h0")].shape
    layers, hidden = int(h_shape[0]), int(h_shape[2])
    app = FastAPI(title="naive baseline")

    @app.get("/v2/health/ready")
    def ready() -> dict:
        return {"ready": True}

    @app.post("/step", response_model=StepResponse)
    def step(req: StepRequest) -> StepResponse:
        x = np.asarray([req.inputs], dtype=np.float32)
        h = np.asarray(req.h, dtype=np.float32) if req.h is not None else np.zeros((layers, 1, hidden), np.float32)
        feeds = {"input": x, "h0": h}
        if is_lstm:
            c = np.asarray(req.c, dtype=np.float32) if req.c is not None else np.zeros((layers, 1, hidden), np.float32)
            feeds["c0"] = c
        result = session.run(None, feeds)
        return StepResponse(
            outputs=result[0][0].tolist(),
            h=result[1].tolist(),
            c=result[2].tolist() if is_lstm else None,
        )

    @app.post("/v1/noop")
    async def noop(request: Request) -> dict:
        await request.json()
        return {"ok": True}

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="path to model.onnx")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args(argv)
    uvicorn.run(create_app(args.model), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
