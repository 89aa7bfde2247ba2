"""The PyTorch sequence model: normalise -> stacked LSTM/GRU -> linear head -> de-normalise.

The recurrent layers are torch's fused nn.LSTM / nn.GRU so that ONNX export produces one
native LSTM/GRU node per layer; the cell equations themselves are written out plainly in
models/reference.py, which checks this module and its exports.

Shapes (batch-first):
    x       [batch, time, input_size]          raw units
    h, c    [num_layers, batch, hidden_size]   explicit recurrent state
    y       [batch, time, output_size]         raw units (regression) or logits (classification)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.config import ModelConfig, Normalization

State = tuple[Tensor, ...]  # (h,) for GRU, (h, c) for LSTM


class RecurrentModel(nn.Module):
    # Buffers (register_buffer), declared so type checkers know them as tensors.
    in_mean: torch.Tensor
    in_std: torch.Tensor
    out_mean: torch.Tensor
    out_std: torch.Tensor

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        rnn_cls = nn.LSTM if config.cell == "lstm" else nn.GRU
        self.rnn = rnn_cls(
            input_size=config.input_size,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
            batch_first=True,
        )
        self.head = nn.Linear(config.hidden_size, config.output_size)
        norm = config.normalization or Normalization.identity(config.input_size, config.output_size)
        out_mean = norm.output_mean or (0.0,) * config.output_size
        out_std = norm.output_std or (1.0,) * config.output_size
        # Buffers, not parameters: they travel with state_dict and into the ONNX graph.
        self.register_buffer("in_mean", torch.tensor(norm.input_mean, dtype=torch.float32))
        self.register_buffer("in_std", torch.tensor(norm.input_std, dtype=torch.float32))
        self.register_buffer("out_mean", torch.tensor(out_mean, dtype=torch.float32))
        self.register_buffer("out_std", torch.tensor(out_std, dtype=torch.float32))
        # transform "diff" (training/transforms.py): the head predicts the change from the latest
        # reading, which the graph adds back from these input columns (one per output column).
        anchors = config.extra.get("anchor_inputs") if config.extra.get("transform") == "diff" else None
        self.anchor_inputs: list[int] | None = [int(i) for i in anchors] if anchors else None

    def init_state(self, batch: int, device: torch.device | None = None) -> State:
        shape = self.config.state_shape(batch)
        zeros = [torch.zeros(shape, device=device) for _ in self.config.state_names]
        return tuple(zeros)

    def forward_normalized(self, z: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """The network proper, in normalised units; training computes its loss here."""
        if state is None:
            state = self.init_state(z.shape[0], z.device)
        if self.config.cell == "lstm":
            y, (h, c) = self.rnn(z, (state[0], state[1]))
            new_state: State = (h, c)
        else:
            y, h = self.rnn(z, state[0])
            new_state = (h,)
        return self.head(y), new_state

    def normalize_input(self, x: Tensor) -> Tensor:
        return (x - self.in_mean) / self.in_std

    def denormalize_output(self, y: Tensor) -> Tensor:
        if self.config.head == "classification":
            return y
        return y * self.out_std + self.out_mean

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Raw units in, raw units out: what the exported graph computes."""
        y, new_state = self.forward_normalized(self.normalize_input(x), state)
        y = self.denormalize_output(y)
        if self.anchor_inputs is not None:
            y = y + x[..., self.anchor_inputs]
        return y, new_state

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
