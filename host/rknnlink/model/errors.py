"""Exceptions of model building; both are ValueErrors like the toolkit's, with actionable messages."""

from __future__ import annotations


class BuildError(ValueError):
    """The model or the build settings are wrong in a way the user can fix (the message says how)."""


class UnsupportedOperatorError(ValueError):
    """An ONNX operator (or one of its attributes) cannot run on the simulated NPU.

    ``op_type`` and ``node_name`` identify the node; the message says what to do (replace the operator,
    cut the graph with ``load_onnx(outputs=[...])`` and run the rest on the CPU, or change the attribute).
    """

    def __init__(self, op_type: str, node_name: str, reason: str) -> None:
        self.op_type = op_type
        self.node_name = node_name
        self.reason = reason
        super().__init__(f"unsupported operator {op_type} (node {node_name!r}): {reason}")
