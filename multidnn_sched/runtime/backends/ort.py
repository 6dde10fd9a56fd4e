"""An ONNX block variant (ORT int8 / fp32) run by ONNX Runtime on the CPU behind the block contract."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from multidnn_sched.exceptions import CheckpointError, ConfigError, VariantError
from multidnn_sched.runtime.backends.carry import CARRY_METADATA_KEY, flatten_carry, unflatten_carry
from multidnn_sched.runtime.block import Carry


class OrtBlock(nn.Module):
    """An ONNX file run by ONNX Runtime (CPU) behind the block contract: torch carry in, torch carry out.

    ORT has its own intra-op thread pool, which competes with torch's threads; the executor sets the count
    (e.g. 1 when blocks run in parallel, 2 when one runs alone) with :meth:`set_intra_op_threads`. One session
    per thread count is created lazily and kept, so switching is a dict lookup after the first time.

    Args:
        onnx_path: the ``.onnx`` file (from :func:`export_onnx` / :func:`quantize_block_ort_int8`).
        intra_op_threads: ORT intra-op threads; ``None`` (default): follow the calling thread's torch intra-op
            thread count at every call — the BlockExecutor sets that per block (1 when sharing the CPU, all cores
            when exclusive), so an ORT variant obeys the same thread budget as the torch block it replaces.

    Raises:
        CheckpointError: the file cannot be loaded or has no carry layout.
    """

    def __init__(self, onnx_path: Path, intra_op_threads: int | None = None) -> None:
        super().__init__()
        self.onnx_path = Path(onnx_path)
        self._sessions: dict[int, Any] = {}
        self.intra_op_threads = intra_op_threads
        session = self._session(1 if intra_op_threads is None else intra_op_threads)
        meta = session.get_modelmeta().custom_metadata_map
        if CARRY_METADATA_KEY not in meta:
            raise CheckpointError(f"ONNX file {self.onnx_path} lacks the {CARRY_METADATA_KEY!r} metadata entry")
        layout = json.loads(meta[CARRY_METADATA_KEY])
        self._in_layout, self._out_layout = layout["in"], layout["out"]
        self._in_names = [i.name for i in session.get_inputs()]

    def _session(self, threads: int) -> Any:
        import onnxruntime as ort

        if threads < 1:
            raise ConfigError(f"expected intra_op_threads >= 1, got {threads}")
        if threads not in self._sessions:
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            # No busy-waiting between kernels: on a shared CPU spinning threads steal cores from other blocks.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            try:
                self._sessions[threads] = ort.InferenceSession(str(self.onnx_path), sess_options=options,
                                                               providers=["CPUExecutionProvider"])
            except Exception as exc:  # noqa: BLE001 - ORT raises its own (non-exported) exception types
                raise CheckpointError(f"ONNX file {self.onnx_path} cannot be loaded by ONNX Runtime: {exc}") from exc
        return self._sessions[threads]

    def set_intra_op_threads(self, threads: int) -> None:
        """Use ``threads`` ORT intra-op threads from the next call on (creates that session once)."""
        self._session(threads)
        self.intra_op_threads = threads

    def forward(self, carry: Carry) -> Carry:
        tensors = flatten_carry(carry)
        if len(tensors) != len(self._in_names):
            raise VariantError(f"{self.onnx_path.name}: expected {len(self._in_names)} input tensors, got "
                               f"{len(tensors)}")
        feeds = {name: t.detach().cpu().float().contiguous().numpy()
                 for name, t in zip(self._in_names, tensors, strict=True)}
        threads = self.intra_op_threads if self.intra_op_threads is not None else torch.get_num_threads()
        outputs = self._session(threads).run(None, feeds)
        return unflatten_carry(self._out_layout, [torch.from_numpy(o) for o in outputs])

    def extra_repr(self) -> str:
        return f"{self.onnx_path.name}, intra_op_threads={self.intra_op_threads}"
