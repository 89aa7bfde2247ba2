"""Triton Python-backend model: one step per request of the seqserve benchmark's ONNX model, with
h/c kept per correlation id by this model (Triton's sequence batcher routes each sequence to a
fixed slot and marks its start and end).

The requests of one `execute` call (up to max_batch_size sequences, one step each) run as ONE
ONNX Runtime call over their stacked inputs and states, as a well-written Triton model would; the
model file comes from LSTM_ONNX and its state inputs/outputs are read from the graph
(input [B, T, F], h0/c0 [L, B, H] -> output [B, T, O], hn/cn).
"""

import os
import site
import sys

# The stub gets neither PYTHONPATH nor the venv: put the peers venv FIRST (a global site-packages
# with numpy 2.x makes the stub's numpy bridge mis-size output tensors).
_SITE = os.environ["PEERS_SITE"]
site.addsitedir(_SITE)
sys.path.remove(_SITE)
sys.path.insert(0, _SITE)

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(os.environ["LSTM_ONNX"], options, providers=["CPUExecutionProvider"])
        inputs = self.sess.get_inputs()
        self.input_name = inputs[0].name
        self.state_names = [i.name for i in inputs[1:]]
        self.state_shapes = [(i.shape[0], i.shape[2]) for i in inputs[1:]]  # (layers, hidden), batch on axis 1
        self.state = {}

    def _zeros(self):
        return [np.zeros((layers, 1, hidden), np.float32) for layers, hidden in self.state_shapes]

    def execute(self, requests):
        xs, states, ids, ends = [], [], [], []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "X").as_numpy()  # [1, F]
            start = pb_utils.get_input_tensor_by_name(r, "START").as_numpy().reshape(-1)[0]
            end = pb_utils.get_input_tensor_by_name(r, "END").as_numpy().reshape(-1)[0]
            cid = int(pb_utils.get_input_tensor_by_name(r, "CORRID").as_numpy().reshape(-1)[0])
            state = None if start else self.state.get(cid)
            xs.append(x)
            states.append(state if state is not None else self._zeros())
            ids.append(cid)
            ends.append(bool(end))
        feed = {self.input_name: np.concatenate(xs)[:, None, :].astype(np.float32)}
        for k, name in enumerate(self.state_names):
            feed[name] = np.concatenate([s[k] for s in states], axis=1)
        y, *new_state = self.sess.run(None, feed)  # y [n, 1, O]; states [L, n, H]
        out = []
        for j, cid in enumerate(ids):
            if ends[j]:
                self.state.pop(cid, None)
            else:
                self.state[cid] = [s[:, j : j + 1].copy() for s in new_state]
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", y[j, 0][None].astype(np.float32))]))
        return out
