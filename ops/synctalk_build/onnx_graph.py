"""A small ONNX graph builder with shape tracking and deterministic random weights.

Used by ``ops/synctalk_build/build_models.py`` to write architecture-faithful stand-ins without torch.
Weights are drawn from a seeded generator with fan-in scaling, so activations stay in range
through deep stacks and the stand-ins give non-degenerate outputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class GraphBuilder:
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.shapes: dict[str, tuple[int, ...]] = {}  # per-sample shapes (no batch dim)
        self.parameters = 0
        self.macs = 0  # multiply-accumulates per sample
        self._names: dict[str, int] = {}

    # -- naming -------------------------------------------------------------------------
    def _unique(self, name: str) -> str:
        n = self._names.get(name, 0)
        self._names[name] = n + 1
        return name if n == 0 else f"{name}_{n}"

    def const(self, name: str, value: np.ndarray, count: bool = True) -> str:
        name = self._unique(name)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        if count:
            self.parameters += int(np.asarray(value).size)
        return name

    def input(self, name: str, shape: Sequence[int]) -> str:
        self.shapes[name] = tuple(shape)
        return name

    # -- layers -------------------------------------------------------------------------
    def conv(
        self,
        x: str,
        cout: int,
        kernel=1,
        stride=1,
        groups: int = 1,
        padding=None,
        gain: float = math.sqrt(2.0),
        name: str = "conv",
        bias: bool = True,
    ) -> str:
        """A 2-D convolution whose initializers are ``<name>.weight`` (and ``<name>.bias``): the
        names of the matching PyTorch module's state dict."""
        cin, h, w = self.shapes[x]
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        sh, sw = (stride, stride) if isinstance(stride, int) else stride
        ph, pw = (
            (kh // 2, kw // 2) if padding is None else ((padding, padding) if isinstance(padding, int) else padding)
        )
        fan_in = (cin // groups) * kh * kw
        weight = self.rng.normal(0.0, gain / math.sqrt(fan_in), (cout, cin // groups, kh, kw)).astype(np.float32)
        inputs = [x, self.const(f"{name}.weight", weight)]
        if bias:
            inputs.append(self.const(f"{name}.bias", self.rng.normal(0.0, 0.01, (cout,)).astype(np.float32)))
        y = self._unique(f"{name}.out")
        self.nodes.append(
            helper.make_node(
                "Conv", inputs, [y], kernel_shape=[kh, kw], strides=[sh, sw], pads=[ph, pw, ph, pw], group=groups
            )
        )
        oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        self.shapes[y] = (cout, oh, ow)
        self.macs += cout * oh * ow * fan_in
        return y

    def batch_norm(self, x: str, name: str, eps: float = 1e-5) -> str:
        """Inference batch-norm with PyTorch's state-dict names: ``<name>.weight``, ``.bias``,
        ``.running_mean``, ``.running_var`` (identity statistics, a near-1 scale)."""
        c = self.shapes[x][0]
        scale = self.const(f"{name}.weight", (1.0 + self.rng.normal(0.0, 0.02, c)).astype(np.float32))
        shift = self.const(f"{name}.bias", self.rng.normal(0.0, 0.01, c).astype(np.float32))
        mean = self.const(f"{name}.running_mean", np.zeros(c, np.float32), count=False)
        var = self.const(f"{name}.running_var", np.ones(c, np.float32), count=False)
        y = self._unique(f"{name}.out")
        self.nodes.append(helper.make_node("BatchNormalization", [x, scale, shift, mean, var], [y], epsilon=eps))
        self.shapes[y] = self.shapes[x]
        return y

    def _unary(self, op: str, x: str, **attrs) -> str:
        y = self._unique(f"{x}.{op.lower()}")
        self.nodes.append(helper.make_node(op, [x], [y], **attrs))
        self.shapes[y] = self.shapes[x]
        return y

    def relu(self, x: str) -> str:
        return self._unary("Relu", x)

    def sigmoid(self, x: str) -> str:
        return self._unary("Sigmoid", x)

    def add(self, a: str, b: str) -> str:
        y = self._unique(f"{a}.add")
        self.nodes.append(helper.make_node("Add", [a, b], [y]))
        self.shapes[y] = self.shapes[a]
        return y

    def concat(self, xs: Sequence[str]) -> str:
        y = self._unique(f"{xs[0]}.cat")
        self.nodes.append(helper.make_node("Concat", list(xs), [y], axis=1))
        c = sum(self.shapes[x][0] for x in xs)
        self.shapes[y] = (c,) + self.shapes[xs[0]][1:]
        return y

    def resize(self, x: str, scale: float, align_corners: bool = True) -> str:
        """Bilinear upsampling by ``scale`` (torch ``nn.Upsample(mode='bilinear')``)."""
        c, h, w = self.shapes[x]
        scales = self.const(f"{x}.scales", np.array([1, 1, scale, scale], np.float32), count=False)
        y = self._unique(f"{x}.up")
        mode = "align_corners" if align_corners else "half_pixel"
        self.nodes.append(
            helper.make_node("Resize", [x, "", scales], [y], mode="linear", coordinate_transformation_mode=mode)
        )
        self.shapes[y] = (c, int(h * scale), int(w * scale))
        return y

    def flatten_linear_reshape(self, x: str, out_features: int, out_shape: Sequence[int], name: str) -> str:
        """Flatten -> fully connected (Gemm) -> Reshape to [batch, *out_shape]."""
        flat = self._unique(f"{name}.flat")
        self.nodes.append(helper.make_node("Flatten", [x], [flat], axis=1))
        in_features = int(np.prod(self.shapes[x]))
        weight = self.rng.normal(0.0, 1.0 / math.sqrt(in_features), (out_features, in_features)).astype(np.float32)
        wn = self.const(f"{name}.weight", weight)
        bn = self.const(f"{name}.bias", np.zeros(out_features, np.float32))
        fc = self._unique(f"{name}.fc")
        self.nodes.append(helper.make_node("Gemm", [flat, wn, bn], [fc], transB=1))
        self.macs += in_features * out_features
        shape = self.const(f"{name}.shape", np.array([-1, *out_shape], np.int64), count=False)
        y = self._unique(f"{name}.out")
        self.nodes.append(helper.make_node("Reshape", [fc, shape], [y]))
        self.shapes[y] = tuple(out_shape)
        return y

    def channels(self, x: str, start: int, end: int) -> str:
        """x[:, start:end] (a Slice on the channel axis)."""
        names = [
            self.const(f"{x}.slice.{k}", np.array([v], np.int64), count=False)
            for k, v in (("starts", start), ("ends", end), ("axes", 1))
        ]
        y = self._unique(f"{x}.slice")
        self.nodes.append(helper.make_node("Slice", [x, *names], [y]))
        self.shapes[y] = (end - start,) + self.shapes[x][1:]
        return y

    def blend(self, a: str, b: str, weight_a: float) -> str:
        """weight_a * a + (1 - weight_a) * b."""
        wa = self.const(f"{a}.blend_weight", np.array(weight_a, np.float32), count=False)
        wb = self.const(f"{b}.blend_weight", np.array(1.0 - weight_a, np.float32), count=False)
        ya, yb, y = self._unique(f"{a}.scaled"), self._unique(f"{b}.scaled"), self._unique(f"{a}.blend")
        self.nodes += [
            helper.make_node("Mul", [a, wa], [ya]),
            helper.make_node("Mul", [b, wb], [yb]),
            helper.make_node("Add", [ya, yb], [y]),
        ]
        self.shapes[y] = self.shapes[a]
        return y

    def reshape(self, x: str, shape: Sequence[int], name: str) -> str:
        """Reshape to [-1, *shape]: the batch axis absorbs what the per-sample shape leaves."""
        target = self.const(f"{name}.shape", np.array([-1, *shape], np.int64), count=False)
        y = self._unique(f"{name}.reshaped")
        self.nodes.append(helper.make_node("Reshape", [x, target], [y]))
        self.shapes[y] = tuple(shape)
        return y

    def mul(self, a: str, b: str) -> str:
        y = self._unique(f"{a}.mul")
        self.nodes.append(helper.make_node("Mul", [a, b], [y]))
        self.shapes[y] = self.shapes[a]
        return y

    def identity(self, x: str, name: str) -> str:
        self.nodes.append(helper.make_node("Identity", [x], [name]))
        self.shapes[name] = self.shapes[x]
        return name

    # -- model --------------------------------------------------------------------------
    def model(self, inputs: Sequence[str], outputs: Sequence[str], graph_name: str, doc: str) -> onnx.ModelProto:
        def value_info(name: str) -> onnx.ValueInfoProto:
            return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", *self.shapes[name]])

        graph = helper.make_graph(
            self.nodes,
            graph_name,
            [value_info(n) for n in inputs],
            [value_info(n) for n in outputs],
            initializer=self.initializers,
        )
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="synctalk-triton tools"
        )
        model.ir_version = 8
        model.doc_string = doc
        helper.set_model_props(model, {"parameters": str(self.parameters), "macs_per_sample": str(self.macs)})
        onnx.checker.check_model(model, full_check=True)
        return model
