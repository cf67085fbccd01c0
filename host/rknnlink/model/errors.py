"""Exceptions of model building; both are ValueErrors like the toolkit's, with actionable messages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence


class BuildError(ValueError):
    """The model or the build settings are wrong in a way the user can fix (the message says how)."""


@dataclass
class UnsupportedNode:
    """One node the builder cannot lower, and why."""

    op_type: str
    node_name: str
    reason: str


class UnsupportedOperatorError(ValueError):
    """An ONNX operator (or one of its attributes) cannot run on the simulated NPU.

    ``op_type`` and ``node_name`` identify the (first) node; the message says what to do (replace the
    operator, cut the graph with ``load_onnx(outputs=[...])`` and run the rest on the CPU, or change the
    attribute). A model with several problems raises one error built by :meth:`from_nodes`: ``problems``
    lists every unsupported node, ``cut_points`` the tensors to pass as ``load_onnx(outputs=...)`` so that
    the remaining graph builds.
    """

    def __init__(self, op_type: str, node_name: str, reason: str) -> None:
        self.op_type = op_type
        self.node_name = node_name
        self.reason = reason
        self.problems: list = [UnsupportedNode(op_type, node_name, reason)]
        self.cut_points: list = []
        super().__init__(f"unsupported operator {op_type} (node {node_name!r}): {reason}")

    @classmethod
    def from_nodes(cls, problems: Sequence[UnsupportedNode],
                   cut_points: Optional[Sequence[str]] = None) -> UnsupportedOperatorError:
        """One error for all ``problems`` (graph order): one line per operator type with its count and
        first node, then what to do, naming the cut points when the graph before them builds."""
        first = problems[0]
        if len(problems) == 1 and not cut_points:
            return cls(first.op_type, first.node_name, first.reason)
        err = cls(first.op_type, first.node_name, first.reason)
        by_type: dict = {}
        for p in problems:
            by_type.setdefault(p.op_type, []).append(p)
        lines = [f"unsupported operators: the model cannot be built: {len(problems)} node(s) of "
                 f"{len(by_type)} operator type(s) are not supported on the simulated NPU:"]
        for op_type, nodes in by_type.items():
            lines.append(f"  - {op_type} x{len(nodes)} (first node {nodes[0].node_name!r}): "
                         f"{_short(nodes[0].reason)}")
        if cut_points:
            lines.append("What to do: replace these operators with supported ones, or cut the graph before them "
                         f"with load_onnx(..., outputs={list(cut_points)}) (every operator up to there is "
                         "supported) and run the rest on the CPU.")
        else:
            lines.append("What to do: replace these operators with supported ones; no cut point exists before "
                         "them (they read the graph inputs directly), so run the model on the CPU.")
        err.problems = list(problems)
        err.cut_points = list(cut_points or [])
        err.args = ("\n".join(lines),)
        return err


def _short(reason: str) -> str:
    """A node's reason without the generic advice, which the combined message gives once."""
    for tail in ("; replace it with supported operators", "; cut the graph before it"):
        if tail in reason:
            reason = reason.split(tail)[0]
    return reason
